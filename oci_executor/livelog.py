"""A task's output, live: lines to the server's log (rate-limited) and to the dispatch's live log.

:class:`LiveOutput` receives the task's STDOUT/STDERR chunks as the runner relays them, cuts
them into lines (a line split across chunks is joined), and sends each line

- to the ``oci_executor.live`` logger (the Covalent server's log), tagged with dispatch, node
  and stream, at most :data:`LOG_BURST` lines at once and :data:`LOG_RATE` lines a second per
  task: lines over that are held back, and a line says how many (the node's whole output is
  still in Covalent when it ends);
- to the dispatch's ``live.jsonl`` (one JSON object a line, whose ``text`` holds the lines
  that arrived together), which ``oci-executor logs`` reads
  and follows, at most :data:`FILE_BURST` bytes at once and :data:`FILE_RATE` a second per task.

Counting what is held back costs a ``bytes.count``, so a task printing 50 MB costs the host
little. :func:`read` and :func:`follow` read a live log back. No Covalent here.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("oci_executor.live")

LOG_BURST, LOG_RATE = 200, 50.0
"""Lines of one task the server's log takes at once, and a second after that (once lines were
held back, the log takes them again when a second's worth has built up: at most one "held
back" line a second)."""
FILE_BURST, FILE_RATE = 8 * 1024 * 1024, 1024 * 1024
"""Bytes of one task the live log file takes at once, and a second after that."""
LINE_LIMIT = 4000
"""Characters of a line shown in the server's log (the rest is cut)."""
PARTIAL_LIMIT = 1024 * 1024
"""A line longer than this without a newline is passed on in pieces."""
_write_lock = threading.Lock()
_handles: collections.OrderedDict[str, Any] = collections.OrderedDict()
OPEN_FILES = 32
"""Append-mode files kept open (the most recently used), so a record costs one write."""


def append_text(path: str | os.PathLike[str], data: str) -> None:
    """Append ``data`` to ``path`` in one write, through a kept-open handle (thread-safe)."""
    key = os.fspath(path)
    with _write_lock:
        handle = _handles.pop(key, None)
        if handle is None or not os.path.exists(key):  # first use, or deleted meanwhile
            if handle is not None:
                handle.close()
            handle = open(key, "a", encoding="utf-8")  # noqa: SIM115 - kept open on purpose
            while len(_handles) >= OPEN_FILES:
                _handles.popitem(last=False)[1].close()
        _handles[key] = handle
        handle.write(data)
        handle.flush()


