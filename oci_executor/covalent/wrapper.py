"""What Covalent hands an executor, turned into our payload, and our outcome turned back.

Covalent calls ``run(partial(wrapper_fn, TransportableObject(fn), call_before, call_after),
args, kwargs)`` with TransportableObject inputs. :func:`build_task` takes the cloudpickle bytes
out of those objects (no Covalent is needed in the image) and turns DepsBash/DepsPip/DepsCall
into plain steps; :func:`transportable` builds the result's TransportableObject from the raw
value bytes, without unpickling them.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from oci_executor.task import Step, TaskOutcome, TaskPayload, payload_from_callable, pickled


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
            args=[_raw(a) if _is_transportable(a) else pickled(a, "arguments") for a in args],
            kwargs={
                k: _raw(v) if _is_transportable(v) else pickled(v, "arguments") for k, v in kwargs.items()
            },
            before=_steps(call_before),
            after=_steps(call_after),
        )
    return payload_from_callable(function, args, kwargs)


def transportable(outcome: TaskOutcome) -> Any:
    """The return value as Covalent's TransportableObject, built without unpickling it."""
    from covalent._workflow.transport import TransportableObject

    assert outcome.value is not None
    obj = TransportableObject.__new__(TransportableObject)
    obj._object = base64.b64encode(outcome.value).decode("utf-8")
    obj._object_string = outcome.value_repr
    obj._header = {
        "py_version": outcome.python_version,
        "cloudpickle_version": outcome.cloudpickle_version,
        "attrs": {"doc": "", "name": ""},
    }
    return obj


def task_name(function: Callable[..., Any]) -> str:
    """The electron's function name (for logs and the trace), read without unpickling it."""
    from covalent.executor.utils.wrappers import wrapper_fn

    if isinstance(function, functools.partial) and function.func is wrapper_fn:
        try:
            return str(function.args[0].attrs.get("name", ""))
        except (AttributeError, IndexError, KeyError):
            return ""
    return str(getattr(function, "__name__", ""))
