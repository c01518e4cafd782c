"""The Covalent plugin module: ``executor="oci"`` or ``OCIExecutor(...)``.

Covalent names a plugin after its module, so this module's name, ``oci``, is what users
type. Every attribute of :class:`OCIExecutor` is JSON-serializable, because Covalent ships
the executor to its server as JSON.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from covalent._shared_files.exceptions import TaskCancelledError, TaskRuntimeError
from covalent.executor.base import AsyncBaseExecutor

from oci_executor.backend import (
    MANAGED_LABEL,
    PULL_POLICIES,
    Backend,
    BackendConfig,
    Container,
    ContainerSpec,
)
from oci_executor.errors import ConfigurationError, TaskTimeoutError
from oci_executor.execute import TaskNotStarted, execute
from oci_executor.lifecycle import start_runner
from oci_executor.options import (
    check_count,
    check_image,
    check_seconds,
    check_string_map,
    check_time_limit,
    parse_cpus,
    parse_gpus,
    parse_size,
    parse_volumes,
)
from oci_executor.pool import POOL, REUSE_SCOPES, pool_key, shared_backend
from oci_executor.registry import AUTO, default_registry
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
    "env": {},
    "volumes": [],
    "selinux_relabel": False,
    "userns": "",
    "workdir": "",
    "user": "",
    "cpus": 0,
    "memory": "",
    "gpus": "",
    "network": "",
    "labels": {},
    "shm_size": "",
    "read_only": False,
    "reuse": "dispatch",
    "max_containers": 0,
    "keep_warm": 10.0,
}
"""Every option, with its default, as written into covalent.conf's ``[executors.oci]``.
Empty values mean "not set": the engine's default applies."""