class Bucket:
    """A token bucket: ``capacity`` at once, refilled at ``rate`` a second."""

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity, self.rate = capacity, rate
        self.tokens, self.stamp = capacity, time.monotonic()

    def available(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens


class _Held:
    def __init__(self) -> None:
        self.lines = 0
        self.bytes = 0

    def add(self, lines: int, size: int) -> None:
        self.lines += lines
        self.bytes += size


class LiveOutput:
    """One task's live output; see the module docstring. ``path`` None: no live log file."""

    def __init__(self, dispatch_id: str, node_id: str, name: str = "", path: Path | None = None) -> None:
        self.dispatch_id, self.node_id, self.name, self.path = dispatch_id, node_id, name, path
        self.tag = f"dispatch {dispatch_id or '-'} node {node_id or '-'}" + (f" ({name})" if name else "")
        self._partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}
        self._log_bucket = Bucket(LOG_BURST, LOG_RATE)
        self._file_bucket = Bucket(FILE_BURST, FILE_RATE)
        self._log_held = {"stdout": _Held(), "stderr": _Held()}
        self._file_held = {"stdout": _Held(), "stderr": _Held()}
        self.held_back_lines = 0
        """Lines the server's log did not get (for the trace)."""

    def output(self, stream: str, chunk: bytes) -> None:
        """A chunk of the task's ``stream`` (``stdout`` or ``stderr``), as it arrives."""
        data = self._partial[stream] + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) <= PARTIAL_LIMIT:
                self._partial[stream] = data
                return
            cut = len(data)
        self._partial[stream] = data[cut + 1 :]
        self._lines(stream, data[:cut])

    def event(self, event: dict[str, Any]) -> None:
        """An event from the task (checked by ``protocol.decode_event``)."""
        fraction = event.get("fraction")
        text = (f"{fraction:.0%} " if fraction is not None else "") + event.get("message", "")
        data = event.get("data") or {}
        if data:
            text += " " + json.dumps(data, default=str)
        log.info("[%s %s] %s", self.tag, event.get("kind", "event"), text)
        self._append([self._record(event.get("kind", "event"), text=text, **{"event": event})])

    def close(self, status: str) -> None:
        """The task ended: pass on unfinished lines, say what was held back, mark the end."""
        for stream, rest in self._partial.items():
            if rest:
                self._lines(stream, rest)
                self._partial[stream] = b""
        for stream in ("stdout", "stderr"):
            self._report_held(stream)
        records = [
            self._record(stream, held_back_lines=held.lines, held_back_bytes=held.bytes)
            for stream, held in self._file_held.items()
            if held.lines
        ]
        self._append([*records, self._record("end", status=status)])

    # -- internals ---------------------------------------------------------------------

    def _lines(self, stream: str, body: bytes) -> None:
        count = body.count(b"\n") + 1
        self._to_log(stream, body, count)
        self._to_file(stream, body, count)

    def _to_log(self, stream: str, body: bytes, count: int) -> None:
        tokens = int(self._log_bucket.available())
        if self._log_held[stream].lines:  # holding back: resume once a second's worth is there
            tokens = tokens if tokens >= LOG_RATE else 0
            if tokens:
                self._report_held(stream)
        take = min(count, tokens)
        if take <= 0:
            self._log_held[stream].add(count, len(body) + 1)
            return
        parts = body.split(b"\n", take) if take < count else body.split(b"\n")
        shown = parts[:take]
        self._log_bucket.tokens -= take
        for raw in shown:
            text = raw.decode("utf-8", errors="backslashreplace")
            if len(text) > LINE_LIMIT:
                text = text[:LINE_LIMIT] + f" [... {len(text) - LINE_LIMIT} more characters]"
            log.info("[%s %s] %s", self.tag, stream, text)
        if take < count:
            self._log_held[stream].add(count - take, len(parts[take]) + 1)

    def _report_held(self, stream: str) -> None:
        held = self._log_held[stream]
        if not held.lines:
            return
        log.info(
            "[%s %s] ... held back %d line(s) (%d bytes) of %s from this log (over %g lines/s); "
            "the node's whole %s is in Covalent, and more in `oci-executor logs %s`",
            self.tag,
            stream,
            held.lines,
            held.bytes,
            stream,
            LOG_RATE,
            stream,
            self.dispatch_id,
        )
        self.held_back_lines += held.lines
        self._log_held[stream] = _Held()

    def _to_file(self, stream: str, body: bytes, count: int) -> None:
        if self.path is None:
            return
        if self._file_bucket.available() < len(body):
            self._file_held[stream].add(count, len(body) + 1)
            return
        self._file_bucket.tokens -= len(body)
        self._append([self._record(stream, text=body.decode("utf-8", errors="backslashreplace"))])

    def _record(self, stream: str, **fields: Any) -> dict[str, Any]:
        return {
            "time": round(time.time(), 6),
            "node": self.node_id,
            "name": self.name,
            "stream": stream,
            **fields,
        }

    def _append(self, records: list[dict[str, Any]]) -> None:
        if self.path is None or not records:
            return
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        try:
            append_text(self.path, data)
        except OSError as exc:
            log.warning("could not write the live log %s: %s", self.path, exc)
            self.path = None


# -- reading a live log back -------------------------------------------------------------


def format_record(record: dict[str, Any]) -> str:
    """A live log record as lines for a person."""
    node = record.get("node", "?")
    name = f" {record['name']}" if record.get("name") else ""
    stream = record.get("stream", "?")
    stamp = time.strftime("%H:%M:%S", time.localtime(float(record.get("time", 0))))
    if "held_back_lines" in record:
        text = f"... {record['held_back_lines']} line(s) ({record.get('held_back_bytes', 0)} bytes) not kept here"
    elif stream == "end":
        text = f"task ended: {record.get('status', '?')}"
    else:
        text = str(record.get("text", ""))
    return "\n".join(f"{stamp} node {node}{name} {stream:<8}| {line}" for line in text.split("\n"))


def _matches(record: dict[str, Any], node: str | None) -> bool:
    return node is None or str(record.get("node")) == node


def read(path: Path, node: str | None = None) -> Iterator[dict[str, Any]]:
    """The records of a live log (of one node, if given), as written so far."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n"):
                record = _parse(line)
                if record is not None and _matches(record, node):
                    yield record


def follow(path: Path, node: str | None = None, poll: float = 0.05) -> Iterator[dict[str, Any]]:
    """The records of a live log as they are written; waits for the file to appear. With a
    ``node``, ends after that node's ``end`` record; else runs until interrupted."""
    while not path.exists():
        time.sleep(poll)
    with open(path, encoding="utf-8") as handle:
        pending = ""
        while True:
            chunk = handle.readline()
            if not chunk:
                time.sleep(poll)
                continue
            pending += chunk
            if not pending.endswith("\n"):
                continue
            record, pending = _parse(pending), ""
            if record is None or not _matches(record, node):
                continue
            yield record
            if node is not None and record.get("stream") == "end":
                return


def _parse(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
