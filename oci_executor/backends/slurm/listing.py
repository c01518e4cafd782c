"""Our jobs as ``oci-executor ls`` lists them and ``gc`` removes them.

A job of ours is named ``oci-executor``; its comment carries the driver (``owner=host:pid:start``,
as the containers' owner label on the other backends) and the task's dispatch and node.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from oci_executor.backend import ManagedContainer
from oci_executor.backends.slurm import cli as s
from oci_executor.labels import DISPATCH_LABEL, NODE_LABEL, OWNER_LABEL

FORMAT = "--format=%i|%T|%N|%V|%u|%k"
"""job id, state, node, submit time, user, comment."""


def comment(owner: str, labels: Mapping[str, str]) -> str:
    """The job's comment: who started it, for what (one word each, no spaces)."""
    words = [s.JOB_NAME, f"owner={owner}"]
    for key, word in ((DISPATCH_LABEL, "dispatch"), (NODE_LABEL, "node")):
        value = "".join(labels.get(key, "").split())
        if value:
            words.append(f"{word}={value}")
    return " ".join(words)


def comment_fields(text: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in text.split() if "=" in word)


def listed(cli: s.Cli) -> list[ManagedContainer]:
    """Every job of ours that squeue shows (of the address's user; as root, of every user)."""
    argv = ["squeue", "--noheader", f"--name={s.JOB_NAME}", FORMAT]
    if cli.user or not s.is_root():
        argv.append(f"--user={cli.user or s.me()}")
    result = cli.run(argv)
    if result.returncode != 0:
        from oci_executor.errors import EngineUnavailableError

        raise EngineUnavailableError(
            f"squeue failed ({' '.join(s.decode(result.stderr).split())}): {s.controller_fix(cli.conf)}."
        )
    found = []
    for line in s.decode(result.stdout).splitlines():
        parts = line.split("|", 5)
        if len(parts) < 6:
            continue
        job_id, state, node, submitted, user, text = (p.strip() for p in parts)
        fields = comment_fields(text)
        labels = {
            OWNER_LABEL: fields.get("owner", ""),
            DISPATCH_LABEL: fields.get("dispatch", ""),
            NODE_LABEL: fields.get("node", ""),
            s.JOB_LABEL: job_id,
            s.NODE_LABEL: node,
            "user": user,
        }
        name = f"{s.CONTAINER_PREFIX}{job_id}-{node}" if node else f"{s.CONTAINER_PREFIX}{job_id}"
        found.append(
            ManagedContainer(name, f"job {job_id} on {node or '-'}", state.lower(), _epoch(submitted), labels)
        )
    return found


def _epoch(text: str) -> float | None:
    """squeue's local time ``2026-12-03T03:40:22`` as seconds since the epoch."""
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
