"""One task's execution on a resident runner: send the payload, read the outcome.

The payload's blobs go down the channel as they are; the runner answers with ACK (the task
started), DATA frames (an 8-byte record length, the JSON record, the value's raw bytes),
STDOUT/STDERR frames (passed on live to the task's :class:`~oci_executor.trace.TaskTrace`, and
kept whole for the outcome), EVENT frames from the task, and EXIT. The record is checked by :func:`protocol.decode_record`; the
value's bytes are never unpickled here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from typing import Any

from oci_executor import protocol
from oci_executor.channel import ChannelClosed, FrameReader
from oci_executor.errors import EngineUnavailableError, OutOfMemoryError, RunnerError, TaskTimeoutError
from oci_executor.lifecycle import RunnerHandle
from oci_executor.task import TaskOutcome, TaskPayload, outcome_from_record
from oci_executor.trace import TaskTrace

log = logging.getLogger(__name__)
AFFORDABLE_WITHOUT_CHECK = 64 * 1024 * 1024
"""Results up to this size are allocated without reading /proc/meminfo first."""


class TaskNotStarted(ChannelClosed):
    """The runner went away before it accepted the task: the task can run elsewhere."""


class _Result:
    """Assembles the DATA frames: record length, record, then the value into one buffer."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.record: dict[str, Any] | None = None
        self.value: bytearray | None = None
        self.filled = 0

    def feed(self, reader: FrameReader, size: int) -> None:
        while size:
            if self.value is not None:
                if self.filled + size > len(self.value):
                    raise protocol.ProtocolError("the task's result is longer than its record says")
                reader.read_into(memoryview(self.value)[self.filled : self.filled + size])
                self.filled += size
                return
            if len(self.head) < protocol.RECORD_LENGTH.size:
                take = min(size, protocol.RECORD_LENGTH.size - len(self.head))
            else:
                take = min(size, protocol.RECORD_LENGTH.size + self._record_len() - len(self.head))
            self.head += reader.read(take)
            size -= take
            if len(self.head) < protocol.RECORD_LENGTH.size:
                continue
            if self._record_len() > protocol.MAX_RECORD_BYTES:
                raise protocol.ProtocolError(
                    f"the result record is {self._record_len()} bytes, over the {protocol.MAX_RECORD_BYTES} allowed"
                )
            if len(self.head) == protocol.RECORD_LENGTH.size + self._record_len():
                self.record = protocol.decode_record(bytes(self.head[protocol.RECORD_LENGTH.size :]))
                wanted = int(self.record.get("size", 0)) if self.record["ok"] else 0
                _check_affordable(wanted)
                self.value = bytearray(wanted)

    def _record_len(self) -> int:
        return int(protocol.RECORD_LENGTH.unpack(self.head[: protocol.RECORD_LENGTH.size])[0])


def _check_affordable(size: int) -> None:
    """Refuse a result size this host could not hold (a hostile record); small ones pass unread."""
    if size <= AFFORDABLE_WITHOUT_CHECK:
        return
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
            else:
                return
    except OSError:
        return
    if size > available:
        raise protocol.ProtocolError(f"the task's result claims {size} bytes, more than this host has free")


