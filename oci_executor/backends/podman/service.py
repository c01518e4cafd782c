"""A transient ``podman system service`` of the backend's own, for when no service answers.

One per backend instance (and the executor shares one instance per process); it exits by
itself after :data:`SERVICE_IDLE_SECONDS` without clients (so one left behind by a killed
executor goes), is started again on demand, and is stopped with the backend. A service keeps
the store it opened: when that store changes under it (``podman system reset``, a new
storage.conf) the backend restarts it (:meth:`TransientService.store_changed`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

SERVICE_IDLE_SECONDS = 60
"""A transient service left behind by a killed executor exits after this long without clients."""
SERVICE_START_TIMEOUT = 20.0


class TransientService:
    """A ``podman system service`` on a private socket in a folder of its own."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.folder: str | None = None
        self.graph_root = ""
        """The store it serves (from its info), and what that store looked like then."""
        self.fingerprint: tuple[object, ...] = ()

    def watch(self, graph_root: str) -> None:
        """Remember the store the service opened, to notice when it changes under it."""
        self.graph_root = graph_root
        self.fingerprint = store_fingerprint(graph_root)

    def store_changed(self) -> bool:
        """Whether the store changed since the service opened it (``podman system reset``, a
        new storage.conf): the service would keep serving the old one until it exits."""
        return bool(self.fingerprint) and store_fingerprint(self.graph_root) != self.fingerprint

    @property
    def address(self) -> str:
        """``unix://`` URL of its socket ("" when not started)."""
        return f"unix://{self.folder}/podman.sock" if self.folder else ""

    @property
    def running(self) -> bool:
        return self.process is not None

    def exited(self) -> bool:
        """Whether it was started and has ended (idle for too long)."""
        return self.process is not None and self.process.poll() is not None

    def start(self) -> str | None:
        """Start it and wait until its socket is there; None, or the end of its log on failure."""
        base = os.environ.get("XDG_RUNTIME_DIR")
        if not base or not os.access(base, os.W_OK):
            base = None
        self.folder = tempfile.mkdtemp(prefix="oci-executor-podman-", dir=base)
        socket_path = f"{self.folder}/podman.sock"
        log_path = f"{self.folder}/service.log"
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["podman", "system", "service", f"--time={SERVICE_IDLE_SECONDS}", f"unix://{socket_path}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + SERVICE_START_TIMEOUT
        while not os.path.exists(socket_path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                with open(log_path, "rb") as handle:
                    detail = handle.read().decode(errors="replace").strip()[-500:]
                self.stop()
                return detail
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        """Stop it (the whole process group) and remove its folder."""
        process, self.process = self.process, None
        if process is not None:
            # The whole process group: rootless Podman re-executes itself in a user namespace,
            # and a child signalled only through its parent can miss a stop sent soon after start.
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        self.graph_root, self.fingerprint = "", ()


def store_fingerprint(graph_root: str) -> tuple[object, ...]:
    """A few stats that ``podman system reset`` or a storage.conf edit change: the graph root's
    identity and the storage.conf files' modification times (cheap enough to check per task)."""
    config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    marks: list[object] = []
    for path in (
        graph_root,
        f"{graph_root}/libpod",
        f"{config_home}/containers/storage.conf",
        "/etc/containers/storage.conf",
    ):
        try:
            info = os.stat(path)
            marks.append((info.st_ino, info.st_dev, info.st_mtime_ns if path.endswith(".conf") else 0))
        except OSError:
            marks.append(None)
    return tuple(marks)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal ``process`` and its process group (it leads one: ``start_new_session``)."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        process.send_signal(signum)
