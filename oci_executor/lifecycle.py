"""A container's lifecycle: create it with a resident runner, greet the runner, remove it.

:func:`start_runner` creates a container whose main process is the bootstrap, attaches to
its stdin/stdout, ships the runner and cloudpickle in one frame, and checks the image's Python
from the runner's first answer (no separate exec). :func:`discard` closes the channel (the
runner exits and the engine removes the container) and removes the container for good.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cloudpickle

from oci_executor import protocol, trace
from oci_executor.backend import Backend, Container, ContainerSpec
from oci_executor.channel import Channel, ChannelClosed, FrameReader
from oci_executor.errors import ConfigurationError, PythonVersionMismatchError, RunnerError
from oci_executor.task import host_python_version

log = logging.getLogger(__name__)


@dataclass(eq=False)
class RunnerHandle:
    """The host's handle on a live container: its resident runner and the channel to it."""

    backend: Backend
    container: Container
    channel: Channel
    spec: ContainerSpec
    started: float = field(default_factory=time.monotonic)

    def expires_in(self) -> float:
        """Seconds until the runner ends itself (its ``max_lifetime``)."""
        return self.spec.max_lifetime - (time.monotonic() - self.started)


@functools.cache
def runner_modules() -> bytes:
    """The MODULES frame body: the runner, the protocol and cloudpickle, as sources."""
    package = importlib.resources.files("oci_executor")
    modules: dict[str, tuple[bool, str]] = {
        "oci_runner": (False, package.joinpath("runner.py").read_text(encoding="utf-8")),
        "oci_runner_task": (False, package.joinpath("runner_task.py").read_text(encoding="utf-8")),
        protocol.PROTOCOL_MODULE: (False, package.joinpath("protocol.py").read_text(encoding="utf-8")),
        "oci_inside": (False, package.joinpath("inside.py").read_text(encoding="utf-8")),
    }
    root = Path(cloudpickle.__file__).parent
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (is_package, path.read_text(encoding="utf-8"))
    return json.dumps(modules).encode("utf-8")


def runner_command(spec: ContainerSpec) -> tuple[str, ...]:
    """The container's main process: the bootstrap, with its idle and lifetime limits."""
    return (spec.python, "-c", protocol.BOOTSTRAP, f"{spec.idle_timeout:g}", f"{spec.max_lifetime:g}")


def start_runner(
    backend: Backend, spec: ContainerSpec, on_phase: Callable[[str], None] | None = None
) -> RunnerHandle:
    """Create a container for ``spec`` with a resident runner, ready for tasks.

    ``on_phase`` is told when each step begins: ``create`` (pull, create and start),
    ``attach``, ``hello`` (ship the runner, check its Python)."""
    phase = on_phase or (lambda name: None)
    unsupported = backend.unsupported(spec)
    if unsupported:
        why = backend.auto_reason
        raise ConfigurationError(
            f"the {backend.name} backend cannot honour the option(s) {', '.join(unsupported)}"
            + (f" (backend='auto' chose it because {why})" if why else "")
            + f": {backend.explain_unsupported(unsupported, spec)}."
        )
    spec = dataclasses.replace(spec, command=runner_command(spec))
    phase("create")
    container = backend.create(spec)
    channel: Channel | None = None
    try:
        phase("attach")
        channel = backend.attach(container)
        phase("hello")
        _greet(channel, container)
    except BaseException:
        if channel is not None:
            channel.close()
        _remove(backend, container)
        raise
    return RunnerHandle(backend, container, channel, spec)


def _greet(channel: Channel, container: Container) -> None:
    """Ship the runner's modules and check the image's Python from its answers."""
    channel.send(protocol.frame(protocol.MODULES, runner_modules()))
    reader = FrameReader(channel)
    try:
        _, hello = reader.control(protocol.HELLO)
        version = str(hello.get("python", "?"))
        host = host_python_version()
        if version != host:
            raise PythonVersionMismatchError(container.image, version, host)
        _, ready = reader.control(protocol.READY)
    except ChannelClosed:
        detail = channel.diagnostics()[-2000:]
        raise RunnerError(
            f"the runner in a container of image {container.image!r} exited before it was ready"
            + (f":\n{detail}" if detail else "")
            + f"\nCheck that {container.python!r} in the image is a working Python {host_python_version()}."
        ) from None
    if ready.get("version") != protocol.VERSION:
        raise RunnerError(
            f"the runner speaks protocol version {ready.get('version')}, this host {protocol.VERSION}: "
            "the container was started by another oci-executor version. It has been removed; retry."
        )


def discard(runner: RunnerHandle) -> None:
    """End a runner for good: close its channel and remove its container (traced: see
    :func:`oci_executor.trace.removal`)."""
    start, began = time.time(), time.monotonic()
    runner.channel.close()
    _remove(runner.backend, runner.container)
    trace.removal(runner.container, runner.spec.labels, start, time.monotonic() - began)


def _remove(backend: Backend, container: Container) -> None:
    try:
        backend.remove(container)
    except Exception as exc:  # noqa: BLE001 - never mask the task's own error
        log.warning("could not remove container %s: %s", container.id[:12], exc)
