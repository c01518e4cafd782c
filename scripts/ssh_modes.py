#!/usr/bin/env python3
"""Compare the ways to reach a remote Docker over ssh: docker-py's paramiko mode, docker-py's
``use_ssh_client=True`` (the ssh binary per connection), and oci-executor's one ssh tunnel.

    ssh-agent sh -c 'ssh-add KEY && .venv/bin/python scripts/ssh_modes.py ssh://root@HOST:PORT [--calls N] [--sshd-log LOG]'

Keys come from the ssh agent (both docker-py modes read neither ``-i`` nor our ``ssh_identity``).
For each mode: the time to connect (client + first ping), the median of ``--calls`` pings and of
``--calls`` ``exec_run(python3 -c pass)`` in one sleeping container, and (with ``--sshd-log``)
how many ssh logins the calls cost, counted from the server's log.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def logins(log: str | None) -> int:
    if not log:
        return -1
    return Path(log).read_text(errors="replace").count("Accepted publickey")


def measure(name: str, make: Any, image: str, calls: int, log: str | None) -> None:
    start = time.perf_counter()
    client = make()
    client.ping()
    connect = time.perf_counter() - start
    before = logins(log)
    pings = []
    for _ in range(calls):
        t = time.perf_counter()
        client.ping()
        pings.append(time.perf_counter() - t)
    print(f"{name:28s} ping {statistics.median(pings) * 1000:6.1f} ms (median of {calls})", flush=True)
    execs: list[float] = []
    failed = ""
    try:
        container = client.containers.run(
            image, ["sleep", "300"], detach=True, labels={"io.oci-executor.bench": "1"}
        )
    except Exception as exc:  # noqa: BLE001 - docker-py's ssh modes fail some calls
        failed = f"  containers.run FAILED: {type(exc).__name__}: {exc}"
    else:
        try:
            for _ in range(calls):
                t = time.perf_counter()
                code, _ = container.exec_run(["python3", "-c", "pass"])
                execs.append(time.perf_counter() - t)
                assert code == 0
        finally:
            container.remove(force=True)
    after = logins(log)
    client.close()
    extra = f", ssh logins during these calls: {after - before}" if log else ""
    extra += failed
    print(
        f"{name:28s} connect {connect * 1000:7.0f} ms  ping {statistics.median(pings) * 1000:6.1f} ms  "
        f"exec_run {statistics.median(execs) * 1000 if execs else float('nan'):6.1f} ms{extra}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--image", default="oci-executor-test/python:3.11")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--sshd-log")
    parser.add_argument("--local", default="unix:///var/run/docker.sock")
    options = parser.parse_args()
    import docker

    from oci_executor.backend import BackendConfig
    from oci_executor.backends.docker import DockerBackend

    backend = DockerBackend(BackendConfig(address=options.address))
    modes = [
        ("local socket (reference)", lambda: docker.DockerClient(base_url=options.local)),
        ("oci-executor ssh tunnel", lambda: docker.DockerClient(base_url=backend.endpoint())),
        ("docker-py paramiko", lambda: docker.DockerClient(base_url=options.address)),
        (
            "docker-py use_ssh_client",
            lambda: docker.DockerClient(base_url=options.address, use_ssh_client=True),
        ),
    ]
    try:
        for name, make in modes:
            try:
                measure(name, make, options.image, options.calls, options.sshd_log)
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"{name:28s} FAILED: {type(exc).__name__}: {exc}", flush=True)
    finally:
        backend.close()


if __name__ == "__main__":
    main()
