"""apiaryctl token create|list|revoke against a real apiaryd: the token is printed once, alone on
stdout, and works; list never shows a secret or hash; revoke makes it 401; usage errors exit 2."""

from __future__ import annotations

import httpx
from ctlkit import Ctl


def whoami(ctl: Ctl, token: str) -> httpx.Response:
    return httpx.get(
        f"{ctl.server.url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )


def test_create_prints_the_token_once_and_it_works(ctl: Ctl, cell: str) -> None:
    r = ctl("token", "create", f"dev-{cell}", "--cell", cell, "--role", "developer", "--ttl", "24h")
    assert r.exit_code == 0, r
    token = r.stdout.strip()
    assert token.startswith(f"apiary_dev-{cell}_") and "\n" not in token
    assert f'developer in cell "{cell}"' in r.stderr and "shown once" in r.stderr
    who = whoami(ctl, token)
    assert who.status_code == 200, who.text
    assert who.json() == {"user": f"token:dev-{cell}", "role": "developer", "cell": cell}


def test_a_node_token_and_a_cluster_admin_token(ctl: Ctl, cell: str) -> None:
    node = ctl("token", "create", f"node-{cell}", "--node", f"n-{cell}")
    assert node.exit_code == 0, node
    assert whoami(ctl, node.stdout.strip()).json()["node"] == f"n-{cell}"
    admin = ctl("token", "create", f"root-{cell}", "--role", "cluster-admin")
    assert admin.exit_code == 0, admin
    assert whoami(ctl, admin.stdout.strip()).json()["role"] == "cluster-admin"


def test_list_shows_no_secret(ctl: Ctl, cell: str) -> None:
    created = ctl("token", "create", f"v-{cell}", "--cell", cell, "--role", "viewer")
    token = created.stdout.strip()
    secret = token.split("_", 2)[2]  # apiary_<name>_<secret>: the secret may hold "_" too
    listed = ctl("token", "list")
    assert listed.exit_code == 0, listed
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith(f"v-{cell} "))
    assert "viewer" in line and cell in line and "never" in line and "Active" in line
    for out in ("json", "yaml"):
        dumped = ctl("-o", out, "token", "list")
        assert dumped.exit_code == 0, dumped
        assert f"v-{cell}" in dumped.stdout
        assert secret not in dumped.stdout and "sha256" not in dumped.stdout


def test_revoke_makes_the_token_401(ctl: Ctl, cell: str) -> None:
    token = ctl("token", "create", f"r-{cell}", "--cell", cell, "--role", "viewer").stdout.strip()
    assert whoami(ctl, token).status_code == 200
    r = ctl("token", "revoke", f"r-{cell}")
    assert r.exit_code == 0, r
    assert f"token/r-{cell} revoked" in r.stdout
    gone = whoami(ctl, token)
    assert gone.status_code == 401
    assert "revoked" in gone.json()["message"]
    assert f"r-{cell}" not in ctl("token", "list").stdout
    again = ctl("token", "revoke", f"r-{cell}")
    assert again.exit_code != 0


def test_usage_errors(ctl: Ctl, cell: str) -> None:
    assert ctl("token", "create", f"x-{cell}").exit_code == 2  # no --role, no --node
    assert ctl("token", "create", f"x-{cell}", "--role", "node").exit_code == 2  # no --node
    r = ctl("token", "create", f"x-{cell}", "--role", "viewer", "--ttl", "soon")
    assert r.exit_code == 2 and "--ttl" in r.stderr


def test_a_non_admin_may_not_manage_tokens(ctl: Ctl, cell: str) -> None:
    token = ctl("token", "create", f"a-{cell}", "--cell", cell, "--role", "admin").stdout.strip()
    r = ctl("token", "list", APIARY_TOKEN=token)
    assert r.exit_code != 0
    assert "may not list Token" in r.stderr
