"""The Covalent plugin module: ``executor="oci"`` or ``OCIExecutor(...)``.

Covalent names a plugin after its module's last segment, so this module's name, ``oci``, is
what users type. Every attribute of :class:`OCIExecutor` is JSON-serializable, because
Covalent ships the executor to its server as JSON. The options are defined once, in
:mod:`oci_executor.settings`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from covalent._shared_files.exceptions import TaskCancelledError, TaskRuntimeError
from covalent.executor.base import AsyncBaseExecutor

from oci_executor import settings
from oci_executor.backend import BackendConfig, Container, ContainerSpec
from oci_executor.core import our_labels, run_task
from oci_executor.covalent.hostpaths import warn_host_paths
from oci_executor.covalent.tasks import runs_on_host
from oci_executor.covalent.wrapper import build_task, task_name, transportable
from oci_executor.errors import ContainerNotFoundError, OCIExecutorError, ProcessLimitError, TaskTimeoutError
from oci_executor.parsing import check_time_limit
from oci_executor.registry import AUTO, default_registry, shared_backend
from oci_executor.task import TaskOutcome

log = logging.getLogger(__name__)
_package_log = logging.getLogger("oci_executor")


def log_to_server() -> None:
    """Send our INFO lines (pulls, waits for a free container) to the Covalent server's log.

    Called where tasks run (the server); the server's output is its log file. Once per process,
    and only when nobody configured our logger already.
    """
    if _package_log.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] %(name)s: %(message)s"))
    _package_log.addHandler(handler)
    _package_log.setLevel(logging.INFO)
    _package_log.propagate = False


EXECUTOR_PLUGIN_NAME = "OCIExecutor"
COVALENT_OPTIONS = ("log_stdout", "log_stderr", "cache_dir", "time_limit", "retries")
"""Covalent's own executor options, passed to its base class."""

_EXECUTOR_PLUGIN_DEFAULTS: dict[str, Any] = settings.defaults()
"""Every option, with its default, as written into covalent.conf's ``[executors.oci]``.
Empty values mean "not set": the engine's default applies. (Covalent may update this dict
in place when its config changes: read defaults from :func:`settings.defaults`.)"""


class NodeError(Exception):
    """What a Covalent node's error field shows for one of our errors: ``ClassName: message``."""


def _configured(name: str) -> Any:
    """The value from covalent.conf's ``[executors.oci]``, else the option's default."""
    try:
        from covalent._shared_files.config import get_config

        value = get_config(f"executors.oci.{name}")
    except Exception:  # noqa: BLE001 - config missing or not yet written
        value = None
    return settings.defaults()[name] if value is None else value


