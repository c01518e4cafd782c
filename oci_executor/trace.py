"""A trace of every task: its phases, resources and container, one JSON line per record.

Each dispatch has a folder ``<state dir>/dispatches/<dispatch id>/`` holding ``trace.jsonl``
(this module) and ``live.jsonl`` (:mod:`oci_executor.livelog`). The state dir is
``$OCI_EXECUTOR_STATE_DIR``, else ``$XDG_STATE_HOME/oci-executor``, else
``~/.local/state/oci-executor``: the home of the user running the tasks (the Covalent
server). ``OCI_EXECUTOR_TRACE=0`` turns both files off. The records (``kind`` says which):

- ``task``: see :data:`TASK_FIELDS`; ``phases`` is a list of ``{"phase", "start",
  "duration"}`` in order, from :data:`PHASES`;
- ``event``: an event from inside the task, as it happens: ``dispatch``, ``node``, ``name``,
  ``time``, ``event`` (``progress`` or ``event``), ``fraction``, ``message``, ``data``;
- ``removal``: a container removed (the last phase of its lane), in the background.

Times are seconds since the epoch (``start``) and seconds (``duration``). No Covalent here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from oci_executor.labels import DISPATCH_LABEL
from oci_executor.livelog import LiveOutput, append_text

log = logging.getLogger(__name__)

PHASES = ("wait", "create", "attach", "hello", "environment", "send", "run", "receive")
"""A task's phases, in order: ``wait`` (for the backend on first use, then for a free container,
or a warm one), ``create`` (pull,
create and start), ``attach`` and ``hello`` (cold only), ``environment`` (preparing the task's
environment, when it has one), ``send`` (the payload, until the runner accepts it), ``run``
(until the result starts to arrive), ``receive`` (the result)."""
TASK_FIELDS = (
    "kind", "dispatch", "node", "name", "status", "error", "start", "end", "duration", "warm",
    "container", "engine", "address", "host", "image", "env_key", "phases", "exit_code", "signal",
    "max_rss_kb", "cpu_user_s", "cpu_system_s", "stdout_bytes", "stderr_bytes", "held_back_lines",
)  # fmt: skip
"""The fields of a ``task`` record, in order (stable names: add, never rename)."""


def enabled() -> bool:
    return os.environ.get("OCI_EXECUTOR_TRACE", "1").strip().lower() not in ("0", "off", "no", "false")


def state_dir() -> Path:
    """Where traces and live logs go (see the module docstring)."""
    explicit = os.environ.get("OCI_EXECUTOR_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "oci-executor"


def dispatch_dir(dispatch_id: str) -> Path:
    """The folder of one dispatch's trace and live log (not created here)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", dispatch_id):
        raise ValueError(f"{dispatch_id!r} is not a dispatch ID (letters, digits, '.', '_' and '-')")
    return state_dir() / "dispatches" / dispatch_id


_made: dict[tuple[str, str], Path] = {}
"""Folders this process made, by (state dir, dispatch): one mkdir per dispatch."""


def _folder(dispatch_id: str) -> Path | None:
    """The dispatch's folder, created; None when tracing is off or there is no dispatch."""
    if not dispatch_id or not enabled():
        return None
    key = (os.environ.get("OCI_EXECUTOR_STATE_DIR", ""), dispatch_id)
    folder = _made.get(key)
    if folder is not None and folder.is_dir():
        return folder
    try:
        folder = dispatch_dir(dispatch_id)
        folder.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as exc:
        log.warning("no trace for dispatch %r: %s", dispatch_id, exc)
        return None
    _made[key] = folder
    return folder


def append(dispatch_id: str, record: Mapping[str, Any]) -> None:
    """Add one record to the dispatch's trace (best effort: a trace never fails a task)."""
    folder = _folder(dispatch_id)
    if folder is None:
        return
    line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
    try:
        append_text(os.path.join(folder, "trace.jsonl"), line)
    except OSError as exc:
        log.warning("could not write the trace of dispatch %s: %s", dispatch_id, exc)


def read(dispatch_id: str) -> list[dict[str, Any]]:
    """Every record of a dispatch's trace; ``FileNotFoundError`` naming the path if none."""
    path = dispatch_dir(dispatch_id) / "trace.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"no trace for dispatch {dispatch_id} at {path}: check the dispatch ID, and run this as the "
            "user (and with the OCI_EXECUTOR_STATE_DIR / XDG_STATE_HOME) of the Covalent server"
        )
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written
            if isinstance(record, dict):
                records.append(record)
    return records


