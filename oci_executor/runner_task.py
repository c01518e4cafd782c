"""One task inside its child process: Covalent's call_before steps (bash, pip, call), the
function, the call_after steps, and the result record with the value's pickled bytes.

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


def _run_step(
    step: dict[str, Any],
    blobs: list[bytes],
    loads: Callable[[bytes], Any],
    retvals: dict[str, list[Any]],
    files: Any = None,
) -> None:
    kind = step["kind"]
    if kind == "put":  # a host file, staged as it arrived, moved into place now
        files.put(step["source"], step["dest"])
    elif kind == "get":  # a file sent back to the host after the value
        files.get(step["src"])
    elif kind == "bash":
        for command in step["commands"]:
            sys.stdout.flush()
            sys.stderr.flush()
            subprocess.run(command, shell=True, check=True, stdin=subprocess.DEVNULL)
    elif kind == "pip":
        argv = [sys.executable, "-m", "pip", "install", "--no-input"]
        if step.get("requirements"):
            req = os.path.join(os.getcwd(), ".oci-requirements.txt")
            with open(req, "w", encoding="utf-8") as handle:
                handle.write(step["requirements"])
            argv += ["-r", req]
        else:
            argv += list(step["packages"])
        sys.stdout.flush()
        sys.stderr.flush()
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    elif kind == "call":
        function = loads(blobs[step["function"]])
        value = function(*loads(blobs[step["args"]]), **loads(blobs[step["kwargs"]]))
        key = step.get("retval_key")
        if key:
            retvals.setdefault(key, []).append(value)
    else:
        raise ValueError(f"unknown step kind {kind!r}")


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
    phase, label = "load", ""
    try:
        if header.get("modules_digest"):  # modules that travel with the task, first on sys.path
            files.add_modules(header["modules_digest"], {p: blobs[i] for p, i in header["modules"].items()})
        if workdir:
            os.makedirs(workdir, exist_ok=True)
            os.chdir(workdir)
        import cloudpickle

        loads = cloudpickle.loads
        function = loads(blobs[header["function"]])
        args = [loads(blobs[i]) for i in header["args"]]
        kwargs = {k: loads(blobs[i]) for k, i in header["kwargs"].items()}

        phase = "call_before"
        retvals: dict[str, list[Any]] = {}
        for step in header["before"]:
            label = step.get("label", "")
            _run_step(step, blobs, loads, retvals, files)
        label = ""
        for key, values in retvals.items():
            single = len(values) == 1 and key != RESERVED_RETVAL_KEY_FILES
            kwargs[key] = values[0] if single else values

        phase = "task"
        output = function(*args, **kwargs)

        phase = "call_after"
        for step in header["after"]:
            label = step.get("label", "")
            _run_step(step, blobs, loads, {}, files)
        label = ""

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
        failure = _failure(phase, exc, label)
        if _hit_process_limit(exc, limit):
            failure["limit"] = "pids"
        return failure, b""
    return record, value
