"""What the runner gives a task's process: live output and the events API.

Shipped into the container with the runner (as ``oci_inside``), standard library only. In the
task's process, :func:`install`:

- replaces ``sys.stdout`` with a block-buffered writer that a daemon thread flushes every
  :data:`FLUSH_INTERVAL` seconds, so printed lines reach the host live without a system call
  per ``print`` (a task printing 50 MB is not slowed down); ``sys.stderr`` is line-buffered,
  as Python's own is;
- puts a small ``oci_executor.task`` module (and an ``oci_executor`` package holding it) into
  ``sys.modules``, so a task calls ``oci_executor.task.progress(0.4, "epoch 4/10")`` without
  our package in the image. Its events go, one JSON line each, down a pipe the runner relays
  as EVENT frames.

On the host, :mod:`oci_executor.task` offers the same two functions (they log), so a task run
outside a container does not fail calling them. :func:`encode_event` checks both alike.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
import types
from typing import Any

FLUSH_INTERVAL = 0.05
"""Seconds between two flushes of the task's stdout and stderr."""
EVENT_LIMIT = 16 * 1024
"""An event's JSON line is at most this long (protocol.MAX_EVENT_BYTES)."""


def encode_event(kind: str, fraction: float | None, message: str, data: dict[str, Any]) -> bytes:
    """One event as a JSON line, or ``ValueError`` naming what is wrong with it."""
    if fraction is not None:
        try:
            fraction = float(fraction)
        except (TypeError, ValueError):
            raise ValueError(f"progress fraction must be a number from 0 to 1, got {fraction!r}") from None
        if math.isnan(fraction) or not 0 <= fraction <= 1:
            raise ValueError(f"progress fraction must be a number from 0 to 1, got {fraction!r}")
    body = {"kind": kind, "fraction": fraction, "message": str(message), "data": data}
    line = json.dumps(body, default=str, ensure_ascii=False).encode("utf-8")
    if len(line) > EVENT_LIMIT:
        raise ValueError(
            f"the event is {len(line)} bytes as JSON, over the {EVENT_LIMIT} allowed: send less data"
        )
    return line + b"\n"


def _flusher() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed or replaced stream: nothing to flush
                pass


def _api(events_fd: int) -> types.ModuleType:
    """The ``oci_executor.task`` module a task sees in its container."""
    module = types.ModuleType("oci_executor.task", "Events from a task to its host (provided by the runner).")

    def emit(kind: str, fraction: float | None, message: str, data: dict[str, Any]) -> None:
        line = encode_event(kind, fraction, message, data)
        for stream in (sys.stdout, sys.stderr):  # what was printed before the event comes first
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        try:
            os.write(events_fd, line)
        except OSError:
            pass  # the runner is gone; the task goes on

    def progress(fraction: float, message: str = "", **data: Any) -> None:
        """Report how far the task is (0 to 1), with a short message."""
        emit("progress", fraction, message, data)

    def event(message: str, **data: Any) -> None:
        """Report something that happened, with JSON-able fields."""
        emit("event", None, message, data)

    module.progress = progress  # type: ignore[attr-defined]
    module.event = event  # type: ignore[attr-defined]
    return module


def install(events_fd: int) -> None:
    """Set up the task's process: live stdout/stderr, the events API on ``events_fd``."""
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(  # noqa: SIM115 - line-buffered (buffering=1), as Python's own stderr
        2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )
    threading.Thread(target=_flusher, name="oci-output-flush", daemon=True).start()
    api = _api(events_fd)
    package = types.ModuleType("oci_executor", "The runner's stand-in for oci-executor inside a task.")
    package.__path__ = []
    package.task = api  # type: ignore[attr-defined]
    sys.modules["oci_executor"] = package
    sys.modules["oci_executor.task"] = api
