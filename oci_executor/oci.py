"""The Covalent plugin module: ``executor="oci"`` or ``OCIExecutor(...)``.

Covalent names a plugin after its module, so this module's name, ``oci``, is what users
type. Every attribute of :class:`OCIExecutor` is JSON-serializable, because Covalent ships
the executor to its server as JSON.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from covalent._shared_files.exceptions import TaskRuntimeError
from covalent.executor.base import AsyncBaseExecutor

from oci_executor.backend import PULL_POLICIES, Backend, BackendConfig, ContainerSpec
from oci_executor.errors import ConfigurationError
from oci_executor.lifecycle import execute, open_container
from oci_executor.registry import select_backend
from oci_executor.task import TaskOutcome, build_task, host_python_version

log = logging.getLogger(__name__)

EXECUTOR_PLUGIN_NAME = "OCIExecutor"
LABEL_PREFIX = "io.oci-executor"

_EXECUTOR_PLUGIN_DEFAULTS: dict[str, Any] = {
    "image": f"python:{host_python_version()}-slim",
    "backend": "auto",
    "address": "",
    "pull_policy": "missing",
    "python": "python3",
    "idle_timeout": 60.0,
    "max_lifetime": 86400.0,
}


def _config_default(key: str) -> Any:
    """The value from covalent.conf's ``[executors.oci]``, else the plugin default."""
    try:
        from covalent._shared_files.config import get_config

        value = get_config(f"executors.oci.{key}")
    except Exception:  # noqa: BLE001 - config missing or not yet written
        value = None
    return _EXECUTOR_PLUGIN_DEFAULTS[key] if value is None else value


class OCIExecutor(AsyncBaseExecutor):
    """Run each electron in an OCI container, on Docker, Podman or the local backend.

    Args:
        image: Image to run the task in; it needs a Python of the host's major.minor.
        backend: ``"auto"`` (podman, then docker, then local), ``"local"``, ``"docker"``,
            ``"podman"``, or the name of an installed backend plugin.
        address: Engine socket URL; empty means the backend's default (``DOCKER_HOST``...).
        pull_policy: ``"missing"`` (pull if absent), ``"always"`` or ``"never"``.
        python: Interpreter inside the image.
        idle_timeout: Seconds without a live task after which the container ends itself.
        max_lifetime: Seconds after which the container ends itself in any case.
        **kwargs: Covalent's executor options (``time_limit``, ``log_stdout``...).
    """

    def __init__(
        self,
        image: str | None = None,
        backend: str | None = None,
        address: str | None = None,
        pull_policy: str | None = None,
        python: str | None = None,
        idle_timeout: float | None = None,
        max_lifetime: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image: str = image or _config_default("image")
        self.backend: str = backend or _config_default("backend")
        self.address: str = address if address is not None else _config_default("address")
        self.pull_policy: str = pull_policy or _config_default("pull_policy")
        self.python: str = python or _config_default("python")
        self.idle_timeout: float = float(idle_timeout or _config_default("idle_timeout"))
        self.max_lifetime: float = float(max_lifetime or _config_default("max_lifetime"))
        if self.pull_policy not in PULL_POLICIES:
            raise ConfigurationError(
                f"pull_policy={self.pull_policy!r} is not one of {', '.join(PULL_POLICIES)}"
            )

    # -- pieces the core needs ---------------------------------------------------------

    def backend_config(self) -> BackendConfig:
        """The engine address and pull policy handed to the backend."""
        return BackendConfig(address=self.address or None, pull_policy=self.pull_policy)  # type: ignore[arg-type]

    def container_spec(self, task_metadata: dict[str, Any]) -> ContainerSpec:
        """The container to create for one task."""
        return ContainerSpec(
            image=self.image,
            labels={
                f"{LABEL_PREFIX}.managed": "true",
                f"{LABEL_PREFIX}.dispatch-id": str(task_metadata.get("dispatch_id", "")),
                f"{LABEL_PREFIX}.node-id": str(task_metadata.get("node_id", "")),
            },
            python=self.python,
            idle_timeout=self.idle_timeout,
            max_lifetime=self.max_lifetime,
        )

    def run_sync(
        self,
        function: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        task_metadata: dict[str, Any],
    ) -> TaskOutcome:
        """Run one task to completion in a fresh container and return its outcome."""
        payload = build_task(function, args, kwargs)
        backend: Backend = select_backend(self.backend, self.backend_config())
        try:
            with open_container(backend, self.container_spec(task_metadata)) as container:
                return execute(backend, container, payload)
        finally:
            backend.close()

    # -- Covalent's entry point --------------------------------------------------------

    async def run(
        self,
        function: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        task_metadata: dict[str, Any],
    ) -> Any:
        outcome = await asyncio.to_thread(self.run_sync, function, args, kwargs, task_metadata)
        self._write_streams(outcome)
        if not outcome.ok:
            raise TaskRuntimeError(f"{outcome.summary()}\n{outcome.traceback}")
        return outcome.transportable()

    def _write_streams(self, outcome: TaskOutcome) -> None:
        stdout, stderr = self.task_stdout, self.task_stderr
        if stdout is not None:
            stdout.write(outcome.stdout)
        if stderr is not None:
            stderr.write(outcome.stderr)
            if not outcome.ok:
                stderr.write(outcome.traceback)