def execute(
    runner: RunnerHandle,
    payload: TaskPayload,
    *,
    workdir: str | None = None,
    time_limit: float | None = None,
    memory: int | None = None,
    trace: TaskTrace | None = None,
) -> TaskOutcome:
    """Run ``payload`` on ``runner`` and return its outcome.

    A ``time_limit`` (seconds, counted from now) kills the task when it runs over. ``memory``
    is the container's limit in bytes, named in the error if the task ran out of it.
    Raises :class:`TaskNotStarted` if the runner was gone before the task began. ``trace``
    is told the phases (send, run, receive), the output and events as they come, and the exit.
    """
    channel = runner.channel
    reader = FrameReader(channel)
    if trace is not None:
        trace.phase("send")
    try:
        _send_task(runner, payload, workdir)
        kind, size = reader.header()
    except ChannelClosed as exc:
        raise TaskNotStarted(str(exc)) from None
    if kind == protocol.EXIT and size <= protocol.MAX_CONTROL_BYTES:
        refusal = protocol.decode_control(kind, reader.read(size)).get("error", "no reason given")
        raise RunnerError(f"the runner in container {runner.container.id[:12]} refused the task: {refusal}")
    if kind != protocol.ACK or size:
        raise RunnerError(f"the runner answered a task with a {kind!r} frame; its container is discarded")
    payload.release()
    if trace is not None:
        trace.phase("run")

    timed_out = threading.Event()
    timer = None
    if time_limit:

        def expire() -> None:
            timed_out.set()
            try:
                channel.send(protocol.frame(protocol.KILL))
            except ChannelClosed:
                pass

        timer = threading.Timer(time_limit, expire)
        timer.daemon = True
        timer.start()
    result = _Result()
    stdout: list[bytes] = []
    stderr: list[bytes] = []
    try:
        while True:
            try:
                kind, size = reader.header()
            except ChannelClosed:
                if timed_out.is_set():
                    raise _timeout(time_limit, stdout, stderr) from None
                _engine_gone(runner)
                if memory and runner.backend.oom_killed(runner.container):
                    raise _oom(memory) from None
                detail = channel.diagnostics()[-2000:]
                raise RunnerError(
                    "the task's container ended while the task ran"
                    + (f":\n{detail}" if detail else "")
                    + "\nIt was killed (cancelled, removed, or its engine stopped), or ran out of memory."
                ) from None
            if kind == protocol.DATA:
                if trace is not None and not result.head:
                    trace.phase("receive")
                result.feed(reader, size)
            elif kind in (protocol.STDOUT, protocol.STDERR):
                chunk = reader.read(size)
                (stdout if kind == protocol.STDOUT else stderr).append(chunk)
                if trace is not None:
                    trace.output("stdout" if kind == protocol.STDOUT else "stderr", chunk)
            elif kind == protocol.EVENT:
                if size > protocol.MAX_EVENT_BYTES:
                    raise protocol.ProtocolError("the runner's EVENT frame is too long")
                body = reader.read(size)
                try:
                    event = protocol.decode_event(body)
                except protocol.ProtocolError as exc:  # the task's own words: never fatal
                    log.warning("dropped an event from the task in %s: %s", runner.container.id[:12], exc)
                    continue
                if trace is not None:
                    trace.event(event)
            elif kind == protocol.EXIT:
                if size > protocol.MAX_CONTROL_BYTES:
                    raise protocol.ProtocolError("the runner's EXIT frame is too long")
                end = protocol.decode_control(kind, reader.read(size))
                if trace is not None:
                    trace.exited(end)
                break
            else:
                raise protocol.ProtocolError(f"the runner sent an unexpected {kind!r} frame")
    except protocol.ProtocolError as exc:
        raise RunnerError(
            f"the task's result could not be read: {exc}. The task or something in its container "
            "wrote where the runner's result belongs; nothing of it was loaded on the host."
        ) from None
    finally:
        if timer is not None:
            timer.cancel()
    if timed_out.is_set() or end.get("killed"):
        raise _timeout(time_limit, stdout, stderr)
    if end.get("error"):
        raise RunnerError(f"the runner refused the task: {end['error']}")
    out, err = _text(stdout), _text(stderr)
    if result.record is None or result.value is None or result.filled != len(result.value):
        if memory and runner.backend.oom_killed(runner.container):
            raise _oom(memory)
        how = f"signal {end['signal']}" if end.get("signal") else f"code {end.get('exit_code')}"
        raise RunnerError(
            f"the task's process ended ({how}) without a complete result"
            + (f":\n{err.strip()[-2000:]}" if err.strip() else "")
            + "\nCheck that the container has memory and disk left (the task may have called os._exit)."
        )
    outcome = outcome_from_record(result.record, result.value, out, err)
    return dataclasses.replace(outcome, container_id=runner.container.id)


def _send_task(runner: RunnerHandle, payload: TaskPayload, workdir: str | None) -> None:
    """The task frame, then each blob as it is (no joined copy, no reference kept after)."""
    blobs, layout = payload.encode(workdir)
    header = json.dumps(protocol.task_header([len(b) for b in blobs], layout)).encode("utf-8")
    runner.channel.send(protocol.frame(protocol.TASK, header))
    for blob in blobs:
        if blob:
            runner.channel.send(blob)


def _engine_gone(runner: RunnerHandle) -> None:
    """If the engine itself went away mid-task, say so (and where, and what to do)."""
    try:
        runner.backend.check()
    except EngineUnavailableError as exc:
        # Same type and fields (a lost link to a remote engine keeps naming where it was lost).
        if exc.link_lost:
            lead = f"the task in container {runner.container.id[:12]} did not finish: {exc}"
        else:
            lead = (
                f"the engine went away while the task ran in container {runner.container.id[:12]}: the task did "
                f"not finish, and its container ended with its runner (or goes when the engine restarts). {exc}"
            )
        exc.args = (lead,)
        raise exc from None


def _text(chunks: list[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", errors="backslashreplace")


def _timeout(time_limit: float | None, stdout: list[bytes], stderr: list[bytes]) -> TaskTimeoutError:
    return TaskTimeoutError(
        f"the task ran over its time_limit of {time_limit or 0:g} s and was killed (its container was "
        "discarded). Raise the executor's time_limit or make the task faster.",
        stdout=_text(stdout),
        stderr=_text(stderr),
    )


def _oom(memory: int) -> OutOfMemoryError:
    return OutOfMemoryError(
        f"the task ran out of memory: it needed more than its limit of {_size(memory)} "
        "and the kernel killed it. Raise the executor's 'memory' option or make the task use less."
    )


def _size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:g} {unit} ({size} bytes)"
    return f"{size} bytes"
