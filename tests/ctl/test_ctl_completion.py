"""``apiaryctl completion bash|zsh|fish``: the scripts, and the words they get back from
apiaryctl (commands, kinds, and object names listed from a real apiaryd)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ctlkit import Ctl

APIARYCTL = str(Path(sys.executable).parent / "apiaryctl")


def words(ctl: Ctl, line: str, **env: str) -> list[str]:
    """What bash completion offers for the last word of ``line`` (a real apiaryctl process)."""
    cwords = line.split(" ")
    run_env = {
        **os.environ,
        "APIARY_SERVER": ctl.server.url,
        "APIARY_TOKEN": ctl.server.token,
        "APIARY_CONFIG": str(ctl.home / "config.yaml"),
        "COMP_WORDS": line,
        "COMP_CWORD": str(len(cwords) - 1),
        "_APIARYCTL_COMPLETE": "complete_bash",
        **env,
    }
    r = subprocess.run([APIARYCTL], env=run_env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_scripts(ctl: Ctl, shell: str) -> None:
    r = ctl("completion", shell)
    assert r.exit_code == 0, r
    assert "_APIARYCTL_COMPLETE=complete_" + shell in r.stdout
    assert "apiaryctl" in r.stdout


def test_an_unknown_shell_is_a_usage_error(ctl: Ctl) -> None:
    r = ctl("completion", "tcsh")
    assert r.exit_code == 2 and "one of bash, zsh, fish" in r.stderr, r


def test_commands_kinds_and_names(ctl: Ctl, cell: str) -> None:
    assert "get" in words(ctl, "apiaryctl ge")
    assert {"api-resources", "completion", "describe", "explain"} <= set(words(ctl, "apiaryctl "))
    assert words(ctl, "apiaryctl get hi") == ["hive", "hives"]
    with ctl.server.client(cell=cell) as c:
        for name in ("alpha", "beta"):
            c.apply({"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                     "metadata": {"name": name, "namespace": cell},
                     "spec": {"runtime": {"command": ["cat"]}}})  # fmt: skip
    assert words(ctl, f"apiaryctl get agentspecs -n {cell} ") == ["alpha", "beta"]
    assert words(ctl, f"apiaryctl -n {cell} describe as a") == ["alpha"]
    assert words(ctl, f"apiaryctl -n {cell} describe agentspec/b") == ["agentspec/beta"]
    # an unreachable server completes no names, quickly and without a traceback
    assert words(ctl, "apiaryctl get hives ", APIARY_SERVER="http://127.0.0.1:9") == []


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_sources_the_script(ctl: Ctl) -> None:
    script = ctl("completion", "bash").stdout
    r = subprocess.run(
        ["bash", "-c", "source /dev/stdin; complete -p apiaryctl"],
        input=script,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert r.returncode == 0 and "_apiaryctl_completion" in r.stdout, r.stderr
