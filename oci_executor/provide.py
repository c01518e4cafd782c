"""Give a task the modules its image lacks, just before it is sent to a runner.

:func:`image_inventory` asks an idle runner once per image ID what the image can import (a
QUERY frame, answered with JSON: nothing the container writes is unpickled).
:func:`provide_modules` plans with :mod:`oci_executor.modules` and attaches the sources to
travel to the payload. :func:`requirements_to_add` is the seam for declared environments: the
pinned requirements the task needs that its image lacks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from oci_executor import modules, protocol
from oci_executor.channel import ChannelClosed, FrameReader
from oci_executor.errors import ModuleUnavailableError
from oci_executor.execute import TaskNotStarted
from oci_executor.lifecycle import RunnerHandle
from oci_executor.task import TaskPayload

log = logging.getLogger(__name__)

_INVENTORIES: dict[str, modules.Inventory] = {}
_PLANS: dict[tuple[frozenset[str], str, tuple[str, ...]], modules.ModulePlan] = {}
_LOCK = threading.Lock()


def image_inventory(runner: RunnerHandle) -> modules.Inventory:
    """What the runner's image can import; asked once per image ID in this process."""
    key = runner.container.image_id or runner.container.image
    with _LOCK:
        known = _INVENTORIES.get(key)
    if known is not None:
        return known
    try:
        runner.channel.send(protocol.frame(protocol.QUERY))
        _, answer = FrameReader(runner.channel).control(protocol.INVENTORY)
    except ChannelClosed as exc:  # a warm runner that went away: the task can start elsewhere
        raise TaskNotStarted(str(exc)) from None
    names = answer.get("modules", [])
    versions = answer.get("versions", {})
    inventory = modules.Inventory(
        frozenset(str(n) for n in names if isinstance(n, str)),
        {str(k): str(v) for k, v in versions.items() if isinstance(v, str)}
        if isinstance(versions, dict)
        else {},
    )
    with _LOCK:
        _INVENTORIES[key] = inventory
    return inventory


def referenced(payload: TaskPayload) -> set[str]:
    """The modules the task's pickles name (inputs walked only so far: see :mod:`modules`)."""
    found = modules.referenced(payload.code_pickles())
    return found | modules.referenced(payload.input_pickles(), modules.INPUT_SCAN_BYTES)


def requirements_to_add(payload: TaskPayload, inventory: modules.Inventory) -> list[str]:
    """The ``name==version`` pins (this host's versions) of the installed distributions the
    task's pickles reference that its image lacks: what a declared environment should add."""
    return modules.plan(referenced(payload), inventory).requirements


def provide_modules(runner: RunnerHandle, payload: TaskPayload, extra: Sequence[str] = ()) -> None:
    """Attach to ``payload`` the module sources its image lacks, or raise naming what cannot travel."""
    names = referenced(payload)
    inventory = image_inventory(runner)
    key = (frozenset(names), runner.container.image_id or runner.container.image, tuple(extra))
    with _LOCK:
        plan = _PLANS.get(key)
    if plan is None or not plan.fresh():  # a plan is made once, until a source file changes
        plan = modules.plan(names, inventory, extra=extra)
        with _LOCK:
            _PLANS[key] = plan
    installs = any(step.kind == "pip" for step in payload.before)
    if plan.missing and installs:
        log.info(
            "module(s) %s are not in the image; the task's pip step may install them", ", ".join(plan.missing)
        )
    elif plan.missing:
        raise ModuleUnavailableError(
            f"the task needs module(s) {', '.join(sorted(set(plan.missing)))}, which image "
            f"{runner.container.image!r} does not have and which cannot travel with the task as source "
            f"(compiled code, or not found on this host; this host has: {', '.join(modules.pin(t) for t in sorted(set(plan.missing)))}). "
            "Use an image that has them (e.g. a Dockerfile with `pip install` of those versions), or "
            "install them in the task with DepsPip.",
            image=runner.container.image,
        )
    if not plan.files:
        return
    payload.module_digest = plan.digest()
    if payload.module_digest not in runner.modules_sent:  # once per container: later tasks reuse them
        log.info(
            "shipping module(s) %s with the task (not in image %s)",
            ", ".join(plan.shipped),
            runner.container.image,
        )
        payload.module_files = plan.files
        runner.modules_sent.add(payload.module_digest)
