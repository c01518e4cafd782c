"""A task on the host side: its payload going in, its outcome coming back.

A :class:`TaskPayload` holds the task as plain cloudpickled bytes (so the image needs no
cloudpickle of its own); :func:`outcome_from_record` turns the runner's checked JSON record and
the value's raw bytes into a :class:`TaskOutcome`. Pickled user objects are never unpickled
here. (The Covalent adapter, :mod:`oci_executor.covalent.wrapper`, builds payloads from what
Covalent hands an executor.)

It also holds the events API a task calls, :func:`progress` and :func:`event`. Inside a
container the runner provides its own ``oci_executor.task`` with these two functions (see
:mod:`oci_executor.inside`), whose events reach the server's log and the trace live; this
host-side version, for a task run outside a container, checks them alike and logs them.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from oci_executor.errors import ResultSerializationError, RunnerError, TaskSerializationError
from oci_executor.inside import encode_event

log = logging.getLogger(__name__)


def progress(fraction: float, message: str = "", **data: Any) -> None:
    """Report how far the task is (0 to 1), with a short message: ``progress(0.4, "epoch 4/10")``."""
    log.info("progress %s", encode_event("progress", fraction, message, data).decode("utf-8").strip())


def event(message: str, **data: Any) -> None:
    """Report something that happened, with JSON-able fields: ``event("checkpoint", step=400)``."""
    log.info("event %s", encode_event("event", None, message, data).decode("utf-8").strip())


@dataclass(frozen=True)
class Step:
    """A call-before or call-after step, in the runner's terms."""

    kind: str  # "bash", "pip" or "call"
    data: Mapping[str, Any]

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.data}


@dataclass
class TaskPayload:
    """A task ready to ship: pickled function and inputs, and its steps."""

    function: bytes
    args: list[bytes]
    kwargs: dict[str, bytes]
    before: list[Step] = field(default_factory=list)
    after: list[Step] = field(default_factory=list)

    def encode(self, workdir: str | None = None) -> tuple[list[bytes], dict[str, Any]]:
        """The payload's blobs (sent as they are, never concatenated) and the JSON layout
        saying which blob is which, for :func:`protocol.task_header`."""
        blobs: list[bytes] = []

        def add(blob: bytes) -> int:
            blobs.append(blob)
            return len(blobs) - 1

        def step(s: Step) -> dict[str, Any]:
            record = s.as_record()
            for key in ("function", "args", "kwargs"):
                if key in record:
                    record[key] = add(record[key])
            return record

        layout = {
            "function": add(self.function),
            "args": [add(a) for a in self.args],
            "kwargs": {k: add(v) for k, v in self.kwargs.items()},
            "before": [step(s) for s in self.before],
            "after": [step(s) for s in self.after],
            "workdir": workdir,
        }
        return blobs, layout

    def release(self) -> None:
        """Drop the pickled bytes once they are sent, so the driver does not hold them twice."""
        self.function, self.args, self.kwargs = b"", [], {}
        self.before, self.after = [], []


@dataclass(frozen=True)
class TaskOutcome:
    """What came back from one run of the runner."""

    ok: bool
    stdout: str
    stderr: str
    value: bytes | bytearray | None = None
    value_repr: str = ""
    python_version: str = ""
    cloudpickle_version: str = ""
    error_type: str = ""
    error_message: str = ""
    traceback: str = ""
    phase: str = ""
    container_id: str = ""

    def load_value(self) -> Any:
        """Unpickle the return value, as Covalent's client does: only for a task you trust.

        Nothing in oci-executor calls this; the executor hands the raw bytes to Covalent.
        """
        assert self.value is not None
        return cloudpickle.loads(self.value)

    def summary(self) -> str:
        """``Type: message`` of the task's exception, for Covalent's error field."""
        return f"{self.error_type}: {self.error_message}"


def payload_from_callable(
    function: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> TaskPayload:
    """A plain callable and its inputs, pickled with cloudpickle, as a :class:`TaskPayload`."""
    return TaskPayload(
        function=pickled(function, "function"),
        args=[pickled(a, "arguments") for a in args],
        kwargs={k: pickled(v, "arguments") for k, v in kwargs.items()},
    )


def pickled(obj: Any, what: str) -> bytes:
    """``cloudpickle.dumps(obj)``, or a :class:`TaskSerializationError` naming ``what``."""
    try:
        return cloudpickle.dumps(obj)
    except Exception as exc:
        raise TaskSerializationError(
            f"cannot pickle the task's {what}: {type(exc).__name__}: {exc}. "
            "Pass only picklable objects (no open files, locks, sockets or generators); "
            "create such resources inside the task instead."
        ) from exc


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="backslashreplace")


def outcome_from_record(
    record: Mapping[str, Any], value: bytes | bytearray, stdout: str, stderr: str
) -> TaskOutcome:
    """A :class:`TaskOutcome` from a checked record and the value's raw bytes."""
    if record["ok"]:
        if len(value) != record["size"]:
            raise RunnerError(
                f"the task's result is incomplete: {len(value)} of {record['size']} bytes arrived. "
                "Check that the container has disk and memory left."
            )
        return TaskOutcome(
            ok=True,
            stdout=stdout,
            stderr=stderr,
            value=value,
            value_repr=record.get("repr", ""),
            python_version=record.get("python", ""),
            cloudpickle_version=record.get("cloudpickle", ""),
        )
    if record.get("phase") == "result":
        raise ResultSerializationError(
            f"the task returned a value that cannot be pickled: {record.get('type')}: {record.get('message')}. "
            "Return plain data (numbers, strings, lists, dicts, arrays) and keep open files, "
            "locks, sockets and generators inside the task."
        )
    return TaskOutcome(
        ok=False,
        stdout=stdout,
        stderr=stderr,
        error_type=record.get("type", ""),
        error_message=record.get("message", ""),
        traceback=record.get("traceback", ""),
        phase=record.get("phase", ""),
    )


def host_python_version() -> str:
    """``major.minor`` of the running interpreter."""
    return ".".join(platform.python_version_tuple()[:2])
