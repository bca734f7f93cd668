"""Settings precedence (flag > env > default) and supervision (first failure wins)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from apiary.server.main import settings_from
from apiary.server.supervisor import Supervisor


def test_defaults_env_and_flags(tmp_path: Path) -> None:
    s = settings_from([], env={"APIARY_DATA_DIR": str(tmp_path)})
    assert s.data_dir == tmp_path and s.http.host == "127.0.0.1" and s.http.port == 8080
    assert s.store_url == f"sqlite:///{tmp_path / 'apiary.db'}"
    assert s.http.max_body_bytes == 1 << 20 and s.logging.json
    env = {
        "APIARY_PORT": "9000",
        "APIARY_STORE": "memory://",
        "APIARY_LOG_LEVEL": "DEBUG",
        "APIARY_SECRET_KEY": "k",
    }
    s = settings_from(["--data-dir", str(tmp_path)], env=env)
    assert s.http.port == 9000 and s.store_url == "memory://" and s.logging.level == "debug"
    assert "c2VjcmV0LXZhbHVl" not in repr(s)  # the key is never printed
    s = settings_from(
        [
            "--data-dir",
            str(tmp_path),
            "--port",
            "0",
            "--max-body-bytes",
            "10",
            "--changelog-retention",
            "7",
            "--log-format",
            "console",
        ],
        env=env,
    )
    assert s.http.port == 0 and s.http.max_body_bytes == 10
    assert s.store.changelog_retention == 7 and not s.logging.json
    with pytest.raises(SystemExit):
        settings_from([], env={"APIARY_PORT": "eighty"})


def test_the_server_tier_map_comes_from_apiary_tiers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"APIARY_DATA_DIR": str(tmp_path)}
    tiers = '{"simple": {"model": "m-small", "maxTokens": 64}}'
    s = settings_from([], env={**env, "APIARY_TIERS": tiers})
    assert s.tiers == {"simple": {"model": "m-small", "maxTokens": 64}}
    for bad, words in (('{"simple": 3}', "simple: Input should be"), ("{x", "is not JSON")):
        with pytest.raises(SystemExit):
            settings_from([], env={**env, "APIARY_TIERS": bad})
        err = capsys.readouterr().err
        assert "APIARY_TIERS is" in err and words in err, err


async def test_first_failure_cancels_the_rest_and_is_reraised() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cancelled.set()

    async def boom() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("controller broke")

    sup = Supervisor()
    sup.add("forever", forever)
    sup.add("boom", boom)
    with pytest.raises(RuntimeError, match="controller broke"):
        await sup.run(asyncio.Event())
    assert cancelled.is_set()


async def test_stop_event_ends_everything_cleanly() -> None:
    stop = asyncio.Event()
    sup = Supervisor()
    sup.add("forever", lambda: asyncio.sleep(3600))
    asyncio.get_running_loop().call_later(0.01, stop.set)
    await sup.run(stop)
    assert sup.names == ["forever"]


@pytest.mark.parametrize(
    ("argv", "env", "apart"),
    [
        ([], {}, False),
        (["--node-process"], {}, True),
        ([], {"APIARY_NODE_PROCESS": "1"}, True),
        ([], {"APIARY_NODE_PROCESS": "0"}, False),
    ],
)
def test_node_process_flag_and_env(
    tmp_path: Path, argv: list[str], env: dict[str, str], apart: bool
) -> None:
    s = settings_from(["--data-dir", str(tmp_path), *argv], env=env)
    assert s.runtime.node_process is apart and s.runtime.local_node


def test_node_process_without_a_local_node_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        settings_from(["--data-dir", str(tmp_path), "--node-process", "--no-local-node"], env={})
    assert exit_.value.code == 2
    assert "--node-process" in capsys.readouterr().err
