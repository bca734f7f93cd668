"""Named contexts in the config file: set-context, use-context, get-contexts, --context and
$APIARY_CONTEXT, against a real apiaryd; an unknown context is an error, never a fallback."""

from __future__ import annotations

from pathlib import Path

import yaml
from ctlkit import Ctl

NO_ENV = {"APIARY_SERVER": None, "APIARY_TOKEN": None}  # the config file decides


def test_contexts(ctl: Ctl, cell: str) -> None:
    def run(*args: str, **env: str | None) -> tuple[int, str, str]:
        r = ctl(*args, **{**NO_ENV, **env})  # type: ignore[arg-type]
        return r.exit_code, r.stdout, r.stderr

    srv = ctl.server
    code, _, err = run("config", "set-context", "lab", "--server", srv.url, "--cell", cell,
                       "--token", srv.token)  # fmt: skip
    assert code == 0 and "context lab created" in err, err
    assert run("config", "set-context", "dead", "--server", "http://127.0.0.1:9")[0] == 0
    raw = yaml.safe_load(Path(ctl.home / "config.yaml").read_text())
    assert raw["contexts"]["lab"] == {"server": srv.url, "cell": cell, "token": srv.token}
    assert (Path(ctl.home / "config.yaml").stat().st_mode & 0o777) == 0o600

    code, _, err = run("config", "current-context")
    assert code == 1 and "no current context" in err
    assert run("config", "use-context", "lab")[0] == 0
    assert run("config", "current-context")[1] == "lab\n"
    code, out, _ = run("config", "get-contexts")
    assert out.splitlines()[1].split() == ["*", "lab", srv.url, cell], out

    with srv.client(cell=cell) as c:
        c.apply({"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                 "metadata": {"name": "ctx", "namespace": cell},
                 "spec": {"runtime": {"command": ["cat"]}}})  # fmt: skip
    assert run("get", "agentspecs", "-o", "name") == (0, "agentspec/ctx\n", "")  # lab's cell
    code, _, err = run("get", "agentspecs", "--context", "dead")
    assert code == 3 and "http://127.0.0.1:9" in err, err
    assert run("get", "agentspecs", APIARY_CONTEXT="dead")[0] == 3
    code, _, err = run("get", "agentspecs", "--context", "nope")
    assert code == 2 and "no context 'nope'" in err and "lab, dead" in err, err

    # config set edits the current context; view redacts every token
    assert run("config", "set", "cell", "elsewhere")[0] == 0
    code, out, _ = run("config", "view")
    assert "elsewhere" in out and srv.token not in out and "<redacted>" in out
    assert run("config", "delete-context", "lab")[0] == 0
    assert run("config", "current-context")[0] == 1
    assert run("config", "use-context", "lab")[0] == 2  # gone


def test_config_set_takes_a_value_that_starts_with_a_dash(ctl: Ctl) -> None:
    """A token from secrets.token_urlsafe starts with '-' one time in 64: it is a value, not an
    unknown option."""
    r = ctl("config", "set", "token", "-RpGFr1TuIG3GOA_K60k")
    assert r.exit_code == 0, r
    assert "-RpGFr1TuIG3GOA_K60k" in (ctl.home / "config.yaml").read_text()
