"""The slurm backend's jobs: submitted (the holder script), waited for until they run (or
can never run, or pend past ``queue_timeout``), looked up, and ended (``scancel``, then wait)."""

from __future__ import annotations

import logging
import time

from oci_executor.backend import ContainerSpec
from oci_executor.backends.slurm import cli as s
from oci_executor.backends.slurm.steps import GONE_TIMEOUT
from oci_executor.errors import BackendError, ConfigurationError, ContainerError, EngineUnavailableError
from oci_executor.owner import this_owner

log = logging.getLogger(__name__)


def submit(cli: s.Cli, spec: ContainerSpec) -> str:
    """``sbatch`` the holder job for one container of ``spec``; its job id."""
    result = cli.run(s.sbatch_argv(cli, spec, f"oci-executor owner={this_owner()}"), stdin=s.HOLDER.encode())
    if result.returncode != 0:
        raise s.sbatch_error(s.decode(result.stderr), spec, cli)
    job_id = s.decode(result.stdout).strip().split(";")[0]
    if not job_id.isdigit():
        raise BackendError(f"sbatch answered {job_id!r}, not a job id")
    return job_id


def wait_running(cli: s.Cli, job_id: str, spec: ContainerSpec) -> str:
    """The job's node once it runs; a job pending past ``queue_timeout`` is cancelled."""
    start = time.monotonic()
    delay = 0.02
    last_reason = ""
    while True:
        state, node, reason = job_state(cli, job_id)
        if state == "RUNNING" and node:
            return node
        if state not in s.ACTIVE_STATES:
            raise BackendError(
                f"Slurm job {job_id} ended before it started ({state or 'gone'}"
                f"{f', reason {reason}' if reason and reason != 'None' else ''}). "
                f"`sacct -j {job_id}` or the slurmctld log says why; check the Slurm options."
            )
        if reason in s.NEVER_RUNS:
            raise ConfigurationError(
                f"Slurm job {job_id} can never start ({s.request(spec)}): squeue says {reason}: "
                f"{s.NEVER_RUNS[reason]}. The job was cancelled."
            )
        if reason != last_reason and reason not in ("None", ""):
            log.info("Slurm job %s is %s (reason: %s)", job_id, state.lower(), reason)
            last_reason = reason
        waited = time.monotonic() - start
        if waited > spec.queue_timeout:
            raise BackendError(
                f"Slurm job {job_id} was still pending after queue_timeout={spec.queue_timeout:g} s "
                f"(squeue's reason: {reason or 'none given'}; {s.pending_advice(reason)}). It was cancelled. "
                "Raise queue_timeout to wait longer, or ask for less (cpus, memory, gpus) or another partition."
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


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
