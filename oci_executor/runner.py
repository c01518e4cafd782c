"""The resident task runner: the container's main process, serving tasks over its stdin/stdout.

The bootstrap (:data:`protocol.BOOTSTRAP`) loads this module from memory and calls
:func:`serve`. The runner imports cloudpickle once, then for each task frame it forks a child
(a clean copy of the pre-imported runner, so no interpreter state leaks between tasks) and
relays: the payload from stdin into the child, the child's result, stdout and stderr back as
frames, and finally an EXIT frame. It ends when its stdin closes (the host went away: the
engine then removes the container), or after its maximum lifetime.

Standard library only, apart from the cloudpickle copy the host ships with it. Keep this
file free of imports from ``oci_executor`` other than the protocol and
:mod:`oci_executor.runner_task` (what runs in the task's child process: Covalent's steps, the
function, the result record), shipped beside it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import select
import signal
import sys
from typing import Any

try:  # the copies shipped with the runner (the bootstrap provides them, on every backend)
    import oci_inside as inside
    import oci_protocol as protocol
    import oci_runner_files as runner_files
    from oci_runner_task import perform_task
except ImportError:  # imported on the host, outside a runner
    from oci_executor import inside, protocol, runner_files
    from oci_executor.runner_task import perform_task

F_SETPIPE_SZ = 1031  # Linux fcntl
PIPE_SIZE = 1024 * 1024


# -- low-level I/O -------------------------------------------------------------------------


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd``, or ``None`` at end of file."""
    buffer = bytearray(n)
    view = memoryview(buffer)
    got = 0
    while got < n:
        count = os.readv(fd, [view[got:]])
        if count == 0:
            return None
        got += count
    return bytes(buffer)


def _send(kind: bytes, body: bytes = b"") -> None:
    header = protocol.FRAME_HEADER.pack(kind, len(body))
    if len(body) < 4096:
        _write_all(1, header + body)
        return
    written = os.writev(1, [header, body])  # no joined copy of a large chunk
    if written < len(header):
        _write_all(1, header[written:])
        written = len(header)
    _write_all(1, memoryview(body)[written - len(header) :])


def _send_json(kind: bytes, value: dict[str, Any]) -> None:
    _send(kind, json.dumps(value).encode("utf-8"))


def _read_frame() -> tuple[bytes, bytes] | None:
    header = _read_exact(0, protocol.FRAME_HEADER.size)
    if header is None:
        return None
    kind, size = protocol.FRAME_HEADER.unpack(header)
    body = _read_exact(0, size) if size else b""
    if body is None:
        return None
    return kind, body


# -- the resident loop ---------------------------------------------------------------------

_child: list[int] = []


def _kill_child() -> None:
    for pid in _child:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def _expire(*_: Any) -> None:
    _kill_child()
    os._exit(0)


def _add_environment(folder: str) -> None:
    """Put a task environment's folder first on ``sys.path`` (its .pth files processed), so that
    its packages win over the image's; every task's process inherits it."""
    if not folder or not os.path.isdir(folder):
        return
    import site

    before = list(sys.path)
    site.addsitedir(folder)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before


def serve(argv: list[str]) -> None:
    """Serve tasks until stdin closes: ``argv`` is ``[idle_timeout, max_lifetime]``."""
    import cloudpickle  # noqa: F401 - imported once here, inherited by every task's fork

    lifetime = float(argv[1]) if len(argv) > 1 else 0.0
    _add_environment(os.environ.get("OCI_EXECUTOR_SITE", ""))
    signal.signal(signal.SIGTERM, _expire)
    signal.signal(signal.SIGALRM, _expire)
    if lifetime > 0:
        signal.setitimer(signal.ITIMER_REAL, lifetime)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    _send_json(protocol.READY, {"version": protocol.VERSION, "python": platform.python_version()})
    while True:
        message = _read_frame()
        if message is None:
            _expire()
            return
        kind, body = message
        if kind == protocol.TASK:
            _serve_task(json.loads(body.decode("utf-8")), wake_r)
        elif kind == protocol.QUERY:
            _send_json(protocol.INVENTORY, runner_files.inventory())
        # KILL with no task running, or an unknown frame: nothing to do.


