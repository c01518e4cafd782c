"""Give a task the modules its image lacks, just before it is sent to a runner.

:func:`image_inventory` asks an idle runner once per image ID what the image can import (a
QUERY frame, answered with JSON: nothing the container writes is unpickled).
:func:`provide_modules` plans with :mod:`oci_executor.modules` and attaches the sources to
travel to the payload. A module that cannot travel (compiled code, Covalent) but that an
installed distribution of this host provides becomes a ``name==version`` pin of the task's
declared environment: :func:`provide_modules` raises :class:`NeedsPackages` with the pins when the
first runner of an image lacks it, and :func:`known_pins` adds them up front once the image's
inventory is known. What the declared environment covers is neither missing nor shipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from packaging.requirements import Requirement

from oci_executor import modules, protocol
from oci_executor.channel import ChannelClosed, FrameReader
from oci_executor.errors import ModuleUnavailableError
from oci_executor.execute import TaskNotStarted
from oci_executor.lifecycle import RunnerHandle
from oci_executor.task import TaskPayload

log = logging.getLogger(__name__)

_INVENTORIES: dict[str, modules.Inventory] = {}
_BY_NAME: dict[str, modules.Inventory] = {}  # by image name: the last seen, for pins up front
_PLANS: dict[tuple[frozenset[str], str, tuple[str, ...], tuple[str, ...]], modules.ModulePlan] = {}
_LOCK = threading.Lock()


class NeedsPackages(Exception):
    """The runner's image lacks modules that cannot travel but that these pins provide: the task
    starts on a container whose environment has them (the runner is not used)."""

    def __init__(self, pins: tuple[str, ...]) -> None:
        super().__init__(", ".join(pins))
        self.pins = pins


def image_inventory(runner: RunnerHandle) -> modules.Inventory:
    """What the runner's image can import; asked once per image ID in this process."""
    key = runner.container.image_id or runner.container.image
    with _LOCK:
        known = _INVENTORIES.get(key)
    if known is not None:
        _BY_NAME[runner.container.image] = known
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
        _INVENTORIES[key] = _BY_NAME[runner.container.image] = inventory
    return inventory


def referenced(payload: TaskPayload) -> set[str]:
    """The modules the task's pickles name (inputs walked only so far: see :mod:`modules`)."""
    found = modules.referenced(payload.code_pickles())
    return found | modules.referenced(payload.input_pickles(), modules.INPUT_SCAN_BYTES)


def requirements_to_add(payload: TaskPayload, inventory: modules.Inventory) -> list[str]:
    """The ``name==version`` pins (this host's versions) of the installed distributions the
    task's pickles reference that its image lacks."""
    return modules.plan(referenced(payload), inventory).requirements


def covering(inventory: modules.Inventory, declared: Sequence[str]) -> modules.Inventory:
    """``inventory`` with the modules of the distributions ``declared`` names (the environment's)."""
    if not declared:
        return inventory
    tops = {top for r in declared for top in modules.tops_of(Requirement(r).name)}
    return modules.Inventory(inventory.modules | tops, inventory.versions)


def _pins(plan: modules.ModulePlan) -> tuple[str, ...]:
    """This host's pins of the modules ``plan`` misses, if every one of them has a pin."""
    pins = tuple(sorted({modules.pin(top) for top in plan.missing}))
    return pins if pins and all("==" in p for p in pins) else ()


def known_pins(names: set[str], image: str, declared: Sequence[str]) -> tuple[str, ...]:
    """The pins to add up front to ``declared`` for a task referencing ``names`` on ``image``,
    once a runner of that image has said what it can import; else none."""
    with _LOCK:
        inventory = _BY_NAME.get(image)
    return () if inventory is None else _pins(_plan(names, image, inventory, (), declared))


def _plan(
    names: set[str],
    image: str,
    inventory: modules.Inventory,
    extra: Sequence[str],
    declared: Sequence[str],
) -> modules.ModulePlan:
    key = (frozenset(names), image, tuple(extra), tuple(declared))
    with _LOCK:
        plan = _PLANS.get(key)
    if plan is None or not plan.fresh():  # a plan is made once, until a source file changes
        plan = modules.plan(names, covering(inventory, declared), extra=extra)
        with _LOCK:
            _PLANS[key] = plan
    return plan


def provide_modules(
    runner: RunnerHandle,
    payload: TaskPayload,
    names: set[str],
    extra: Sequence[str] = (),
    declared: Sequence[str] = (),
) -> None:
    """Attach to ``payload`` the sources of the modules ``names`` its image and its ``declared``
    environment lack; raise :class:`NeedsPackages` with the pins of those that cannot travel,
    or :class:`ModuleUnavailableError` naming what nothing here provides."""
    image = runner.container.image_id or runner.container.image
    plan = _plan(names, image, image_inventory(runner), extra, declared)
    if plan.missing and _pins(plan):
        raise NeedsPackages(_pins(plan))
    if plan.missing:
        raise ModuleUnavailableError(
            f"the task needs module(s) {', '.join(sorted(set(plan.missing)))}, which image "
            f"{runner.container.image!r} does not have and which no distribution installed on this host "
            "provides, so they can neither travel with the task as source nor be pinned into its "
            "environment. Install them where the tasks are driven (the Covalent server's Python), use "
            "an image that has them, or declare them with packages=[...] or DepsPip.",
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
