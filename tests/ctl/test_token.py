"""``apiaryctl token create|list|revoke`` against a real apiaryd."""

from __future__ import annotations

import json

import httpx
from ctlkit import Ctl

from apiary.ctl.commands.token import body_for


def test_create_list_revoke(ctl: Ctl, cell: str) -> None:
    r = ctl("token", "create", f"dev-{cell}", "-n", cell, "--role", "developer", "--ttl", "24h")
    assert r.exit_code == 0, r
    token = r.stdout.strip()
    assert token.startswith(f"apiary_dev-{cell}_") and "\n" not in token  # alone on stdout
    assert f'developer in cell "{cell}"' in r.stderr and "shown once" in r.stderr
    who = httpx.get(
        f"{ctl.server.url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert who == {"user": f"token:dev-{cell}", "role": "developer", "cell": cell}
    # the new token works through the CLI too, within its cell only
    assert ctl("get", "hives", "-n", cell, APIARY_TOKEN=token).exit_code == 0
    denied = ctl("delete", "cell", cell, APIARY_TOKEN=token)
    assert denied.exit_code != 0 and "may not delete Cell" in denied.stderr

    listed = ctl("token", "list")
    assert listed.exit_code == 0, listed
    assert listed.stdout.split("\n")[0].split() == [
        "NAME", "ROLE", "CELL", "NODE", "EXPIRES", "STATUS", "AGE"]  # fmt: skip
    assert f"dev-{cell}" in listed.stdout and token not in listed.stdout
    as_json = ctl("token", "list", "-o", "json")
    assert token not in as_json.stdout and "sha256" not in as_json.stdout
    (item,) = [
        o for o in json.loads(as_json.stdout)["items"] if o["metadata"]["name"] == f"dev-{cell}"
    ]
    assert item["spec"]["role"] == "developer" and item["spec"]["expiresAt"]

    r = ctl("token", "revoke", f"dev-{cell}")
    assert r.exit_code == 0 and r.stdout.strip() == f"token/dev-{cell} revoked"
    after = ctl("get", "hives", "-n", cell, APIARY_TOKEN=token)
    assert after.exit_code != 0 and "revoked" in after.stderr


def test_a_node_token(ctl: Ctl, cell: str) -> None:
    r = ctl("token", "create", f"node-{cell}", "--node", "worker-1")
    assert r.exit_code == 0, r
    assert 'node "worker-1"' in r.stderr
    denied = ctl("apply", "-f", "-", "-n", cell, APIARY_TOKEN=r.stdout.strip(), input=(
        "apiVersion: apiary.io/v1\nkind: Hive\nmetadata: {name: h}\n"
        "spec: {pattern: pipeline, stages: [{name: s, agentRef: a}]}\n"))  # fmt: skip
    assert denied.exit_code != 0 and 'node "worker-1") may not' in denied.stderr  # apply: get


def test_usage_errors() -> None:
    import pytest
    import typer

    for args in [("x", None, None), ("x", "node", None), ("x", "viewer", "n1")]:
        with pytest.raises(typer.BadParameter):
            body_for(args[0], args[1], args[2], "default", None)
    assert body_for("x", "viewer", None, "c", "1h")["spec"] == {
        "role": "viewer", "cell": "c", "ttlSeconds": 3600.0}  # fmt: skip
    assert body_for("x", "cluster-admin", None, "c", None)["spec"] == {"role": "cluster-admin"}
