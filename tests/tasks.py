"""Task functions shipped into containers by the tests (pickled by value, see conftest)."""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any


def add(x: int, y: int) -> int:
    return x + y


def where() -> dict[str, str]:
    """Facts a task can see about the place it runs in."""
    try:
        with open("/proc/1/cmdline", "rb") as handle:
            pid1 = handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        pid1 = ""
    return {"hostname": socket.gethostname(), "pid1": pid1, "python": sys.version.split()[0]}


def fail(message: str) -> None:
    raise ValueError(message)


def chatty() -> str:
    print("to stdout")
    print("to stderr", file=sys.stderr)
    os.system("echo from a subprocess")
    return "done"


def reverse_bytes(data: bytes) -> bytes:
    return data[::-1]


def unicode_talk() -> str:
    print("héllo wörld ✓ 日本語 🚀")
    print("stderr: ünïcödé ✗", file=sys.stderr)
    return "résumé ✓ 日本"


def read_marker(path: str, injected: str = "") -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip() + "|" + injected


def prepare() -> str:
    print("call_before ran")
    return "from-deps-call"


def after() -> None:
    print("call_after ran")


def return_lock() -> Any:
    return threading.Lock()


def sleep_then(seconds: float, value: int) -> int:
    import time

    time.sleep(seconds)
    return value


class _RunsOnUnpickle:
    """Unpickling this creates ``path``: the payload of a forged result."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.path}",))


def forge_result(marker: str, how: str = "pickle") -> int:
    """A hostile task: overwrite the runner's result with bytes of its choosing, then exit.

    ``how``: ``pickle`` (a well-formed record whose value would run code when unpickled),
    ``truncated``, ``oversized`` or ``notjson`` (a broken record).
    """
    import json
    import pickle

    evil = pickle.dumps(_RunsOnUnpickle(marker))
    records = {
        "pickle": json.dumps({"ok": True, "size": len(evil), "repr": "15"}).encode(),
        "truncated": b'{"ok": true, "size": 1',
        "oversized": b'{"ok": false, "message": "' + b"x" * (5 * 1024 * 1024) + b'"}',
        "notjson": evil,
    }
    task_dir = sys.argv[1] if len(sys.argv) > 1 and os.path.isdir(sys.argv[1]) else None
    if task_dir:
        out = os.path.join(task_dir, "out")
        os.makedirs(out, exist_ok=True)
        for name in ("result.pkl", "value.bin"):
            with open(os.path.join(out, name), "wb") as handle:
                handle.write(evil)
        with open(os.path.join(out, "result.json"), "wb") as handle:
            handle.write(records[how])
    sys.stdout.flush()
    os._exit(0)
