"""Who owns a container of ours, and whether that owner still runs.

Every container carries :data:`oci_executor.labels.OWNER_LABEL`: the driver's host name, process ID and the
process's start time (so a reused PID is not mistaken for the owner). ``oci-executor gc``
removes only containers whose owner is gone.
"""

from __future__ import annotations

import functools
import os
import socket
from typing import Literal

OwnerState = Literal["alive", "gone", "unknown"]


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


@functools.cache
def this_owner() -> str:
    """This process's owner value: ``host:pid:start``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '0'}"


def owner_state(value: str | None) -> OwnerState:
    """Whether the process an owner value names is still running on this host.

    ``unknown`` for a value from another host (a remote engine's client) or without a
    parseable owner (containers made by older versions).
    """
    try:
        host, pid_text, start = (value or "").rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return "unknown"
    if host != socket.gethostname():
        return "unknown"
    return "alive" if _start_time(pid) == start else "gone"
