"""The task runner, executed inside the container as ``python runner.py TASK_DIR``.

It needs only the standard library, plus the cloudpickle copy and the protocol module
(``oci_protocol``) shipped beside it in ``TASK_DIR/lib``. It reads ``TASK_DIR/task.pkl``
(written by the host), runs the call-before steps, the function and the call-after steps, and
writes ``out/result.json`` (a JSON record: status, error, traceback), ``out/value.bin`` (the
return value's raw cloudpickle bytes), ``out/stdout`` and ``out/stderr``. It exits 0 whenever
it could write a result, even for a failed task. The host never unpickles what it writes.

Keep this file free of imports from ``oci_executor``: it is copied into images that only
have a Python interpreter.
"""

from __future__ import annotations

import os
import pickle
import platform
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

RESERVED_RETVAL_KEY_FILES = "files"


def _redirect_streams(out_dir: str) -> None:
    """Send fds 1 and 2 (and so every subprocess' output) to files in ``out_dir``."""
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, name in ((1, "stdout"), (2, "stderr")):
        target = os.open(os.path.join(out_dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)


def _heartbeat(path: str, interval: float = 2.0) -> None:
    """Touch ``path`` every ``interval`` seconds so the container's watchdog keeps it alive."""

    def beat() -> None:
        while True:
            try:
                with open(path, "a"):
                    os.utime(path, None)
            except OSError:
                pass
            time.sleep(interval)

    threading.Thread(target=beat, name="oci-heartbeat", daemon=True).start()


def _run_step(step: dict[str, Any], loads: Callable[[bytes], Any], retvals: dict[str, list[Any]]) -> None:
    kind = step["kind"]
    if kind == "bash":
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
        value = loads(step["function"])(*loads(step["args"]), **loads(step["kwargs"]))
        key = step.get("retval_key")
        if key:
            retvals.setdefault(key, []).append(value)
    else:
        raise ValueError(f"unknown step kind {kind!r}")


def _failure(phase: str, exc: BaseException) -> dict[str, Any]:
    cls = type(exc)
    return {
        "ok": False,
        "phase": phase,
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": _cut(_safe_str(exc), protocol.MESSAGE_LIMIT),
        "traceback": _cut(
            "".join(traceback.format_exception(cls, exc, exc.__traceback__)), protocol.TRACEBACK_LIMIT
        ),
    }


def _safe_str(obj: object) -> str:
    try:
        return str(obj)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the result
        return f"<{type(obj).__name__}>"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit // 2] + "\n[... cut ...]\n" + text[-limit // 2 :]


def run(task_dir: str) -> tuple[dict[str, Any], bytes]:
    """Run the task in ``task_dir``; return the result record and the value's pickled bytes."""
    with open(os.path.join(task_dir, "task.pkl"), "rb") as handle:
        task = pickle.load(handle)
    if task.get("heartbeat"):
        _heartbeat(task["heartbeat"])
    workdir = task.get("workdir")
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        os.chdir(workdir)

    phase = "load"
    try:
        import cloudpickle

        loads = cloudpickle.loads
        function = loads(task["function"])
        args = [loads(a) for a in task["args"]]
        kwargs = {k: loads(v) for k, v in task["kwargs"].items()}

        phase = "call_before"
        retvals: dict[str, list[Any]] = {}
        for step in task["before"]:
            _run_step(step, loads, retvals)
        for key, values in retvals.items():
            single = len(values) == 1 and key != RESERVED_RETVAL_KEY_FILES
            kwargs[key] = values[0] if single else values

        phase = "task"
        output = function(*args, **kwargs)

        phase = "call_after"
        for step in task["after"]:
            _run_step(step, loads, {})

        phase = "result"
        value = cloudpickle.dumps(output)
        record = {
            "ok": True,
            "size": len(value),
            "repr": _safe_str(output)[: protocol.REPR_LIMIT],
            "python": platform.python_version(),
            "cloudpickle": cloudpickle.__version__,
        }
    except BaseException as exc:  # noqa: BLE001 - everything the task raises is reported
        return _failure(phase, exc), b""
    return record, value


def main(argv: list[str]) -> int:
    task_dir = argv[1]
    out_dir = os.path.join(task_dir, "out")
    os.makedirs(out_dir, exist_ok=True)
    _redirect_streams(out_dir)
    record, value = run(task_dir)
    record["version"] = protocol.VERSION
    sys.stdout.flush()
    sys.stderr.flush()
    with open(os.path.join(out_dir, protocol.VALUE_NAME), "wb") as handle:
        handle.write(value)
    tmp = os.path.join(out_dir, protocol.RECORD_NAME + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(protocol.encode_record(record))
    os.replace(tmp, os.path.join(out_dir, protocol.RECORD_NAME))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(sys.argv[1], "lib"))
    import oci_protocol as protocol

    sys.exit(main(sys.argv))
else:
    from oci_executor import protocol
