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
    """A hostile task: forge the runner's answer with bytes of its choosing, then exit.

    It writes a record and a value where the runner's result goes (every pipe it inherited)
    and, as frames, straight into the channel (the runner's own stdout). ``how``: ``pickle``
    (a well-formed record whose value would run code when unpickled), ``truncated``,
    ``oversized`` or ``notjson`` (a broken record).
    """
    import json
    import pickle
    import struct

    evil = pickle.dumps(_RunsOnUnpickle(marker))
    records = {
        "pickle": json.dumps({"ok": True, "size": len(evil), "repr": "15"}).encode(),
        "truncated": b'{"ok": true, "size": 1',
        "oversized": b'{"ok": false, "message": "' + b"x" * (5 * 1024 * 1024) + b'"}',
        "notjson": evil,
    }
    stream = struct.pack(">Q", len(records[how])) + records[how] + evil
    sys.stdout.flush()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.readlink(f"/proc/self/fd/{name}").startswith("pipe:"):
                os.write(fd, stream[:65536])
        except OSError:
            pass
    frames = struct.pack(">cQ", b"D", len(stream)) + stream + struct.pack(">cQ", b"X", 2) + b"{}"
    try:
        with open(f"/proc/{os.getppid()}/fd/1", "wb") as channel:
            channel.write(frames)
    except OSError:
        pass
    os._exit(0)


def secret_digest(names: list[str]) -> dict[str, str]:
    """SHA-256 of each named variable as the task sees it (the values themselves never return),
    and whether a child process of the task sees them too."""
    import hashlib
    import subprocess

    seen = {name: hashlib.sha256(os.environ.get(name, "").encode()).hexdigest() for name in names}
    child = subprocess.run(
        [sys.executable, "-c", f"import os; print(all(os.environ.get(n) for n in {names!r}))"],
        capture_output=True,
        text=True,
    )
    seen["child"] = child.stdout.strip()
    return seen


def fork_until_refused(ceiling: int, hold: float = 60.0) -> int:
    """Fork children that sleep until a fork is refused (raising what the refusal raises); at
    ``ceiling`` children, stop and return the count (the limit did not hold)."""
    import time

    children = 0
    while children < ceiling:
        pid = os.fork()
        if pid == 0:
            time.sleep(hold)
            os._exit(0)
        children += 1
    return children


def write_module(name: str, source: str) -> str:
    """A DepsCall step: write module ``name`` into a fresh folder and put it on ``sys.path``."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="oci-deps-call-")
    with open(os.path.join(folder, f"{name}.py"), "w", encoding="utf-8") as handle:
        handle.write(source)
    sys.path.insert(0, folder)
    return folder


def uses_packages() -> str:
    """Imports the test index's packages (see tests/test_environments.py)."""
    import ocitest_alpha  # type: ignore[import-not-found]
    import ocitest_beta  # type: ignore[import-not-found]

    folder = os.path.dirname(os.path.dirname(ocitest_alpha.__file__))
    return f"{ocitest_alpha.VALUE}|{ocitest_beta.VALUE}|{folder}"


def plain() -> str:
    return "plain"


def module_value(module: Any) -> str:
    """The ``VALUE`` of a test-index package passed as an argument, and the folder it came from."""
    return f"{module.VALUE}|{os.path.dirname(os.path.dirname(module.__file__))}"
