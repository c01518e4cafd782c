"""A job and its container in one ``srun``: the allocation, the start step, and its pipes.

``srun`` (no ``sbatch``) asks for the allocation and runs the start step in it at once:
Slurm allocates an interactive job as soon as the request arrives, whereas a batch job waits
for the scheduler's loop (0.5 s with ``batch_sched_delay=0,sched_min_interval=0``, 2.6 s
with Slurm's defaults on the test cluster). The step first prints one line, ``READY <job>
<node>``, then checks the node and runs ``podman run -i`` (:data:`~.scripts.START`); its
stdin and stdout are the runner's channel. While the job pends, the step has printed
nothing: the job is found by a token in its comment, and ``queue_timeout`` and the reasons
that never clear apply as for any job.
"""

from __future__ import annotations

import logging
import math
import os
import select
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass

from oci_executor.backend import ContainerSpec
from oci_executor.backends.slurm import cli as s
from oci_executor.backends.slurm import images
from oci_executor.backends.slurm.steps import read_line
from oci_executor.errors import BackendError, ConfigurationError, EngineUnavailableError

log = logging.getLogger(__name__)

FIRST_LOOK = 1.0
"""Seconds to wait for the step's first line before asking squeue why (allocation is ~0.1 s)."""
LOOK_EVERY = 0.5


@dataclass
class Started:
    """A running start step: its process, its job and node, and its stderr (a held fd)."""

    process: subprocess.Popen[bytes]
    job_id: str
    node: str
    stderr_fd: int


def srun_argv(cli: s.Cli, spec: ContainerSpec, comment: str, script: str, args: list[str]) -> list[str]:
    """``srun`` allocating one job for ``spec`` and running ``script`` (bash) with ``args`` in it."""
    return [
        *cli.run_as(),
        "srun",
        f"--job-name={s.JOB_NAME}",
        f"--comment={comment}",
        "--nodes=1",
        "--ntasks=1",
        "--quiet",
        "--unbuffered",  # srun holds output until a newline otherwise: frames have none
        f"--time={max(1, math.ceil(spec.max_lifetime / 60))}",
        *s.request_args(spec),
        "bash",
        "-c",
        script,
        "oci-executor-step",
        *args,
    ]


def start(
    cli: s.Cli, spec: ContainerSpec, comment: str, script: str, policy: str, args: list[str]
) -> Started:
    """Start the step with ``spec.image``, the pull ``policy`` and ``args``; return once it runs
    on a node and has the image there (streamed from this host if the node lacks it and cannot
    pull it, :mod:`.images`); raise, the job cancelled, if it cannot."""
    token = uuid.uuid4().hex[:16]
    stderr_fd = _held_tempfile()
    try:
        process = subprocess.Popen(
            srun_argv(cli, spec, f"{comment} token={token}", script, [spec.image, policy, *args]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_fd,
            env=cli.env(),
            cwd="/",
            bufsize=0,
            start_new_session=True,  # a Ctrl-C of the driver is not the step's to see
        )
    except FileNotFoundError:
        os.close(stderr_fd)
        raise EngineUnavailableError(s.not_installed()) from None
    try:
        job_id, node = _wait_ready(cli, spec, process, token, stderr_fd)
        images.await_image(cli, process, job_id, node, spec.image, policy, lambda: stderr_text(stderr_fd))
    except BaseException:
        _abandon(cli, process, token)
        os.close(stderr_fd)
        raise
    return Started(process, job_id, node, stderr_fd)


def _held_tempfile() -> int:
    """The step's stderr: an unlinked temp file held open (nothing is left if we are killed)."""
    fd, path = tempfile.mkstemp(prefix="oci-executor-slurm-", suffix=".stderr")
    os.unlink(path)
    return fd


def stderr_text(fd: int) -> str:
    return s.decode(os.pread(fd, 1 << 20, 0))


def _wait_ready(
    cli: s.Cli, spec: ContainerSpec, process: subprocess.Popen[bytes], token: str, stderr_fd: int
) -> tuple[str, str]:
    """The job and node from the step's first line; the job's pending reason meanwhile."""
    assert process.stdout is not None
    started = time.monotonic()
    wait = FIRST_LOOK
    last_reason = ""
    while True:
        readable, _, _ = select.select([process.stdout], [], [], wait)
        if readable:
            line = read_line(process)
            fields = line.decode("utf-8", "replace").split()
            if len(fields) == 3 and fields[0] == s.READY:
                return fields[1], fields[2]
            code = process.wait()
            raise s.alloc_error(
                stderr_text(stderr_fd) or f"srun ended ({code}) before its step ran", spec, cli
            )
        wait = LOOK_EVERY
        job_id, state, reason = find_job(cli, token)
        if reason in s.NEVER_RUNS:
            raise ConfigurationError(
                f"Slurm job {job_id} can never start ({s.request(spec)}): squeue says {reason}: "
                f"{s.NEVER_RUNS[reason]}. The job was cancelled."
            )
        if reason != last_reason and reason not in ("None", ""):
            log.info("Slurm job %s is %s (reason: %s)", job_id, state.lower(), reason)
            last_reason = reason
        if time.monotonic() - started > spec.queue_timeout:
            raise BackendError(
                f"Slurm job {job_id or '(not listed yet)'} was still pending after queue_timeout="
                f"{spec.queue_timeout:g} s (squeue's reason: {reason or 'none given'}; "
                f"{s.pending_advice(reason)}). It was cancelled. Raise queue_timeout to wait longer, "
                "or ask for less (cpus, memory, gpus) or another partition."
            )


def find_job(cli: s.Cli, token: str) -> tuple[str, str, str]:
    """``(job id, state, reason)`` of the job whose comment holds ``token`` (empty if none)."""
    result = cli.run(["squeue", "--noheader", f"--name={s.JOB_NAME}", "--format=%i|%T|%r|%k"])
    for line in s.decode(result.stdout).splitlines():
        job_id, state, reason, comment = (line.split("|", 3) + ["", "", ""])[:4]
        if f"token={token}" in comment.split():
            return job_id.strip(), state, reason
    return "", "", ""


def _abandon(cli: s.Cli, process: subprocess.Popen[bytes], token: str) -> None:
    """End a step that will not be used: its srun (which gives the request up) and its job."""
    job_id = find_job(cli, token)[0] if process.poll() is None else ""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if job_id:
        cli.run(["scancel", job_id])
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
