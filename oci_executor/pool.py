"""The warm pool: live containers with resident runners, reused by tasks whose spec matches.

The pool is process-wide (Covalent rebuilds executor instances from JSON for every task, so
it cannot live on one). A key covers the backend, its address and every container option;
``reuse="dispatch"`` adds the dispatch ID. At most ``limit`` runners per key are alive at
once; tasks beyond that wait, first come first served. An idle runner is kept for
``keep_warm`` seconds, then removed in the background, as is every discarded runner. At exit
the pool removes what it holds; if the process is killed, each runner sees its channel
close and ends, and the engine removes its container.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import json
import logging
import threading
import time
import typing
from collections.abc import Callable
from typing import Any, Literal

from oci_executor.backend import Backend, ContainerSpec
from oci_executor.labels import DISPATCH_LABEL, NODE_LABEL
from oci_executor.lifecycle import RunnerHandle, discard
from oci_executor.registry import close_shared_backends

log = logging.getLogger(__name__)

ReuseScope = Literal["dispatch", "never", "process"]
REUSE_SCOPES: tuple[str, ...] = typing.get_args(ReuseScope)
"""Which tasks a warm container serves (the ``reuse`` option)."""
EXPIRY_MARGIN = 30.0
"""A runner this close to its ``max_lifetime`` is never handed a task."""
REAP_INTERVAL = 0.5
PER_TASK_LABELS = (NODE_LABEL,)


def pool_key(backend: Backend, spec: ContainerSpec, reuse: str, dispatch_id: str) -> str:
    """The key under which runners for ``spec`` are pooled."""
    drop = set(PER_TASK_LABELS)
    if reuse != "dispatch":
        drop.add(DISPATCH_LABEL)
    fields = dataclasses.asdict(spec)
    fields["labels"] = {k: v for k, v in spec.labels.items() if k not in drop}
    scope = dispatch_id if reuse == "dispatch" else reuse
    return json.dumps([backend.describe(), scope, fields], sort_keys=True, default=str)


class Pool:
    """Warm runners by key; see the module docstring."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._idle: dict[str, list[tuple[RunnerHandle, float]]] = collections.defaultdict(list)
        self._live: collections.Counter[str] = collections.Counter()
        self._queues: dict[str, collections.deque[object]] = collections.defaultdict(collections.deque)
        self._removals: set[threading.Thread] = set()
        self._reaper: threading.Thread | None = None

    def acquire(
        self, key: str, limit: int, create: Callable[[], RunnerHandle], min_life: float = 0.0
    ) -> tuple[RunnerHandle, bool]:
        """A runner for ``key``: an idle one (``reused=True``) or a new one from ``create``.

        An idle runner is handed out only if it lives ``min_life`` seconds (the task's time
        limit) beyond :data:`EXPIRY_MARGIN`."""
        ticket = object()
        waited = False
        with self._cond:
            queue = self._queues[key]
            queue.append(ticket)
            try:
                while True:
                    if queue[0] is ticket:
                        runner = self._take_idle(key, min_life)
                        if runner is not None:
                            queue.popleft()
                            self._cond.notify_all()
                            return runner, True
                        if self._live[key] < limit:
                            self._live[key] += 1
                            queue.popleft()
                            self._cond.notify_all()
                            break
                    if not waited:
                        log.info(
                            "waiting for a free container (%d in use, max_containers=%d)",
                            self._live[key],
                            limit,
                        )
                        waited = True
                    self._cond.wait(timeout=1.0)
            except BaseException:
                if ticket in queue:
                    queue.remove(ticket)
                self._cond.notify_all()
                raise
        try:
            return create(), False
        except BaseException:
            with self._cond:
                self._live[key] -= 1
                self._cond.notify_all()
            raise

    def release(self, key: str, runner: RunnerHandle, *, reusable: bool, keep_warm: float = 0.0) -> None:
        """Return a runner after its task: keep it warm, or discard it in the background."""
        with self._cond:
            if reusable and keep_warm > 0 and runner.expires_in() > EXPIRY_MARGIN:
                self._idle[key].append((runner, time.monotonic() + keep_warm))
                self._start_reaper()
            else:
                self._live[key] -= 1
                self._discard_later(runner)
            self._cond.notify_all()

    def _take_idle(self, key: str, min_life: float = 0.0) -> RunnerHandle | None:
        idle = self._idle[key]
        while idle:
            runner, _ = idle.pop()
            if runner.expires_in() > EXPIRY_MARGIN + min_life and runner.channel.idle_alive():
                return runner
            self._live[key] -= 1  # it expired, vanished or was removed by hand
            self._discard_later(runner)
        return None

    def _discard_later(self, runner: RunnerHandle) -> None:
        thread = threading.Thread(target=self._discard, args=(runner,), name="oci-remove", daemon=True)
        self._removals.add(thread)
        thread.start()

    def _discard(self, runner: RunnerHandle) -> None:
        try:
            discard(runner)
        finally:
            with self._cond:
                self._removals.discard(threading.current_thread())
                self._cond.notify_all()

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(target=self._reap, name="oci-pool-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        while True:
            time.sleep(REAP_INTERVAL)
            now = time.monotonic()
            with self._cond:
                for key, idle in self._idle.items():
                    keep = []
                    for runner, until in idle:
                        if until > now and runner.expires_in() > EXPIRY_MARGIN:
                            keep.append((runner, until))
                        else:
                            self._live[key] -= 1
                            self._discard_later(runner)
                    idle[:] = keep
                if not any(self._idle.values()):
                    self._reaper = None
                    return

    def drain(self, timeout: float = 60.0) -> None:
        """Remove every idle runner now and wait for all removals to finish."""
        with self._cond:
            for key, idle in self._idle.items():
                for runner, _ in idle:
                    self._live[key] -= 1
                    self._discard_later(runner)
                idle.clear()
            deadline = time.monotonic() + timeout
            while self._removals and time.monotonic() < deadline:
                self._cond.wait(timeout=0.1)

    def stats(self) -> dict[str, Any]:
        """Counts for tests and logs: live and idle runners, removals in flight."""
        with self._cond:
            return {
                "live": sum(self._live.values()),
                "idle": sum(len(v) for v in self._idle.values()),
                "removing": len(self._removals),
            }


POOL = Pool()
"""The process-wide pool."""


def shutdown() -> None:
    """Remove every pooled container, then close the shared backends (run at exit)."""
    POOL.drain()
    close_shared_backends()


atexit.register(shutdown)
