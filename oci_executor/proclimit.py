"""A cap on the processes of the local backend's runner (its ``pids_limit``).

Engines cap a container's processes with its pids cgroup. The local backend has no engine:
when this process may create a pids cgroup (root, with cgroup v1's ``pids`` hierarchy or a
cgroup v2 tree that delegates ``pids``), the runner starts inside one of its own, with
``pids.max`` set, and :func:`remove_group` kills what is left in it and removes it. Otherwise
the runner starts with ``RLIMIT_NPROC`` (soft and hard, so the task cannot raise it) at the
user's current number of processes and threads plus the limit: the kernel counts that per
user, so it caps the user's total, and root is exempt from it.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_V1 = "/sys/fs/cgroup/pids"
_V2 = "/sys/fs/cgroup"


def _base() -> str | None:
    if os.path.isfile(os.path.join(_V1, "cgroup.procs")):
        return _V1
    try:
        with open(os.path.join(_V2, "cgroup.subtree_control"), encoding="ascii") as handle:
            if "pids" in handle.read().split():
                return _V2
    except OSError:
        pass
    return None


def new_group(name: str, limit: int) -> str | None:
    """A pids cgroup ``name`` with ``pids.max = limit``, or None when this process may not make one."""
    base = _base()
    if base is None or os.geteuid() != 0:
        return None
    path = os.path.join(base, name)
    try:
        os.mkdir(path)
        with open(os.path.join(path, "pids.max"), "w", encoding="ascii") as handle:
            handle.write(str(limit))
    except OSError as exc:
        log.debug("no pids cgroup for the local runner (%s)", exc)
        remove_group(path)
        return None
    return path


def user_tasks(uid: int) -> int:
    """Processes and threads of ``uid`` (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            count += int(fields.get("Threads", "1").strip() or 1)
    return count


def preexec(group: str | None, limit: int) -> Callable[[], None]:
    """What the runner's process runs before the runner: join ``group``, else set RLIMIT_NPROC."""
    if group is not None:
        procs = os.path.join(group, "cgroup.procs")

        def join() -> None:
            with open(procs, "w", encoding="ascii") as handle:
                handle.write("0")

        return join
    if os.geteuid() == 0:
        log.warning(
            "pids_limit=%d is not enforced on the local backend here: root is exempt from RLIMIT_NPROC "
            "and no pids cgroup could be created; use an engine backend to cap a task's processes",
            limit,
        )
        return lambda: None
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    cap = user_tasks(os.getuid()) + limit
    cap = cap if hard == resource.RLIM_INFINITY else min(cap, hard)

    def rlimit() -> None:
        resource.setrlimit(resource.RLIMIT_NPROC, (cap, cap))

    return rlimit


def remove_group(path: str | None) -> None:
    """Kill whatever is left in the group, then remove it."""
    if path is None:
        return
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            pass
        try:
            with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as handle:
                pids = [int(line) for line in handle if line.strip()]
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
    log.warning("could not remove the pids cgroup %s", path)
