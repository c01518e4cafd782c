"""An engine backend's volume check: what a remote engine changes for the user.

With a remote engine (``ssh://``, ``tcp://``, a Podman connection name) the task's files travel
through the engine's API, but ``volumes`` are bind mounts: their host folders are folders on
the *engine's* host, not on the machine running Covalent. :func:`check_volumes` says so and,
over ssh, checks that each folder exists there.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from oci_executor.backend import Volume
from oci_executor.backends.shared.engine.remote import RemoteEngine
from oci_executor.backends.shared.ssh import run_remote
from oci_executor.findings import Finding


def _remote_host(address: str) -> str | None:
    """The host of a ``tcp://`` (or ``http(s)://``) address that is not this machine, else None."""
    if address.startswith(("tcp://", "http://", "https://")):
        host = address.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            return host
    return None


def check_volumes(backend: RemoteEngine, volumes: Sequence[Volume]) -> list[Finding]:
    """For a remote engine: a note that volumes name folders on its host, and (over ssh) a
    failure for each folder that does not exist there. Nothing for a local engine."""
    if not volumes:
        return []
    name, address = backend.name, backend.address()
    target = backend.remote()
    if target is None:
        host = _remote_host(address)
        if host is None:
            return []
        return [
            Finding(
                name,
                "volumes",
                "warn",
                f"the engine at {address} runs on {host}: each volume's host folder is a folder on {host}, "
                "not on this machine, and it cannot be checked from here",
                "make sure the folders exist on that host, or pass the data to the task instead",
            )
        ]
    findings = [
        Finding(
            name,
            "volumes",
            "ok",
            f"the engine at {address} runs on {target.host}: each volume's host folder is a folder on "
            f"{target.host}, not on this machine (the task's own files travel through the engine's API; "
            "nothing needs to be shared).",
        )
    ]
    paths = [v.host for v in volumes]
    script = "; ".join(f"if [ -d {shlex.quote(p)} ]; then echo yes; else echo no; fi" for p in paths)
    try:
        done = run_remote(target, script)
    except Exception as exc:  # noqa: BLE001 - a diagnosis reports, never raises
        return [
            *findings,
            Finding(name, "volumes", "warn", f"could not check the volumes on {target.host}: {exc}"),
        ]
    answers = done.stdout.split()
    if done.returncode != 0 or len(answers) != len(paths):
        detail = " ".join(done.stderr.split())[-300:]
        return [
            *findings,
            Finding(name, "volumes", "warn", f"could not check the volumes on {target.host}: {detail}"),
        ]
    for path, answer in zip(paths, answers, strict=True):
        if answer != "yes":
            findings.append(
                Finding(
                    name,
                    "volumes",
                    "fail",
                    f"volume folder {path} does not exist on {target.host} (the engine's host; it may exist on "
                    "this machine, which does not count)",
                    f"ssh {target.login} mkdir -p {path} (and copy the data there), or drop the volume",
                )
            )
    return findings
