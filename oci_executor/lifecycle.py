"""Container lifecycle, kept apart from task execution.

:func:`open_container` creates a container, checks its Python once per image ID, and
guarantees removal when the block ends, whatever happens inside. :func:`execute` runs one
task in an open container and can be called many times on the same one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import posixpath
import threading
import uuid
from collections.abc import Iterator

from oci_executor.backend import Backend, Container, ContainerSpec
from oci_executor.errors import (
    ConfigurationError,
    ImageHasNoPythonError,
    OutOfMemoryError,
    PythonVersionMismatchError,
    RunnerError,
    TaskTimeoutError,
)
from oci_executor.task import (
    OUT_DIR,
    RUNNER_NAME,
    TaskOutcome,
    TaskPayload,
    host_python_version,
    read_outcome,
)

log = logging.getLogger(__name__)

HEARTBEAT_NAME = "heartbeat"
VERSION_PROBE = "import sys; print('%d.%d' % sys.version_info[:2])"

_checked_images: dict[tuple[str, str, str], str] = {}
_checked_lock = threading.Lock()


def check_python(backend: Backend, container: Container) -> str:
    """The image's Python ``major.minor``; raise if missing or not the host's. Cached per image ID."""
    key = (backend.name, container.image_id, container.python)
    with _checked_lock:
        version = _checked_images.get(key)
    if version is None:
        result = backend.exec(container, [container.python, "-c", VERSION_PROBE])
        version = result.stdout.decode(errors="replace").strip()
        if result.exit_code != 0 or not version:
            raise ImageHasNoPythonError(
                f"image {container.image!r} has no working Python at {container.python!r} "
                f"(exit code {result.exit_code}: {result.stderr.decode(errors='replace').strip()[:300]}). "
                f"Use an image with Python {host_python_version()}, or set the executor's "
                "'python' option to the interpreter's path in the image."
            )
    host = host_python_version()
    if version != host:
        raise PythonVersionMismatchError(container.image, version, host)
    with _checked_lock:
        _checked_images[key] = version
    return version


@contextlib.contextmanager
def open_container(backend: Backend, spec: ContainerSpec) -> Iterator[Container]:
    """Create a container for ``spec``, check its Python, and remove it when the block ends."""
    unsupported = sorted(set(spec.options_set()) - backend.supported_options)
    if unsupported:
        raise ConfigurationError(
            f"the {backend.name} backend cannot honour the option(s) {', '.join(unsupported)}; "
            "use a container engine backend (docker or podman) or remove them"
        )
    container = backend.create(spec)
    try:
        check_python(backend, container)
        yield container
    finally:
        try:
            backend.remove(container)
        except Exception:  # noqa: BLE001 - never mask the task's own error
            log.exception("could not remove container %s", container.id)


def execute(
    backend: Backend,
    container: Container,
    payload: TaskPayload,
    *,
    workdir: str | None = None,
    time_limit: float | None = None,
    memory: int | None = None,
) -> TaskOutcome:
    """Ship ``payload`` into ``container``, run it, and bring its outcome back.

    A ``time_limit`` (seconds) kills the container when the task runs over it. ``memory`` is
    the container's limit in bytes, named in the error if the task runs out of it.
    """
    task_dir = posixpath.join(container.scratch_dir, f"task-{uuid.uuid4().hex[:12]}")
    heartbeat = posixpath.join(container.scratch_dir, HEARTBEAT_NAME)
    backend.copy_in(container, task_dir, payload.files(heartbeat=heartbeat, workdir=workdir))
    timed_out = threading.Event()
    timer = None
    if time_limit:

        def expire() -> None:
            timed_out.set()
            backend.stop(container)

        timer = threading.Timer(time_limit, expire)
        timer.daemon = True
        timer.start()
    try:
        result = backend.exec(container, [container.python, posixpath.join(task_dir, RUNNER_NAME), task_dir])
    except Exception:
        if not timed_out.is_set():
            raise
    finally:
        if timer is not None:
            timer.cancel()
    if timed_out.is_set():  # the kill broke the exec, whether it raised or returned
        raise _timeout(time_limit)
    try:
        files = backend.copy_out(container, posixpath.join(task_dir, OUT_DIR))
        outcome = read_outcome(files, result.exit_code, result.stderr)
    except RunnerError:
        if memory and backend.oom_killed(container):
            raise OutOfMemoryError(
                f"the task ran out of memory: it needed more than its limit of {_size(memory)} "
                "and the kernel killed it. Raise the executor's 'memory' option or make the task use less."
            ) from None
        raise
    return dataclasses.replace(outcome, container_id=container.id)


def _timeout(time_limit: float | None) -> TaskTimeoutError:
    return TaskTimeoutError(
        f"the task ran over its time_limit of {time_limit:g} s and was killed (its container was removed). "
        "Raise the executor's time_limit or make the task faster."
    )


def _size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:g} {unit} ({size} bytes)"
    return f"{size} bytes"
