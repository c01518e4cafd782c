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
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/dispatches?count=1", timeout=2):
                    break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Covalent server did not start on {url}") from None
                time.sleep(0.5)
        yield url
    finally:
        subprocess.run([*_cli(), "stop"], check=False, stdout=log, stderr=log)
        log.close()