class OCIExecutor(AsyncBaseExecutor):
    """Run each electron in an OCI container, on Docker, Podman or the local backend.

    Takes every option of :mod:`oci_executor.settings` as a keyword argument (``None`` or
    absent: the value in covalent.conf, else the default), plus Covalent's own executor
    options (``time_limit``, ``log_stdout``...). Bad values raise
    :class:`~oci_executor.errors.ConfigurationError` here, before any engine is contacted.
    """

    def __init__(self, **options: Any) -> None:
        base = {name: options.pop(name) for name in COVALENT_OPTIONS if name in options}
        values = {
            name: _configured(name) if options.get(name) is None else options[name] for name in settings.NAMES
        }
        values.update({k: v for k, v in options.items() if k not in settings.NAMES})  # unknown: refused
        super().__init__(**base)
        check_time_limit(self.time_limit)
        checked = settings.parse(values)
        for name, value in checked.items():
            setattr(self, name, value)
        if checked["backend"] != AUTO:
            default_registry().get(checked["backend"])  # UnknownBackendError lists the names
        self.container_spec({})

    def values(self) -> dict[str, Any]:
        """The option values, checked again (Covalent rebuilds executors from JSON)."""
        return settings.parse({name: getattr(self, name) for name in settings.NAMES})

    def container_spec(self, task_metadata: dict[str, Any]) -> ContainerSpec:
        """The container to create for one task."""
        labels = our_labels(str(task_metadata.get("dispatch_id", "")), str(task_metadata.get("node_id", "")))
        return settings.container_spec(self.values(), labels)

    def backend_config(self) -> BackendConfig:
        """The engine address and pull policy handed to the backend."""
        return settings.backend_config(self.values())

    def run_sync(
        self,
        function: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        task_metadata: dict[str, Any],
        on_container: Callable[[Container], None] | None = None,
    ) -> TaskOutcome:
        """Run one task to completion on a warm or new container and return its outcome."""
        values = self.values()
        payload = build_task(function, args, kwargs)
        bash = [
            c for step in payload.before + payload.after if step.kind == "bash" for c in step.data["commands"]
        ]
        warn_host_paths(bash, settings.container_spec(values, {}).volumes)
        return run_task(
            values,
            payload,
            dispatch_id=str(task_metadata.get("dispatch_id", "")),
            node_id=str(task_metadata.get("node_id", "")),
            time_limit=self.time_limit,
            on_container=on_container,
            name=task_name(function),
        )

    # -- Covalent's entry points -------------------------------------------------------

    async def run(
        self,
        function: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        task_metadata: dict[str, Any],
    ) -> Any:
        log_to_server()
        if runs_on_host(function):
            # Covalent's own post-processing or sublattice building: in this process, as
            # Covalent's local executor runs it (see docs/what-runs-where.md).
            return await asyncio.to_thread(function, *args, **kwargs)
        loop = asyncio.get_running_loop()

        def on_container(container: Container) -> None:
            handle = {"container": dataclasses.asdict(container)}
            asyncio.run_coroutine_threadsafe(self.set_job_handle(handle), loop).result(timeout=30)
            if asyncio.run_coroutine_threadsafe(self.get_cancel_requested(), loop).result(timeout=30):
                raise TaskCancelledError("the task was cancelled before it started")

        try:
            outcome = await asyncio.to_thread(
                self.run_sync, function, args, kwargs, task_metadata, on_container
            )
        except TaskCancelledError:
            raise
        except (TaskTimeoutError, ProcessLimitError) as exc:
            # Covalent keeps a node's streams only for TaskRuntimeError: deliver what the task
            # printed (before the kill), with the error at the end of its stderr.
            message = f"{type(exc).__name__}: {exc}"
            self._write_streams(TaskOutcome(ok=False, stdout=exc.stdout, stderr=exc.stderr + message + "\n"))
            raise TaskRuntimeError(message) from exc
        except Exception as exc:
            if await self.get_cancel_requested():
                raise TaskCancelledError("the task was cancelled; its container was removed") from None
            if isinstance(exc, OCIExecutorError):  # Covalent shows str(error): name the class too
                raise NodeError(f"{type(exc).__name__}: {exc}") from exc
            raise
        self._write_streams(outcome)
        if not outcome.ok:
            where = ""
            if outcome.phase in ("call_before", "call_after", "load"):
                node = task_metadata.get("node_id", "")
                where = f"electron {task_name(function)!r} (node {node}), {outcome.phase}: "
            raise TaskRuntimeError(f"{where}{outcome.summary()}\n{outcome.traceback}")
        return transportable(outcome)

    async def cancel(self, task_metadata: dict[str, Any], job_handle: Any) -> bool:
        """Kill and remove the task's container (Covalent calls this on ``ct.cancel``).

        Returns False when there is no container to kill or it could not be killed.
        """
        handle = json.loads(job_handle) if isinstance(job_handle, str) else job_handle
        if not isinstance(handle, dict) or not isinstance(handle.get("container"), dict):
            return False
        fields = {f.name for f in dataclasses.fields(Container)}
        container = Container(**{k: v for k, v in handle["container"].items() if k in fields})
        config = BackendConfig(address=container.address or None, ssh_identity=container.ssh_identity or None)
        backend = shared_backend(container.backend, config)

        def kill() -> bool:
            try:
                backend.stop(container)
                backend.remove(container)
            except ContainerNotFoundError:
                return True  # already gone
            except OCIExecutorError as exc:
                log.warning("could not cancel container %s: %s", container.id[:12], exc)
                return False
            return True

        return await asyncio.to_thread(kill)

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


def _signature() -> inspect.Signature:
    """``OCIExecutor(image=..., backend=..., ...)`` as tools and users see it."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(name, keyword, default=None) for name in settings.NAMES]
    parameters.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(parameters)


OCIExecutor.__init__.__signature__ = _signature()  # type: ignore[attr-defined]