def _host(container: Any) -> str:
    """Where the container runs: the Slurm node, an ssh engine's host, else this machine."""
    match = re.fullmatch(r"oci-slurm-\d+-(.+)", getattr(container, "id", ""))
    if match:
        return match.group(1)
    address = getattr(container, "address", "") or ""
    remote = re.match(r"ssh://(?:[^@/]*@)?([^:/]+)", address)
    return remote.group(1) if remote else socket.gethostname()


def removal(container: Any, labels: Mapping[str, str], start: float, duration: float) -> None:
    """Record that ``container`` was removed (its lane's last phase)."""
    dispatch_id = labels.get(DISPATCH_LABEL, "")
    if not dispatch_id:
        return
    record = {
        "kind": "removal",
        "dispatch": dispatch_id,
        "container": container.id,
        "engine": container.backend,
        "host": _host(container),
        "start": round(start, 6),
        "duration": round(duration, 6),
    }
    append(dispatch_id, record)


class TaskTrace:
    """One task's trace as it runs: phases, container, output and events (the observer
    :func:`oci_executor.execute.execute` reports to). :meth:`finish` writes the record."""

    def __init__(self, dispatch_id: str, node_id: str, name: str = "", env_key: str = "") -> None:
        folder = _folder(dispatch_id)
        self.dispatch_id = dispatch_id
        self.live = LiveOutput(dispatch_id, node_id, name, folder / "live.jsonl" if folder else None)
        self.record: dict[str, Any] = dict.fromkeys(TASK_FIELDS, None)
        self.record.update(
            kind="task", dispatch=dispatch_id, node=node_id, name=name, env_key=env_key, phases=[], error=""
        )
        self.record.update(stdout_bytes=0, stderr_bytes=0, start=round(time.time(), 6))
        self._began = time.monotonic()
        self._phase: tuple[str, float, float] | None = None
        self.phase("wait")

    def phase(self, name: str) -> None:
        """``name`` begins now (and the phase before it ends)."""
        now, wall = time.monotonic(), time.time()
        self._close_phase(now)
        self._phase = (name, wall, now)

    def _close_phase(self, now: float) -> None:
        if self._phase is not None:
            name, wall, began = self._phase
            self.record["phases"].append(
                {"phase": name, "start": round(wall, 6), "duration": round(now - began, 6)}
            )
            self._phase = None

    def container(self, container: Any, warm: bool) -> None:
        """The task got ``container`` (``warm``: reused from the pool)."""
        self.record.update(
            warm=warm,
            container=container.id,
            engine=container.backend,
            address=container.address,
            host=_host(container),
            image=container.image,
        )

    def output(self, stream: str, chunk: bytes) -> None:
        self.record[f"{stream}_bytes"] += len(chunk)
        self.live.output(stream, chunk)

    def event(self, event: dict[str, Any]) -> None:
        self.live.event(event)
        record = {"kind": "event", "dispatch": self.dispatch_id, "node": self.record["node"]}
        record.update(name=self.record["name"], time=round(time.time(), 6), event=event["kind"])
        record.update(fraction=event["fraction"], message=event["message"], data=event["data"])
        append(self.dispatch_id, record)

    def exited(self, end: Mapping[str, Any]) -> None:
        """The runner's EXIT frame: exit code, signal, resource usage."""
        rusage = end.get("rusage")
        usage: Mapping[str, Any] = rusage if isinstance(rusage, dict) else {}
        self.record.update(
            exit_code=end.get("exit_code"),
            signal=end.get("signal"),
            max_rss_kb=usage.get("max_rss_kb"),
            cpu_user_s=usage.get("user_s"),
            cpu_system_s=usage.get("system_s"),
        )

    def finish(self, status: str, error: str = "") -> dict[str, Any]:
        """The task is over (``ok``, ``failed``: it raised, ``error``: ours); write the record."""
        now = time.monotonic()
        self._close_phase(now)
        self.live.close(status)
        self.record.update(
            status=status,
            error=error,
            end=round(time.time(), 6),
            duration=round(now - self._began, 6),
            held_back_lines=self.live.held_back_lines,
        )
        append(self.dispatch_id, self.record)
        return self.record


def tasks(records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The ``task`` records, by start time."""
    yield from sorted((r for r in records if r.get("kind") == "task"), key=lambda r: r.get("start") or 0)
