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
