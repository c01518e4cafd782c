"""Podman connections by name (``podman system connection add``): their URI and identity."""

from __future__ import annotations

import json
import shutil
import subprocess

from oci_executor.errors import ConfigurationError


def connection(name: str) -> tuple[str, str]:
    """The URI and identity file of a Podman connection (``podman system connection add``)."""
    if not shutil.which("podman"):
        raise ConfigurationError(
            f"address={name!r} is neither a URL nor a Podman connection name that can be looked up "
            "(no podman command here). Use ssh://user@host[:port]/path/to/podman.sock, unix://... or tcp://..."
        )
    done = subprocess.run(
        ["podman", "system", "connection", "list", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    try:
        entries = json.loads(done.stdout or "[]") if done.returncode == 0 else []
    except ValueError:
        entries = []
    for entry in entries:
        if entry.get("Name") == name:
            return str(entry.get("URI", "")), str(entry.get("Identity", "") or "")
    known = ", ".join(str(e.get("Name")) for e in entries) or "none"
    raise ConfigurationError(
        f"address={name!r} is not a URL and no Podman connection has that name (connections: {known}). "
        "Add it with `podman system connection add NAME ssh://user@host[:port]/path/to/podman.sock "
        "--identity KEY`, or give the URL itself."
    )
