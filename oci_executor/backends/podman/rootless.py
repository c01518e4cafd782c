"""Where a rootless user's Podman listens, and what is wrong when it cannot.

Socket discovery follows Podman's own rules (``XDG_RUNTIME_DIR``, ``/run/user/UID``,
``/tmp/podman-run-UID``); :func:`runtime_dir_problem` diagnoses each ``XDG_RUNTIME_DIR`` state
with its fix, and :data:`VFS_WARNING` explains the vfs storage driver.
"""

from __future__ import annotations

import os

from oci_executor.backends.shared.engine.diagnosis import VFS_MEASURED

ROOTFUL_SOCKET = "unix:///run/podman/podman.sock"

VFS_WARNING = (
    "Podman stores images at %s with the vfs storage driver: it copies the whole image for every "
    f"container, so each task's first container takes seconds (measured: {VFS_MEASURED}). Fix: "
    'write ~/.config/containers/storage.conf with [storage] driver = "overlay", '
    "then run `podman system reset` (it asks for confirmation and DELETES every image and container "
    "of this user; until you do, Podman says 'overwritten by graph driver vfs from database'), and "
    "load or pull your images again. See docs/podman.md."
)


def rootless_socket() -> str | None:
    """The rootless service's socket URL, from ``XDG_RUNTIME_DIR``."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    return f"unix://{runtime_dir}/podman/podman.sock" if runtime_dir else None


def rootless_candidates() -> list[str]:
    """Where this user's rootless service listens, as Podman itself decides it.

    With ``XDG_RUNTIME_DIR`` set (and the user's own), only ``$XDG_RUNTIME_DIR/podman/podman.sock``.
    Without it, ``/run/user/UID/podman/podman.sock`` when that folder is the user's, and
    ``/tmp/podman-run-UID/podman/podman.sock`` (where `podman system service --time=0 &`
    listens with ``XDG_RUNTIME_DIR`` unset).
    """
    uid = os.geteuid()
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return [f"unix://{runtime_dir}/podman/podman.sock"]
    candidates = []
    if _owned(f"/run/user/{uid}", uid):
        candidates.append(f"unix:///run/user/{uid}/podman/podman.sock")
    candidates.append(f"unix:///tmp/podman-run-{uid}/podman/podman.sock")
    return candidates


def _owned(path: str, uid: int) -> bool:
    try:
        return os.stat(path).st_uid == uid
    except OSError:
        return False


def default_address() -> str:
    """``CONTAINER_HOST``; for root, the rootless socket if it exists, else the rootful one;
    for anyone else, the first rootless socket that exists (never the rootful one)."""
    if os.environ.get("CONTAINER_HOST"):
        return os.environ["CONTAINER_HOST"]
    if os.geteuid() == 0:
        rootless = rootless_socket()
        if rootless and os.path.exists(rootless[len("unix://") :]):
            return rootless
        return ROOTFUL_SOCKET
    candidates = rootless_candidates()
    return next((c for c in candidates if os.path.exists(c[len("unix://") :])), candidates[0])


def runtime_dir_problem() -> str | None:
    """What is wrong with ``XDG_RUNTIME_DIR`` for rootless Podman, with the fix; None if fine."""
    if os.geteuid() == 0:
        return None
    uid = os.geteuid()
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    own = f"/run/user/{uid}"
    if not runtime_dir:
        return (
            f"XDG_RUNTIME_DIR is not set, so Podman keeps its runtime files (and a service started "
            f"by hand its socket) in /tmp/podman-run-{uid}. That works; to use {own} instead, "
            f"export XDG_RUNTIME_DIR={own} in the shell that starts the Covalent server"
            + (
                ""
                if os.path.isdir(own)
                else f" (it does not exist: root creates it with `sudo install -d -o $USER -m 700 {own}`, or logind with `sudo loginctl enable-linger $USER`)"
            )
            + "."
        )
    try:
        owner = os.stat(runtime_dir).st_uid
    except FileNotFoundError:
        return (
            f"XDG_RUNTIME_DIR={runtime_dir} does not exist. A user cannot create it under /run/user: "
            f"root does (`sudo install -d -o $USER -m 700 {runtime_dir}`), or logind at login "
            f"(`sudo loginctl enable-linger $USER`); or unset XDG_RUNTIME_DIR to use /tmp/podman-run-{uid}."
        )
    if owner != uid:
        return (
            f"XDG_RUNTIME_DIR={runtime_dir} belongs to uid {owner}, not to you (uid {uid}): it was inherited "
            f"from another user (su and sudo keep it). Set it to your own (`export XDG_RUNTIME_DIR={own}`) "
            "or unset it, then restart the Covalent server from that shell."
        )
    return None
