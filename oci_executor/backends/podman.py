"""The ``podman`` backend: the Podman REST API through the ``podman`` SDK."""

from __future__ import annotations

import os
from typing import Any

from oci_executor.backend import ExecResult
from oci_executor.backends._engine import EngineBackend
from oci_executor.errors import OCIExecutorError
from oci_executor.hookspecs import hookimpl
from oci_executor.registry import BackendRegistry

ROOTFUL_SOCKET = "unix:///run/podman/podman.sock"


def default_address() -> str:
    """``CONTAINER_HOST``, else the rootless socket if present, else the rootful one."""
    if os.environ.get("CONTAINER_HOST"):
        return os.environ["CONTAINER_HOST"]
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and os.path.exists(os.path.join(runtime_dir, "podman", "podman.sock")):
        return f"unix://{runtime_dir}/podman/podman.sock"
    return ROOTFUL_SOCKET


class PodmanBackend(EngineBackend):
    """Tasks in Podman containers, rootful or rootless."""

    name = "podman"
    engine = "Podman"
    start_hint = (
        "Start the Podman service (`podman system service --time=0 &` as your user for "
        "rootless, or `systemctl --user start podman.socket`), or point CONTAINER_HOST or the "
        "executor's 'address' option at a running service."
    )

    def address(self) -> str:
        return self.config.address or default_address()

    def _connect(self) -> Any:
        import podman

        return podman.PodmanClient(base_url=self.address())

    def _pull(self, client: Any, image: str) -> Any:
        # podman-py reports a failed pull only inside the progress stream.
        for event in client.images.pull(image, stream=True, decode=True):
            if isinstance(event, dict) and event.get("error"):
                raise RuntimeError(event["error"])
        return client.images.get(image)

    def _map_error(self, exc: Exception, action: str) -> OCIExecutorError | None:
        return None

    def _exec_result(self, raw: Any) -> ExecResult:
        exit_code, output = raw
        stdout, stderr = output if isinstance(output, tuple) else (output, b"")
        return ExecResult(int(exit_code or 0), stdout or b"", stderr or b"")


@hookimpl
def oci_executor_register_backends(registry: BackendRegistry) -> None:
    registry.add(PodmanBackend)
