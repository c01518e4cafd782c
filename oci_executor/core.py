"""The engine core's entry point: run one task on a warm or new container.

:func:`run_task` ties the three jobs together: the pool hands out a runner
(:mod:`oci_executor.pool`), whose container :mod:`oci_executor.lifecycle` created, and
:mod:`oci_executor.execute` runs the task on it. No Covalent here: the Covalent adapter
(:mod:`oci_executor.covalent`) and any other caller build on this.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from oci_executor import environments, provide, secrets, settings
from oci_executor.backend import Backend, Container
from oci_executor.errors import ProcessLimitError
from oci_executor.execute import TaskNotStarted, execute, not_started
from oci_executor.labels import DISPATCH_LABEL, MANAGED_LABEL, NODE_LABEL, OWNER_LABEL
from oci_executor.lifecycle import start_runner
from oci_executor.owner import this_owner
from oci_executor.parsing import check_time_limit
from oci_executor.pool import POOL, pool_key
from oci_executor.registry import shared_backend
from oci_executor.task import TaskOutcome, TaskPayload
from oci_executor.trace import TaskTrace

log = logging.getLogger(__name__)


def our_labels(dispatch_id: str, node_id: str) -> dict[str, str]:
    """The labels every container of ours carries: the dispatch and node it was made for, and
    the process that drives it (see :mod:`oci_executor.owner`)."""
    return {
        MANAGED_LABEL: "true",
        DISPATCH_LABEL: dispatch_id,
        NODE_LABEL: node_id,
        OWNER_LABEL: this_owner(),
    }


def run_task(
    values: Mapping[str, Any],
    payload: TaskPayload,
    *,
    dispatch_id: str = "",
    node_id: str = "",
    time_limit: Any = None,
    on_container: Callable[[Container], None] | None = None,
    backend: Backend | None = None,
    name: str = "",
) -> TaskOutcome:
    """Run ``payload`` with the checked option ``values`` (see :mod:`oci_executor.settings`).

    ``on_container`` is called with the container once the task has one. A pooled container
    that vanished before the task started is replaced; the task is never lost to it.
    ``backend`` overrides the process's shared backend for ``values["backend"]`` (tests).
    The task is traced (:mod:`oci_executor.trace`) under the dispatch, node and ``name``.
    """
    trace = TaskTrace(dispatch_id, node_id, name)
    try:
        outcome = _run(values, payload, dispatch_id, node_id, time_limit, on_container, backend, trace)
    except BaseException as exc:
        trace.finish("error", f"{type(exc).__name__}: {exc}")
        raise
    trace.finish("ok" if outcome.ok else "failed", "" if outcome.ok else outcome.summary())
    return outcome


def _run(
    values: Mapping[str, Any],
    payload: TaskPayload,
    dispatch_id: str,
    node_id: str,
    time_limit: Any,
    on_container: Callable[[Container], None] | None,
    backend: Backend | None,
    trace: TaskTrace,
) -> TaskOutcome:
    secret_values = secrets.resolve(values["secrets"], values["secrets_file"])
    spec = settings.container_spec(values, our_labels(dispatch_id, node_id))
    backend = backend or shared_backend(values["backend"], settings.backend_config(values))
    seconds = check_time_limit(time_limit)
    base = backend.adapt_spec(spec, seconds)
    declared = environments.declared_of(values, payload)
    ship = values.get("ship_modules", True)
    names = provide.referenced(payload) if ship else set()
    declared += provide.known_pins(names, base.image, declared) if ship else ()
    spec = environments.apply(backend, base, declared, values)
    key = pool_key(backend, spec, values["reuse"], dispatch_id)
    limit = values["max_containers"] or os.cpu_count() or 1
    while True:
        runner, reused = POOL.acquire(
            key, limit, functools.partial(start_runner, backend, spec, trace.phase), min_life=seconds or 0.0
        )
        trace.container(runner.container, warm=reused)
        try:
            if on_container is not None:
                on_container(runner.container)
            if ship:
                provide.provide_modules(runner, payload, names, values.get("extra_modules", ()), declared)
            outcome = execute(
                runner,
                payload,
                workdir=spec.workdir,
                time_limit=seconds,
                memory=spec.memory,
                pids_limit=spec.pids_limit,
                secrets=secret_values,
                trace=trace,
            )
        except provide.NeedsPackages as exc:  # once per image: later tasks add the pins up front
            POOL.release(key, runner, reusable=False)
            log.info("image %s lacks %s: adding them to the task's environment", base.image, exc)
            declared += exc.pins
            spec = environments.apply(backend, base, declared, values)
            key = pool_key(backend, spec, values["reuse"], dispatch_id)
            continue
        except TaskNotStarted as exc:
            POOL.release(key, runner, reusable=False)
            if reused:
                log.info(
                    "warm container %s was gone; starting the task on a new one", runner.container.id[:12]
                )
                continue
            raise not_started(runner, exc) from None
        except ProcessLimitError:  # the runner killed the task's processes: it serves the next task
            POOL.release(
                key, runner, reusable=values["reuse"] != "never", keep_warm=float(values["keep_warm"])
            )
            raise
        except BaseException:
            POOL.release(key, runner, reusable=False)
            raise
        POOL.release(key, runner, reusable=values["reuse"] != "never", keep_warm=float(values["keep_warm"]))
        return outcome
