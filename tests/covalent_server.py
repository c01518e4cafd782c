"""A real Covalent server for the end-to-end tests, started and stopped by the test session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli() -> list[str]:
    exe = shutil.which("covalent", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "covalent"]


def _answers(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/v2/dispatches?count=1", timeout=2):
                return
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"Covalent server did not start on {url}") from None
            time.sleep(0.5)


def server_pids(url: str) -> list[int]:
    """The server's processes (its shell wrapper and ``app.py``), found by its port."""
    port = url.rsplit(":", 1)[1].encode()
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ")
        except OSError:
            continue
        if b"app.py" in cmdline and b"--port " + port in cmdline:
            found.append(int(entry))
    return found


def kill_and_start_again(url: str, timeout: float = 90.0) -> None:
    """SIGKILL the server, then start it again on the same port, as a user would."""
    import signal

    for pid in server_pids(url):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while server_pids(url) and time.monotonic() < deadline:
        time.sleep(0.2)
    with open(os.path.join(os.environ["HOME"], "covalent-start.log"), "ab") as log:
        port = url.rsplit(":", 1)[1]
        subprocess.run([*_cli(), "start", "--no-cluster", "-p", port], check=True, stdout=log, stderr=log)
    _answers(url, timeout)


@contextmanager
def running_server(config: dict[str, object], timeout: float = 90.0) -> Iterator[str]:
    """Write ``config`` into this HOME's covalent.conf, start a server, yield its URL, stop it."""
    import covalent as ct

    port = _free_port()
    # sdk.no_cluster makes lattices default to the "local" workflow executor, as
    # `covalent start --no-cluster` expects; the client reads it when a lattice is built.
    settings = {"dispatcher.port": port, "user_interface.port": port, "sdk.no_cluster": "true"}
    ct.set_config({**settings, **config})
    url = f"http://localhost:{port}"
    log = open(os.path.join(os.environ["HOME"], "covalent-start.log"), "wb")  # noqa: SIM115
    subprocess.run([*_cli(), "start", "--no-cluster", "-p", str(port)], check=True, stdout=log, stderr=log)
    try:
        _answers(url, timeout)
        yield url
    finally:
        subprocess.run([*_cli(), "stop"], check=False, stdout=log, stderr=log)
        log.close()
