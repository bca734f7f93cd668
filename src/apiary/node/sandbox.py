"""What a drone does not get of the node: its OS identity, its environment, its files.

Agents are untrusted code (DESIGN §9). When the node runs as root, every drone runs as an
unprivileged user — the AgentSpec's ``securityContext.runAsUser``/``runAsGroup``, else the node's
default (``nobody``/``nogroup``, 65534) — with no supplementary groups. ``runAsUser: 0`` is the
explicit opt-out. A process of another uid cannot read apiaryd's ``/proc/<pid>/environ``, signal
it, or open the data dir (0700); what stays readable is what the machine leaves world-readable.

When the node is not root it cannot change uid: drones run as the node's user, and the node says
so once at start-up (:func:`warn_if_unprivileged`). The other layers hold either way: no inherited
descriptor, a scrubbed environment, ``RLIMIT_AS`` for the memory limit.

Each drone gets a private directory (``HOME`` and ``TMPDIR``, 0700, owned by its uid) under the
node's work root, which lies outside the data dir (a drone may not traverse that). The drone's
*working directory* stays what the AgentSpec says (``runtime.workingDir``) or the node's, so
relative commands such as ``python examples/agents/upper.py`` keep meaning what they did.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NOBODY = 65534
"""uid and gid of ``nobody``/``nogroup`` on Linux distributions: the default drone identity."""

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Identity:
    """Who a drone runs as; ``None`` means "as the node" (it cannot or need not change)."""

    uid: int | None = None
    gid: int | None = None

    @property
    def changes(self) -> bool:
        return self.uid is not None

    def describe(self) -> str:
        if self.uid is None:
            return f"{os.geteuid()}:{os.getegid()} (the node's own user)"
        return f"{self.uid}:{self.gid}"


def node_is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def drone_identity(
    security_context: dict[str, Any] | None, default_uid: int, default_gid: int
) -> Identity:
    """The uid/gid a drone of this AgentSpec runs as on this node."""
    if not node_is_root():
        return Identity()
    sc = security_context or {}
    uid = sc.get("runAsUser")
    gid = sc.get("runAsGroup")
    if uid is None:
        uid = default_uid
        gid = default_gid if gid is None else gid
    elif gid is None:
        gid = default_gid if uid != 0 else 0
    return Identity(int(uid), int(gid))


def _may(st: os.stat_result, uid: int, gid: int, bits: int) -> bool:
    """Whether ``uid``/``gid`` (no supplementary groups) has ``bits`` (a combination of
    r=4, w=2, x=1) on a file with this stat, by the owner/group/other rules (uid 0 may read and
    search anything, and execute what anyone may)."""
    if uid == 0:
        return bits != 1 or bool(st.st_mode & 0o111) or stat.S_ISDIR(st.st_mode)
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid == gid:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & bits == bits


def inaccessible(path: str, identity: Identity, *, script: bool = False) -> str | None:
    """The first component of ``path`` that ``identity`` cannot search, read or execute, or
    None when it can run it (a ``script`` handed to an interpreter need only be readable).
    Checked for the path as given and for its resolved target, so a symlink (a venv's
    ``python``) into a closed directory is caught."""
    if identity.uid is None or identity.uid == 0:
        return None
    gid = identity.gid if identity.gid is not None else identity.uid
    for candidate in dict.fromkeys([os.path.abspath(path), os.path.realpath(path)]):
        p = Path(candidate)
        for parent in reversed(p.parents):
            try:
                if not _may(parent.stat(), identity.uid, gid, 1):
                    return str(parent)
            except OSError:
                return str(parent)
    try:
        st = os.stat(path)
    except OSError:
        return path
    return None if _may(st, identity.uid, gid, 4 if script else 1) else path


def private_dir_path(root: str, cell: str, drone: str) -> str:
    """Where the drone's own directory is (:func:`private_dir` creates it)."""
    return os.path.join(root, f"{cell}__{drone}")


def _owned_dir(path: str, mode: int, *, owners: tuple[int, ...] = ()) -> None:
    """``path`` is a real directory of ours (not a symlink, not someone else's) with ``mode``.
    The default root lies in the shared temp dir under a predictable name: one that another user
    created first would let them swap a drone's directory for a link to a file of their choice,
    which we would then chown to the drone's uid."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (os.geteuid(), *owners):
        raise PermissionError(
            f"{path} is not a directory owned by uid {os.geteuid()}: refusing to put drones' "
            "private directories in it (remove it, or set the node's work root elsewhere)"
        )
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def private_dir(path: str, identity: Identity) -> str:
    """Create the drone's own directory (0700, owned by its uid) at ``path``; its parent, the
    node's work root, is made traversable (0711) but not listable, so drones cannot see each
    other's names. Nothing here follows a symlink another user could plant: the root is checked
    to be ours, and within it only we can create entries."""
    root = os.path.dirname(path)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    _owned_dir(root, 0o711)
    _owned_dir(path, 0o700, owners=() if identity.uid is None else (identity.uid,))
    if identity.uid is not None:
        os.chown(
            path,
            identity.uid,
            identity.gid if identity.gid is not None else identity.uid,
            follow_symlinks=False,
        )
    return path


def scrubbed_env(
    spec_env: dict[str, str], home: str | None, identity_vars: dict[str, str]
) -> dict[str, str]:
    """Only what the AgentSpec names, on a fixed base; nothing of the node's environment.

    The base is ``PATH`` (a safe default unless the AgentSpec sets one), ``HOME`` and ``TMPDIR``
    (the private directory), ``LANG`` and unbuffered Python; the drone's identity variables
    (keeper URL and token, ``APIARY_DRONE``…) come last and cannot be overridden."""
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    if home is not None:
        env["HOME"] = home
        env["TMPDIR"] = home
    else:
        env["HOME"] = "/"
    env.update(spec_env)
    env.update(identity_vars)
    return env


def become(identity: Identity) -> None:
    """In the forked child, before exec: drop every group, then the gid, then the uid (in that
    order: after setuid there is no right left to change groups)."""
    if identity.uid is None:
        return
    gid = identity.gid if identity.gid is not None else identity.uid
    os.setgroups([])
    os.setgid(gid)
    os.setuid(identity.uid)


_warned = False


def warn_if_unprivileged() -> None:
    """One line at start-up when drones will run as the node's own user."""
    global _warned
    if _warned or node_is_root():
        return
    _warned = True
    log.warning(
        "not running as root: drones run as this user and can read what it can read; "
        "they still get no inherited descriptors, a scrubbed environment, a private HOME and "
        "their memory/cpu limits (cgroup v2 when writable, else RLIMIT_AS; docs/security.md)",
        extra={"uid": os.geteuid() if hasattr(os, "geteuid") else -1},
    )
