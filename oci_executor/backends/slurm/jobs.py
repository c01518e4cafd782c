"""The slurm backend's jobs: looked up, and ended (``scancel``, then wait). They are made by
:mod:`.alloc`."""

from __future__ import annotations

import logging
import time

from oci_executor.backends.slurm import cli as s
from oci_executor.backends.slurm.steps import GONE_TIMEOUT
from oci_executor.errors import ContainerError, EngineUnavailableError

log = logging.getLogger(__name__)


def job_state(cli: s.Cli, job_id: str) -> tuple[str, str, str]:
    """``(state, node, reason)``; state ``""`` once the job is gone."""
    result = cli.run(["squeue", "--noheader", f"--jobs={job_id}", "--format=%T|%N|%r"])
    out, err = s.decode(result.stdout).strip(), s.decode(result.stderr)
    if result.returncode != 0:
        if "invalid job id" in err.lower():
            return "", "", ""
        raise EngineUnavailableError(
            f"squeue failed ({' '.join(err.split())}): {s.controller_fix(cli.conf)}."
        )
    if not out:
        return "", "", ""
    state, node, reason = (out.splitlines()[0].split("|") + ["", ""])[:3]
    return state, node, reason


def end_job(cli: s.Cli, job_id: str) -> None:
    """``scancel`` the job (its trap removes the container) and wait until it has ended."""
    cli.run(["scancel", job_id])
    deadline = time.monotonic() + GONE_TIMEOUT
    delay = 0.02
    while True:
        state, _, _ = job_state(cli, job_id)
        if state not in s.ACTIVE_STATES:
            return
        if time.monotonic() > deadline:
            raise ContainerError(
                f"Slurm job {job_id} was cancelled but is still {state} after {GONE_TIMEOUT:g} s"
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


def remove_left_container(cli: s.Cli, node: str, name: str) -> None:
    """Remove container ``name`` from ``node`` through a short job of its own: for a container
    whose job ended before its trap or our step could remove it (the driver was killed)."""
    argv = [
        *cli.run_as(),
        "srun",
        f"--nodelist={node}",
        "--nodes=1",
        "--ntasks=1",
        "--quiet",
        "--time=1",
        f"--job-name={s.JOB_NAME}-cleanup",
        "bash",
        "-c",
        s.NODE_PRELUDE + 'podman rm --force --time=0 --ignore "$1" >/dev/null',
        "oci-executor-cleanup",
        name,
    ]
    try:
        result = cli.run(argv, timeout=GONE_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - best effort: the next job on the node sweeps it too
        log.debug("could not remove %s on %s: %s", name, node, exc)
        return
    if result.returncode != 0:
        log.debug("could not remove %s on %s: %s", name, node, s.decode(result.stderr).strip())
