"""A task on the host side: its payload going in, its outcome coming back.

:func:`build_task` turns what Covalent hands an executor (its ``wrapper_fn`` partial and
TransportableObject inputs) into plain cloudpickled bytes, so the image needs no Covalent and
no cloudpickle. :func:`outcome_from_record` turns the runner's checked JSON record and the
value's raw bytes into a :class:`TaskOutcome`. Pickled user objects are never unpickled here.
"""

from __future__ import annotations

import base64
import functools
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from oci_executor.errors import ResultSerializationError, RunnerError, TaskSerializationError


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
    name: str = "task"

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

    def transportable(self) -> Any:
        """The return value as Covalent's TransportableObject, built without unpickling it."""
        from covalent._workflow.transport import TransportableObject

        assert self.value is not None
        obj = TransportableObject.__new__(TransportableObject)
        obj._object = base64.b64encode(self.value).decode("utf-8")
        obj._object_string = self.value_repr
        obj._header = {
            "py_version": self.python_version,
            "cloudpickle_version": self.cloudpickle_version,
            "attrs": {"doc": "", "name": ""},
        }
        return obj

    def load_value(self) -> Any:
        """Unpickle the return value, as Covalent's client does: only for a task you trust.

        Nothing in oci-executor calls this; the executor hands the raw bytes to Covalent.
        """
        assert self.value is not None
        return cloudpickle.loads(self.value)

    def summary(self) -> str:
        """``Type: message`` of the task's exception, for Covalent's error field."""
        return f"{self.error_type}: {self.error_message}"


def _dumps(obj: Any, what: str) -> bytes:
    try:
        return cloudpickle.dumps(obj)
    except Exception as exc:
        raise TaskSerializationError(
            f"cannot pickle the task's {what}: {type(exc).__name__}: {exc}. "
            "Pass only picklable objects (no open files, locks, sockets or generators); "
            "create such resources inside the task instead."
        ) from exc


def _raw(transportable: Any) -> bytes:
    """The cloudpickle bytes inside a Covalent TransportableObject."""
    return base64.b64decode(transportable._object.encode("utf-8"))


def _is_transportable(obj: Any) -> bool:
    return type(obj).__name__ == "TransportableObject" and hasattr(obj, "_object")


def _steps(entries: Sequence[Any]) -> list[Step]:
    from covalent._workflow.depsbash import apply_bash_commands
    from covalent._workflow.depspip import apply_pip_deps

    steps = []
    for fn_obj, args_obj, kwargs_obj, retval_key in entries:
        fn = fn_obj.get_deserialized()
        if fn is apply_bash_commands:
            (commands,) = args_obj.get_deserialized()
            steps.append(Step("bash", {"commands": list(commands)}))
        elif fn is apply_pip_deps:
            packages, requirements = (list(args_obj.get_deserialized()) + [[], ""])[:2]
            steps.append(Step("pip", {"packages": list(packages), "requirements": requirements}))
        else:
            steps.append(
                Step(
                    "call",
                    {
                        "function": _raw(fn_obj),
                        "args": _raw(args_obj),
                        "kwargs": _raw(kwargs_obj),
                        "retval_key": retval_key or "",
                    },
                )
            )
    return steps


def build_task(function: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> TaskPayload:
    """Unwrap Covalent's task wrapper (or take a plain callable) into a :class:`TaskPayload`."""
    from covalent.executor.utils.wrappers import wrapper_fn

    if isinstance(function, functools.partial) and function.func is wrapper_fn:
        fn_obj, call_before, call_after = function.args[:3]
        return TaskPayload(
            function=_raw(fn_obj),
            args=[_raw(a) if _is_transportable(a) else _dumps(a, "arguments") for a in args],
            kwargs={
                k: _raw(v) if _is_transportable(v) else _dumps(v, "arguments") for k, v in kwargs.items()
            },
            before=_steps(call_before),
            after=_steps(call_after),
            name=str(fn_obj.attrs.get("name") or "task"),
        )
    return TaskPayload(
        function=_dumps(function, "function"),
        args=[_dumps(a, "arguments") for a in args],
        kwargs={k: _dumps(v, "arguments") for k, v in kwargs.items()},
        name=getattr(function, "__name__", "task"),
    )


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
