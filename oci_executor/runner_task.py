"""One task inside its child process: Covalent's call_before steps (bash, pip, call), the
function, the call_after steps, and the result record with the value's pickled bytes.

As Covalent's ``wrapper_fn``, the call_before steps run before the function and its inputs are
unpickled; a failing step raises :class:`StepFailed` naming the step, its command and its
last output lines.

Shipped into the container beside the runner (as ``oci_runner_task``); standard library only,
apart from the shipped cloudpickle. Keep it free of imports from ``oci_executor`` other than
the protocol.
"""

from __future__ import annotations

import errno
import os
import platform
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any

try:  # the copies shipped with the runner
    import oci_protocol as protocol
    import oci_runner_files as runner_files
except ImportError:  # imported on the host, outside a runner
    from oci_executor import protocol, runner_files

RESERVED_RETVAL_KEY_FILES = "files"


class StepFailed(Exception):
    """A DepsBash/DepsPip/DepsCall step failed: says which step, which command, its last lines."""


STEP_NAMES = {"bash": "DepsBash", "pip": "DepsPip", "call": "DepsCall"}
TAIL_LINES = 20


def _command(argv: str | list[str], what: str) -> None:
    """Run a step's command, echoing its output live; raise :class:`StepFailed` with the last lines."""
    import collections

    sys.stdout.flush()
    sys.stderr.flush()
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    try:
        process = subprocess.Popen(
            argv,
            shell=isinstance(argv, str),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        raise StepFailed(f"{what} could not start: {exc}") from None
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode("utf-8", errors="backslashreplace")
        sys.stdout.write(line)
        tail.append(line.rstrip("\n"))
    status = process.wait()
    sys.stdout.flush()
    if status != 0:
        shown = " ".join(argv) if isinstance(argv, list) else argv
        last = "\n".join(f"    {line}" for line in tail) or "    (no output)"
        raise StepFailed(
            f"{what} failed: command {shown!r} exited with status {status}; its last lines:\n{last}"
        )


def _run_step(
    step: dict[str, Any],
    blobs: list[bytes],
    loads: Callable[[bytes], Any],
    retvals: dict[str, list[Any]],
    files: Any = None,
    what: str = "step",
) -> None:
    kind = step["kind"]
    if kind == "put":  # a host file, staged as it arrived, moved into place now
        files.put(step["source"], step["dest"])
    elif kind == "get":  # a file sent back to the host after the value
        files.get(step["src"])
    elif kind == "bash":
        for command in step["commands"]:
            _command(command, what)
    elif kind == "pip":
        argv = [sys.executable, "-m", "pip", "install", "--no-input"]
        if step.get("requirements"):
            req = os.path.join(os.getcwd(), ".oci-requirements.txt")
            with open(req, "w", encoding="utf-8") as handle:
                handle.write(step["requirements"])
            argv += ["-r", req]
        else:
            argv += list(step["packages"])
        _command(argv, what)
    elif kind == "call":
        function = loads(blobs[step["function"]])
        try:
            value = function(*loads(blobs[step["args"]]), **loads(blobs[step["kwargs"]]))
        except Exception as exc:
            name = getattr(function, "__qualname__", type(function).__name__)
            raise StepFailed(f"{what} ({name}) raised {type(exc).__name__}: {_safe_str(exc)}") from exc
        key = step.get("retval_key")
        if key:
            retvals.setdefault(key, []).append(value)
    else:
        raise ValueError(f"unknown step kind {kind!r}")


def _run_steps(
    phase: str,
    steps: list[dict[str, Any]],
    blobs: list[bytes],
    loads: Callable[[bytes], Any],
    files: Any,
    running: list[str],
) -> dict[str, list[Any]]:
    """Run a phase's steps in order; each failure names the step (``call_before step 2 of 3: DepsBash``).

    ``running`` holds the label the user declared for the step that runs (a hook or a transfer),
    so that a failure names it; it is empty again once every step succeeded."""
    retvals: dict[str, list[Any]] = {}
    for index, step in enumerate(steps, 1):
        what = f"{phase} step {index} of {len(steps)} ({STEP_NAMES.get(step['kind'], step['kind'])})"
        running[:] = [step.get("label", "")]
        _run_step(step, blobs, loads, retvals, files, what)
    running[:] = [""]
    return retvals


def _failure(phase: str, exc: BaseException, step: str = "") -> dict[str, Any]:
    cls = type(exc)
    message = _safe_str(exc)
    trace = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    if step:  # which hook or transfer failed, as the user declared it
        message = f"{phase} step {step}: {message}"
        trace += f"(raised by the {phase} step {step})\n"
    return {
        "ok": False,
        "phase": phase,
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": _cut(message, protocol.MESSAGE_LIMIT),
        "traceback": _cut(trace, protocol.TRACEBACK_LIMIT),
    }


def _safe_str(obj: object) -> str:
    try:
        return str(obj)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the result
        return f"<{type(obj).__name__}>"


def _short_text(value: object) -> str:
    """``str(value)`` for Covalent's result summary, without rendering a huge value whole."""
    limit = protocol.REPR_LIMIT
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return str(bytes(value[:limit]))[:limit]
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        import reprlib

        short = reprlib.Repr()
        short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
        short.maxlist = short.maxtuple = short.maxdict = short.maxset = short.maxfrozenset = 100
        return short.repr(value)[:limit]
    return _safe_str(value)[:limit]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit // 2] + "\n[... cut ...]\n" + text[-limit // 2 :]


def _hit_process_limit(exc: BaseException, limit: Any) -> bool:
    """Whether ``exc`` is a fork or thread start refused because the process limit is reached.

    Such a refusal is EAGAIN (``BlockingIOError``, or "can't start new thread"), which non-blocking
    I/O raises too: a fork tried now, while the task's processes still live, tells them apart.
    """
    refused = (isinstance(exc, OSError) and exc.errno == errno.EAGAIN) or (
        isinstance(exc, RuntimeError) and "can't start new thread" in str(exc)
    )
    if not refused or not isinstance(limit, int) or limit < 1:
        return False
    try:
        pid = os.fork()
    except OSError as probe:
        return probe.errno == errno.EAGAIN
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return False


def perform_task(
    header: dict[str, Any], blobs: list[bytes], files: Any = None
) -> tuple[dict[str, Any], bytes]:
    """Run one task; return its result record and the value's pickled bytes. ``files`` holds
    its staged inbound files and collects the outbound ones (:mod:`oci_executor.runner_files`)."""
    workdir = header.get("workdir")
    os.environ.update(header.pop("secrets", None) or {})  # this process and its children only
    limit = header.get("pids_limit")
    files = files or runner_files.TaskFiles()
    phase, running = "load", [""]
    try:
        if header.get("modules_digest"):  # modules that travel with the task, first on sys.path
            files.add_modules(header["modules_digest"], {p: blobs[i] for p, i in header["modules"].items()})
        if workdir:
            os.makedirs(workdir, exist_ok=True)
            os.chdir(workdir)
        import cloudpickle

        loads = cloudpickle.loads
        # As Covalent's wrapper_fn: the steps first, then the inputs and the function are
        # unpickled (a step may install or create what they import).
        phase = "call_before"
        retvals = _run_steps(phase, header["before"], blobs, loads, files, running)

        phase = "load"
        args = [loads(blobs[i]) for i in header["args"]]
        kwargs = {k: loads(blobs[i]) for k, i in header["kwargs"].items()}
        for key, values in retvals.items():
            single = len(values) == 1 and key != RESERVED_RETVAL_KEY_FILES
            kwargs[key] = values[0] if single else values
        function = loads(blobs[header["function"]])

        phase = "task"
        output = function(*args, **kwargs)

        phase = "call_after"
        _run_steps(phase, header["after"], blobs, loads, files, running)

        phase = "result"
        value = cloudpickle.dumps(output)
        record = {
            "ok": True,
            "size": len(value),
            "repr": _short_text(output),
            "python": platform.python_version(),
            "cloudpickle": cloudpickle.__version__,
        }
        if files.outbound:
            record["files"] = files.sizes()
    except BaseException as exc:  # noqa: BLE001 - everything the task raises is reported
        failure = _failure(phase, exc, running[0])
        if _hit_process_limit(exc, limit):
            failure["limit"] = "pids"
        return failure, b""
    return record, value
