"""Checks of this host an engine backend's diagnosis uses: a socket's permissions, and the
subordinate IDs of a rootless engine's user. Engine-specific words come in as arguments."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat

from oci_executor.findings import Finding

ROOT_EQUIVALENT = {"docker": "the docker group is root-equivalent: anyone in it can become root on this host"}
SUBID_FIX = "sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user} && {reload}"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def owner_of(path: str) -> str:
    """``mode 0660 root:docker`` for messages."""
    info = os.stat(path)
    return f"mode {stat.S_IMODE(info.st_mode):04o} {user_name(info.st_uid)}:{group_name(info.st_gid)}"


def can_use(path: str, uid: int, want: int) -> bool:
    """Whether user ``uid`` has the permission bits ``want`` (``os.R_OK | os.W_OK``...) on ``path``."""
    if uid == 0:
        return True
    info = os.stat(path)
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid == uid:
        bits = mode >> 6
    else:
        try:
            entry = pwd.getpwuid(uid)
            groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem}
        except KeyError:  # a UID without an account: only the bits for others apply
            groups = set()
        bits = mode >> 3 if info.st_gid in groups else mode
    return bits & want == want


def socket_path(address: str) -> str | None:
    """The file of a ``unix://`` address; None for a network address."""
    if address.startswith(("unix://", "http+unix://")):
        return address.split("://", 1)[1]
    return None


def check_socket(backend: str, address: str, start_fix: str, own_engine: str = "") -> Finding:
    """Whether this user can connect to the engine's socket file, and why not (``own_engine``:
    how a user runs an engine of their own instead, added to a permission fix)."""
    path = socket_path(address)
    if path is None:
        return Finding(backend, "socket", "skip", f"{address} is a network address: no socket file to check")
    try:
        mode = os.stat(path).st_mode
    except PermissionError:  # a folder on the way is closed to this user
        return _denied(backend, path, own_engine)
    except OSError:
        return Finding(backend, "socket", "fail", f"no socket at {path}: no engine listens there", start_fix)
    if not stat.S_ISSOCK(mode):
        return Finding(
            backend,
            "socket",
            "fail",
            f"{path} is not a socket",
            f"point the address at the engine's socket, not {path}",
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
    except PermissionError:
        return _denied(backend, path, own_engine)
    except OSError as exc:
        return Finding(
            backend,
            "socket",
            "fail",
            f"{path} exists but nothing accepts connections ({exc.strerror or exc}): the engine that made it stopped",
            start_fix,
        )
    finally:
        sock.close()
    return Finding(backend, "socket", "ok", f"{path} ({owner_of(path)}) accepts connections")


def _denied(backend: str, path: str, own_engine: str) -> Finding:
    uid = os.geteuid()
    me = user_name(uid)
    blocked = _blocking_folder(path, uid)
    if blocked:
        return Finding(
            backend,
            "socket",
            "fail",
            f"permission denied on {path}: user {me} may not enter {blocked} ({owner_of(blocked)})",
            f"sudo chmod o+x {blocked}, or point the address at a socket you may use",
        )
    try:
        info = os.stat(path)
    except OSError as exc:  # refused by something other than mode bits (an ACL, a security module)
        return Finding(
            backend,
            "socket",
            "fail",
            f"permission denied on {path} for user {me} ({exc.strerror})",
            "ask the administrator for access, or point the address at a socket you may use",
        )
    group = group_name(info.st_gid)
    message = (
        f"permission denied on {path} ({owner_of(path)}): user {me} is neither its owner nor in group {group}"
    )
    if info.st_gid == 0:  # no group to join: an administrator must give the socket one
        fix = (
            f"give the socket a group of its own and join it (`sudo groupadd -f {backend} && sudo chgrp "
            f"{backend} {path} && sudo usermod -aG {backend} {me}`, then log in again), or point the "
            "address at a socket you may use"
        )
    else:
        fix = f"sudo usermod -aG {group} {me}, then log in again (or `newgrp {group}`)"
        if group in ROOT_EQUIVALENT:
            fix += f" (warning: {ROOT_EQUIVALENT[group]})"
    if own_engine:
        fix += f"; or {own_engine}"
    return Finding(backend, "socket", "fail", message, fix)


def _blocking_folder(path: str, uid: int) -> str | None:
    folder = os.path.dirname(path)
    parts: list[str] = []
    while folder not in ("/", ""):
        parts.append(folder)
        folder = os.path.dirname(folder)
    for folder in reversed(parts):
        if not can_use(folder, uid, os.X_OK):
            return folder
    return None


# -- rootless Podman ------------------------------------------------------------------------


def _subid_ranges(path: str, name: str, uid: int) -> list[tuple[int, int]]:
    ranges = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[0] in (name, str(uid)) and fields[2].isdigit():
                    ranges.append((int(fields[1]), int(fields[2])))
    except OSError:
        pass
    return ranges


def check_subids(backend: str, uid: int, id_map: tuple[tuple[int, int, int], ...], reload: str) -> Finding:
    """Subordinate UID/GID ranges of the rootless user, and whether the engine uses them
    (``reload``: the command that makes the engine read new ranges)."""
    name = user_name(uid)
    uids = _subid_ranges("/etc/subuid", name, uid)
    gids = _subid_ranges("/etc/subgid", name, uid)
    fix = SUBID_FIX.format(user=name, reload=reload)
    missing = [f for f, r in (("/etc/subuid", uids), ("/etc/subgid", gids)) if not r]
    if missing:
        return Finding(
            backend,
            "subuid",
            "fail",
            f"user {name} has no range in {' and '.join(missing)}: rootless containers get a single UID",
            fix,
        )
    described = f"{uids[0][1]} UIDs from {uids[0][0]}, {gids[0][1]} GIDs from {gids[0][0]}"
    if id_map and max(size for _, _, size in id_map) <= 1:
        return Finding(
            backend,
            "subuid",
            "fail",
            f"user {name} has {described}, but the running Podman maps only its own UID (ranges added after it started)",
            reload,
        )
    return Finding(backend, "subuid", "ok", f"user {name} has {described}")