def _pick(value: Any, key: str) -> Any:
    """``value`` if given, else the configured default."""
    return _config_default(key) if value is None else value


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
        env: Environment variables for the task.
        volumes: Host folders to mount: ``"HOST:CONTAINER[:ro]"`` strings or
            ``{"host", "container", "read_only"}`` dicts.
        selinux_relabel: Relabel volumes for SELinux (``:z``).
        userns: User namespace mode (``"keep-id"`` on Podman...); empty: automatic.
        workdir: Working directory of the task inside the container.
        user: User (``"uid[:gid]"`` or a name) the task runs as.
        cpus: CPU limit, e.g. ``1.5``; 0: no limit.
        memory: Memory limit in bytes or like ``"512m"``; empty: no limit.
        gpus: ``"all"``, a count, or a list of device IDs; empty: none.
        network: Empty: the engine's default; ``"none"``: no network; else a network's name.
        labels: Container labels, added to ours.
        shm_size: Size of /dev/shm in bytes or like ``"1g"``; empty: the engine's default.
        read_only: Make the container's root filesystem read-only (``/tmp`` stays writable).
        reuse: Which tasks a warm container may serve: ``"dispatch"`` (tasks of the same
            dispatch), ``"process"`` (any matching task in this process) or ``"never"``.
        max_containers: Containers alive at once per pool key; 0: the host's CPU count.
        keep_warm: Seconds an idle warm container is kept before it is removed.
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
        env: dict[str, str] | None = None,
        volumes: list[Any] | None = None,
        selinux_relabel: bool | None = None,
        userns: str | None = None,
        workdir: str | None = None,
        user: str | None = None,
        cpus: float | None = None,
        memory: int | str | None = None,
        gpus: str | int | list[str] | None = None,
        network: str | None = None,
        labels: dict[str, str] | None = None,
        shm_size: int | str | None = None,
        read_only: bool | None = None,
        reuse: str | None = None,
        max_containers: int | None = None,
        keep_warm: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_time_limit(self.time_limit)
        self.image: str = check_image(_pick(image, "image"))
        self.backend: str = _pick(backend, "backend")
        if self.backend != AUTO:
            default_registry().get(self.backend)  # UnknownBackendError lists the names
        self.address: str = address if address is not None else _config_default("address")
        self.pull_policy: str = pull_policy or _config_default("pull_policy")
        self.python: str = python or _config_default("python")
        self.idle_timeout: float = check_seconds(_pick(idle_timeout, "idle_timeout"), "idle_timeout")
        self.max_lifetime: float = check_seconds(_pick(max_lifetime, "max_lifetime"), "max_lifetime")
        self.env: dict[str, str] = check_string_map(_pick(env, "env"), "env")
        self.volumes: list[Any] = list(_pick(volumes, "volumes") or [])
        self.selinux_relabel: bool = bool(_pick(selinux_relabel, "selinux_relabel"))
        self.userns: str = _pick(userns, "userns") or ""
        self.workdir: str = _pick(workdir, "workdir") or ""
        self.user: str = str(_pick(user, "user") or "")
        self.cpus: float = float(parse_cpus(_pick(cpus, "cpus")) or 0)
        self.memory: int | str = _pick(memory, "memory") or ""
        self.gpus: str | int | list[str] = _pick(gpus, "gpus") or ""
        self.network: str = _pick(network, "network") or ""
        self.labels: dict[str, str] = check_string_map(_pick(labels, "labels"), "labels")
        self.shm_size: int | str = _pick(shm_size, "shm_size") or ""
        self.read_only: bool = bool(_pick(read_only, "read_only"))
        self.reuse: str = _pick(reuse, "reuse") or "dispatch"
        self.max_containers: int = check_count(_pick(max_containers, "max_containers"), "max_containers")
        self.keep_warm: float = check_seconds(_pick(keep_warm, "keep_warm"), "keep_warm", allow_zero=True)
        if self.reuse not in REUSE_SCOPES:
            raise ConfigurationError(f"reuse={self.reuse!r} is not one of {', '.join(REUSE_SCOPES)}")
        self.container_spec({})  # validate every option now, not at the first task
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
        ours = {
            MANAGED_LABEL: "true",
            f"{LABEL_PREFIX}.dispatch-id": str(task_metadata.get("dispatch_id", "")),
            f"{LABEL_PREFIX}.node-id": str(task_metadata.get("node_id", "")),
        }
        return ContainerSpec(
            image=self.image,
            labels={**self.labels, **ours},
            env=dict(self.env),
            python=self.python,
            idle_timeout=self.idle_timeout,
            max_lifetime=self.max_lifetime,
            volumes=parse_volumes(self.volumes),
            selinux_relabel=self.selinux_relabel,
            userns=self.userns or None,
            workdir=self.workdir or None,
            user=self.user or None,
            cpus=parse_cpus(self.cpus),
            memory=parse_size(self.memory, "memory"),
            shm_size=parse_size(self.shm_size, "shm_size"),
            gpus=parse_gpus(self.gpus),
            network=self.network or None,
            read_only=self.read_only,
        )

    def run_sync(
        self,
        function: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        task_metadata: dict[str, Any],
        on_container: Callable[[Container], None] | None = None,
    ) -> TaskOutcome:
        """Run one task to completion on a warm or new container and return its outcome.

        ``on_container`` is called with the container once the task has one (Covalent's job
        handle). A pooled container that vanished before the task started is replaced.
        """
        payload = build_task(function, args, kwargs)
        spec = self.container_spec(task_metadata)
        backend: Backend = shared_backend(self.backend, self.backend_config())
        key = pool_key(backend, spec, self.reuse, str(task_metadata.get("dispatch_id", "")))
        limit = self.max_containers or os.cpu_count() or 1
        time_limit = check_time_limit(self.time_limit)
        while True:
            runner, reused = POOL.acquire(key, limit, functools.partial(start_runner, backend, spec))
            try:
                if on_container is not None:
                    on_container(runner.container)
                outcome = execute(
                    runner, payload, workdir=spec.workdir, time_limit=time_limit, memory=spec.memory
                )
            except TaskNotStarted:
                POOL.release(key, runner, reusable=False)
                if reused:
                    log.info(
                        "warm container %s was gone; starting the task on a new one", runner.container.id[:12]
                    )
                    continue
                raise
            except BaseException:
                POOL.release(key, runner, reusable=False)
                raise
            POOL.release(key, runner, reusable=self.reuse != "never", keep_warm=self.keep_warm)
            return outcome

    # -- Covalent's entry points -------------------------------------------------------

    async def run(
        self,
        function: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        task_metadata: dict[str, Any],
    ) -> Any:
        loop = asyncio.get_running_loop()
        covalent_runtime = hasattr(self, "_send_queue")

        def on_container(container: Container) -> None:
            if not covalent_runtime:
                return
            handle = {"backend": container.backend, "address": container.address, "container": container.id}
            asyncio.run_coroutine_threadsafe(self.set_job_handle(handle), loop).result(timeout=30)
            if asyncio.run_coroutine_threadsafe(self.get_cancel_requested(), loop).result(timeout=30):
                raise TaskCancelledError("the task was cancelled before it started")

        try:
            outcome = await asyncio.to_thread(
                self.run_sync, function, args, kwargs, task_metadata, on_container
            )
        except TaskCancelledError:
            raise
        except TaskTimeoutError as exc:
            # Covalent keeps a node's streams only for TaskRuntimeError: deliver what the task
            # printed before the kill, with the error at the end of its stderr.
            message = f"{type(exc).__name__}: {exc}"
            self._write_streams(TaskOutcome(ok=False, stdout=exc.stdout, stderr=exc.stderr + message + "\n"))
            raise TaskRuntimeError(message) from exc
        except Exception:
            if covalent_runtime and await self.get_cancel_requested():
                raise TaskCancelledError("the task was cancelled; its container was removed") from None
            raise
        self._write_streams(outcome)
        if not outcome.ok:
            raise TaskRuntimeError(f"{outcome.summary()}\n{outcome.traceback}")
        return outcome.transportable()

    async def cancel(self, task_metadata: dict[str, Any], job_handle: Any) -> bool:
        """Kill and remove the task's container (Covalent calls this on ``ct.cancel``)."""
        handle = json.loads(job_handle) if isinstance(job_handle, str) else job_handle
        if not isinstance(handle, dict) or "container" not in handle:
            return False
        backend = shared_backend(handle["backend"], BackendConfig(address=handle.get("address") or None))
        container = Container(
            id=handle["container"],
            backend=handle["backend"],
            image="",
            image_id="",
            scratch_dir="",
            python="",
        )

        def kill() -> None:
            backend.stop(container)
            backend.remove(container)

        await asyncio.to_thread(kill)
        return True

    async def receive(self, task_group_metadata: dict[str, Any], data: Any) -> list[Any]:
        """Covalent calls this only for a task it cancelled before it started: report CANCELLED.

        Nothing was created for such a task, so there is nothing to clean up.
        """
        from covalent._shared_files.util_classes import RESULT_STATUS
        from covalent.executor.schemas import TaskUpdate

        return [
            TaskUpdate(
                dispatch_id=task_group_metadata["dispatch_id"],
                node_id=node_id,
                status=RESULT_STATUS.CANCELLED,
                assets={},
            )
            for node_id in task_group_metadata.get("node_ids", [])
        ]

    def _write_streams(self, outcome: TaskOutcome) -> None:
        stdout, stderr = self.task_stdout, self.task_stderr
        if stdout is not None:
            stdout.write(outcome.stdout)
        if stderr is not None:
            stderr.write(outcome.stderr)
            if not outcome.ok:
                stderr.write(outcome.traceback)