def _serve_task(header: dict[str, Any], wake_r: int) -> None:
    size = int(header.get("size", 0))
    if header.get("version") != protocol.VERSION:
        _discard_input(size)
        _send_json(
            protocol.EXIT,
            {
                "error": f"protocol version {header.get('version')} from the host, runner speaks {protocol.VERSION}"
            },
        )
        return
    in_r, in_w = os.pipe()
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    ev_r, ev_w = os.pipe()
    for fd in (in_w, res_w):  # big payloads move in fewer, larger steps
        try:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass
    pid = os.fork()
    if pid == 0:  # the task's process
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGALRM):
                signal.signal(sig, signal.SIG_DFL)
            signal.setitimer(signal.ITIMER_REAL, 0)
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in (devnull, in_w, res_r, out_r, err_r, out_w, err_w, wake_r, ev_r):
                os.close(fd)
            _child_main(header, in_r, res_w, ev_w)
        finally:
            os._exit(0)
    _child[:] = [pid]
    for fd in (in_r, res_w, out_w, err_w, ev_w):
        os.close(fd)
    _send(protocol.ACK)
    _copy_input(size, in_w)
    os.close(in_w)
    status, killed, usage = _relay(pid, res_r, out_r, err_r, ev_r, wake_r)
    _kill_child()  # whatever the task left behind in its session goes with it
    _child[:] = []
    if os.getpid() == 1:  # alone in the container: nothing the task started outlives it
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
    _reap()
    for fd in (res_r, out_r, err_r, ev_r):
        os.close(fd)
    _send_json(
        protocol.EXIT,
        {
            "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "killed": killed,
            "rusage": {
                "max_rss_kb": usage.ru_maxrss,
                "user_s": round(usage.ru_utime, 6),
                "system_s": round(usage.ru_stime, 6),
            },
        },
    )


def _reap() -> None:
    """Collect every exited child (as PID 1 we inherit the task's orphans)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _discard_input(size: int) -> None:
    while size > 0:
        chunk = os.read(0, min(size, protocol.CHUNK))
        if not chunk:
            _expire()
        size -= len(chunk)


def _copy_input(size: int, dest: int) -> None:
    """Copy ``size`` payload bytes from stdin to the task's input pipe."""
    broken = False
    while size > 0:
        chunk = os.read(0, min(size, protocol.CHUNK))
        if not chunk:
            _expire()
        size -= len(chunk)
        if not broken:
            try:
                _write_all(dest, chunk)
            except BrokenPipeError:  # the task died early; keep the channel in step
                broken = True


def _relay(pid: int, res_r: int, out_r: int, err_r: int, ev_r: int, wake_r: int) -> tuple[int, bool, Any]:
    """Forward the task's output as frames until it exits; return its wait status, whether
    it was killed, and its resource usage."""
    kinds = {res_r: protocol.DATA, out_r: protocol.STDOUT, err_r: protocol.STDERR, ev_r: protocol.EVENT}
    open_fds = set(kinds)
    killed = False
    events = _Events()
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        readable, _, _ = select.select([0, wake_r, *open_fds], [], [])
        for fd in readable:
            if fd == wake_r:
                _drain(wake_r)
            elif fd == 0:
                message = _read_frame()
                if message is None:
                    _expire()
                elif message[0] == protocol.KILL:
                    killed = True
                    _kill_child()
            else:
                chunk = os.read(fd, protocol.CHUNK)
                if not chunk:
                    open_fds.discard(fd)
                elif fd == ev_r:
                    events.relay(chunk)
                else:
                    _send(kinds[fd], chunk)
    for fd in open_fds:  # what the task wrote just before it exited
        os.set_blocking(fd, False)
        while True:
            try:
                chunk = os.read(fd, protocol.CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                break
            if fd == ev_r:
                events.relay(chunk)
            else:
                _send(kinds[fd], chunk)
    return status, killed, usage


class _Events:
    """The task's event lines, each relayed as one EVENT frame (an overlong line is dropped)."""

    def __init__(self) -> None:
        self.partial = b""

    def relay(self, chunk: bytes) -> None:
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > protocol.MAX_EVENT_BYTES:
            self.partial = b""
        for line in lines:
            if 0 < len(line) <= protocol.MAX_EVENT_BYTES:
                _send(protocol.EVENT, line)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise


# -- one task, in its own process ----------------------------------------------------------


def _child_main(header: dict[str, Any], in_r: int, res_w: int, ev_w: int) -> None:
    blobs = []
    files = runner_files.TaskFiles()
    stage = set(header.get("stage", []))
    for index, size in enumerate(header["sizes"]):
        if index in stage:  # an inbound file: onto disk as it arrives, not into memory
            files.stage(index, in_r, size)
            blobs.append(b"")
            continue
        blob = _read_exact(in_r, size) if size else b""
        blobs.append(blob or b"")
    os.close(in_r)
    inside.install(ev_w)  # live stdout/stderr, oci_executor.task.progress()
    try:
        record, value = perform_task(header, blobs, files)
        del blobs
        _send_result(record, value, files, res_w)
    finally:
        files.clean()


def _send_result(record: dict[str, Any], value: bytes, files: Any, res_w: int) -> None:
    """The record, the value's bytes, then the bytes of each file the task sends back."""
    record["version"] = protocol.VERSION
    sys.stdout.flush()
    sys.stderr.flush()
    raw = protocol.encode_record(record)
    _write_all(res_w, protocol.RECORD_LENGTH.pack(len(raw)) + raw)
    view = memoryview(value)
    for start in range(0, len(view), protocol.CHUNK):
        _write_all(res_w, view[start : start + protocol.CHUNK])
    if record.get("ok"):
        files.send(res_w)
    os.close(res_w)
