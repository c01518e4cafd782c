"""Where a rootless user's Podman listens, and what is wrong when it cannot.

Socket discovery follows Podman's own rules (``XDG_RUNTIME_DIR``, ``/run/user/UID``,
``/tmp/podman-run-UID``); :func:`runtime_dir_problem` diagnoses each ``XDG_RUNTIME_DIR`` state
with its fix, and :data:`VFS_WARNING` explains the vfs storage driver.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

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
            f"XDG_RUNTIME_DIR={runtime_dir} does not exist, and rootless Podman keeps its runtime files "
            f"there. Fix: `{RESTART_UNSET}` in the shell that runs the Covalent server (Podman then uses "
            f"{_fallback(uid)}); or have root create the folder: `sudo install -d -o {_name(uid)} -m 700 "
            f"{runtime_dir}`."
        )
    if owner != uid:
        return (
            f"XDG_RUNTIME_DIR={runtime_dir} belongs to {_name(owner)} (uid {owner}), not to you (uid {uid}): "
            f"it was inherited through su or sudo, and rootless Podman cannot use it. Fix: `{RESTART_UNSET}` "
            f"in the shell that runs the Covalent server (Podman then uses {_fallback(uid)})."
        )
    return None


RESTART_UNSET = "unset XDG_RUNTIME_DIR; covalent stop; covalent start --no-cluster"
"""The fix for an unusable ``XDG_RUNTIME_DIR``, as one line to paste (no root needed)."""


def runtime_dir_error() -> str | None:
    """:func:`runtime_dir_problem` when ``XDG_RUNTIME_DIR`` stops rootless Podman (set, but
    missing or another user's), cause first; None when it is fine or merely unset."""
    if os.geteuid() == 0 or not os.environ.get("XDG_RUNTIME_DIR"):
        return None
    return runtime_dir_problem()


def _fallback(uid: int) -> str:
    """Where Podman keeps a user's runtime files with ``XDG_RUNTIME_DIR`` unset."""
    own = f"/run/user/{uid}"
    return own if _owned(own, uid) else f"/tmp/podman-run-{uid}"


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def container_host_error(host: str, detail: str) -> str:
    """``CONTAINER_HOST`` names a local address where no Podman answers: the cause, then a fix
    a user can paste (unsetting it brings back the socket discovery and the transient service)."""
    path = host.split("://", 1)[-1]
    if host.startswith("unix://") and not os.path.exists(path):
        why = f"there is no socket at {path}"
    elif "refused" in detail.lower():
        why = "the connection was refused"
    else:
        why = detail
    return (
        f"CONTAINER_HOST={host}: no Podman answers there ({why}). Fix: `unset CONTAINER_HOST; covalent "
        "stop; covalent start --no-cluster` in the shell that runs the Covalent server: oci-executor "
        "then uses your own Podman socket, or starts a transient Podman service itself. Or start a "
        f"service at that address: `podman system service --time=0 {host} &`."
    )


def cli_has_image(image: str) -> bool:
    """Whether the ``podman`` command (which opens the store afresh) has ``image``."""
    if not shutil.which("podman"):
        return False
    try:
        done = subprocess.run(
            ["podman", "image", "exists", image], capture_output=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
