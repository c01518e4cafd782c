"""The ``docker`` backend: the Docker Engine API through the ``docker`` SDK.

Address: the executor's ``address`` option, else ``DOCKER_HOST``, else the default socket
``unix:///var/run/docker.sock``.
"""

from __future__ import annotations

import os
from typing import Any

import docker
import docker.errors

from oci_executor.backend import ExecResult
from oci_executor.backends._engine import EngineBackend
from oci_executor.errors import OCIExecutorError
from oci_executor.hookspecs import hookimpl
from oci_executor.registry import BackendRegistry

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
API_TIMEOUT = 120


class DockerBackend(EngineBackend):
    """Tasks in Docker containers."""

    name = "docker"
    engine = "Docker"
    start_hint = (
        "Start the Docker daemon (`sudo systemctl start docker`, or `sudo dockerd &`), "
        "or point DOCKER_HOST or the executor's 'address' option at a running engine."
    )

    def address(self) -> str:
        return self.config.address or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET

    def _connect(self) -> Any:
        if self.config.address:
            return docker.DockerClient(base_url=self.config.address, timeout=API_TIMEOUT)
        return docker.from_env(timeout=API_TIMEOUT)

    def _map_error(self, exc: Exception, action: str) -> OCIExecutorError | None:
        return None

    def _exec_result(self, raw: Any) -> ExecResult:
        stdout, stderr = raw.output if raw.output is not None else (None, None)
        return ExecResult(int(raw.exit_code or 0), stdout or b"", stderr or b"")


@hookimpl
def oci_executor_register_backends(registry: BackendRegistry) -> None:
    registry.add(DockerBackend)
