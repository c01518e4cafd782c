"""The soak figures of scripts/benchmark.py (``--soak``): many tasks, and what they leave behind.

1. ``--soak-tasks`` (5,000) warm tasks through one process (``run_sync`` on one warm
   container): tasks per second and the median and 99th percentile latency of each thousand,
   and the growth of this process's memory (VmRSS), open descriptors and threads from after
   the warm-up to the end, both measured with one warm container held.
2. ``--soak-electrons`` (500) electrons through a real Covalent server, as dispatches of 50
   (``FANOUT_WIDTH``): electrons per second for each dispatch, and the growth of the server
   process's memory, descriptors and threads from after the first dispatch to the end, both
   measured right after a dispatch (its containers warm).

Targets: no error, memory growth under 5 MB, no descriptor and no thread more at the end.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MEMORY_TARGET_MB = 5.0
DISPATCH_WIDTH = 50


@dataclass(frozen=True)
class Usage:
    """What a process holds: resident memory (kB), open descriptors, threads."""

    rss_kb: int
    fds: int
    threads: int

    @classmethod
    def of(cls, pid: int | str = "self") -> Usage:
        fields: dict[str, str] = {}
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        return cls(
            int(fields["VmRSS"].split()[0]), len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"])
        )

    def growth(self, later: Usage) -> str:
        mb = (later.rss_kb - self.rss_kb) / 1024
        verdict = (
            "ok"
            if mb < MEMORY_TARGET_MB and later.fds <= self.fds and later.threads <= self.threads
            else "OVER TARGET"
        )
        return (
            f"memory {self.rss_kb / 1024:.1f} -> {later.rss_kb / 1024:.1f} MB ({mb:+.1f} MB), "
            f"descriptors {self.fds} -> {later.fds} ({later.fds - self.fds:+d}), "
            f"threads {self.threads} -> {later.threads} ({later.threads - self.threads:+d}): {verdict}"
        )


def _settled(usage: Callable[[], Usage], seconds: float = 1.0) -> Usage:
    """Usage after background removals and reapers had a moment."""
    time.sleep(seconds)
    return usage()


def warm_soak(executor: Any, task: Callable[..., Any], count: int, report: Callable[[str], None]) -> bool:
    """``count`` warm tasks ``task(i, 1) == i + 1`` through ``executor.run_sync``; True if on target."""
    meta = {"dispatch_id": "soak", "node_id": 0}
    for i in range(100):  # warm-up: a container, imports, allocator pools
        executor.run_sync(task, [i, 1], {}, meta)
    start_usage = _settled(Usage.of)
    errors = 0
    block: list[float] = []
    began = time.perf_counter()
    for i in range(count):
        t = time.perf_counter()
        try:
            outcome = executor.run_sync(task, [i, 1], {}, meta)
            errors += outcome.value_repr != str(i + 1)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the soak goes on
            errors += 1
            report(f"    task {i}: {type(exc).__name__}: {exc}")
        block.append(time.perf_counter() - t)
        if len(block) == 1000 or i == count - 1:
            ms = sorted(x * 1000 for x in block)
            report(
                f"    tasks {i + 1 - len(block):>5}-{i:>5}: {len(block) / sum(block):6.0f} tasks/s, "
                f"median {statistics.median(ms):.2f} ms, p99 {ms[int(len(ms) * 0.99) - 1]:.2f} ms"
            )
            block = []
    elapsed = time.perf_counter() - began
    end_usage = _settled(Usage.of)
    report(f"    {count} warm tasks in {elapsed:.1f} s: {count / elapsed:.0f} tasks/s, {errors} errors")
    report(f"    driver: {start_usage.growth(end_usage)}")
    return errors == 0 and "ok" in start_usage.growth(end_usage)


def server_soak(
    workflow: Any, server_pid: Callable[[], int], electrons: int, report: Callable[[str], None]
) -> bool:
    """``electrons`` electrons as dispatches of ``workflow`` (DISPATCH_WIDTH squares and their sum)."""
    import covalent as ct

    expected = sum(i * i for i in range(DISPATCH_WIDTH))
    dispatches = max(2, electrons // DISPATCH_WIDTH)
    errors = 0
    start_usage = None
    began = time.perf_counter()
    for n in range(dispatches):
        t = time.perf_counter()
        result = ct.get_result(ct.dispatch(workflow)(DISPATCH_WIDTH), wait=True)
        took = time.perf_counter() - t
        ok = str(result.status) == "COMPLETED" and result.result == expected
        errors += not ok
        usage = Usage.of(server_pid())
        start_usage = start_usage or usage
        report(
            f"    dispatch {n + 1:>2}/{dispatches}: {DISPATCH_WIDTH + 1} electrons in {took:5.1f} s "
            f"({(DISPATCH_WIDTH + 1) / took:4.1f}/s){'' if ok else f' FAILED: {result.error}'}; "
            f"server {usage.rss_kb / 1024:.1f} MB, {usage.fds} fds, {usage.threads} threads"
        )
    elapsed = time.perf_counter() - began
    total = dispatches * (DISPATCH_WIDTH + 1)
    end_usage = Usage.of(server_pid())
    assert start_usage is not None
    report(
        f"    {total} electrons in {elapsed:.0f} s: {total / elapsed:.1f} electrons/s, {errors} failed dispatches"
    )
    report(f"    server, from after the first dispatch: {start_usage.growth(end_usage)}")
    return errors == 0 and "ok" in start_usage.growth(end_usage)


def threads_named() -> list[str]:
    """This process's thread names (for a report when threads grew)."""
    return sorted(t.name for t in threading.enumerate())
