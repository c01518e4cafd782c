"""The ``slurm`` backend: one Slurm job holds one rootless Podman container.

Slurm decides where a task runs; Podman runs it. The verbs map onto a job:

- ``create``: one ``srun`` asks for the job and runs its one step, :data:`.scripts.START`
  (:mod:`.alloc`): the step says where it runs, checks the node and the image, and execs
  ``podman run -i --rm ... python3 -c BOOTSTRAP``. That step's stdin and stdout are the
  runner's channel, as the local backend's subprocess pipes are. The handle (the container's
  id, name and hostname) is ``oci-slurm-<job id>-<node>``.
- ``exec``, ``copy_in``, ``copy_out``: ``srun --jobid J --overlap podman exec/cp``, streaming.
- ``stop``/``remove``: ``podman rm -f -t 0`` on the node, ``scancel``, and wait until the job
  has ended.

Nothing outlives its driver: the driver's death closes the step's stdin, so the runner ends,
Podman removes the container and the job ends with its step; the step's trap removes the
container on ``scancel`` and at the job's time limit; a step whose ``srun`` was killed ends
its job when the runner ends (``idle_timeout``); a new backend cancels the jobs of dead
drivers on this host, and each new job removes containers on its node whose job is gone.
``oci-executor ls`` lists the jobs (:mod:`.listing`), ``gc`` cancels those of dead drivers, and
the doctor checks the cluster (:mod:`.diagnosis`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import threading
from collections.abc import Mapping, Sequence

from oci_executor.backend import (
    OPTIONAL_SETTINGS,
    Backend,
    BackendConfig,
    Container,
    ContainerSpec,
    ExecResult,
    ManagedContainer,
)
from oci_executor.backends.shared.archive import make_tar, read_tar
from oci_executor.backends.shared.intent import container_intent
from oci_executor.backends.shared.runargs import run_args
from oci_executor.backends.slurm import alloc, diagnosis, listing
from oci_executor.backends.slurm import cli as s
from oci_executor.backends.slurm.jobs import end_job, job_state, remove_left_container
from oci_executor.backends.slurm.options import NOTES, OPTIONS
from oci_executor.backends.slurm.steps import GONE_TIMEOUT, StepChannel, parse_handle
from oci_executor.channel import Channel
from oci_executor.errors import (
    ConfigurationError,
    ContainerError,
    ContainerNotFoundError,
    EngineUnavailableError,
    OCIExecutorError,
)
from oci_executor.findings import Finding
from oci_executor.hookspecs import hookimpl
from oci_executor.owner import owner_state, this_owner
from oci_executor.registry import BackendRegistry

log = logging.getLogger(__name__)

SCRATCH_DIR = "/tmp/oci-executor"
NODE_ENV = ("SLURMD_NODENAME", "SLURM_JOB_ID")
OOM_KILLS = r"""
d=$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup); d=/sys/fs/cgroup/memory${d%/step_*}
[ -d "$d" ] && find "$d" -name memory.oom_control -exec sed -n 's/^oom_kill //p' {} + | awk '{n += $1} END {print n + 0}'
"""
"""A step printing how many processes the kernel's OOM killer killed in the job's memory cgroup."""
JOB_TIME_MARGIN = 60.0
"""Seconds a job lives beyond a task's ``time_limit`` (start-up and clean-up)."""


class SlurmBackend(Backend):
    """Each container is a Slurm job's rootless Podman container on the job's node."""

    name = "slurm"
    priority = -20
    auto_candidate = False
    supported_options = frozenset(OPTIONAL_SETTINGS)
    options = OPTIONS
    option_notes = NOTES
    option_note_default = "as Podman (rootless, on the node)"

    def __init__(self, config: BackendConfig | None = None) -> None:
        super().__init__(config)
        self.cli = s.Cli.from_address(self.config.address)
        self._steps: dict[str, subprocess.Popen[bytes]] = {}
        self._stderr: dict[str, int] = {}
        """The start steps' stderr: unlinked temp files held open (nothing left if we are killed)."""
        self._lock = threading.Lock()

    # -- the cluster -------------------------------------------------------------------

    def describe(self) -> str:
        where = self.cli.conf or os.environ.get("SLURM_CONF") or "default slurm.conf"
        return f"slurm ({where}{f', jobs as {self.cli.user}' if self.cli.user else ''})"

    def installed(self) -> bool:
        return s.installed()

    def check(self) -> None:
        if not s.installed():
            raise EngineUnavailableError(s.not_installed())
        result = self.cli.run(["sinfo", "--noheader", "--format=%P"], timeout=15)
        if result.returncode != 0:
            raise EngineUnavailableError(
                f"sinfo failed ({' '.join(s.decode(result.stderr).split())}): {s.controller_fix(self.cli.conf)}."
            )

    def adapt_spec(self, spec: ContainerSpec, time_limit: float | None) -> ContainerSpec:
        """A task's ``time_limit`` bounds its job's ``--time`` (and the runner's lifetime)."""
        if time_limit:
            return dataclasses.replace(
                spec, max_lifetime=min(spec.max_lifetime, time_limit + JOB_TIME_MARGIN)
            )
        return spec

    # -- create: one srun makes the job and starts the container ---------------------------

    def create(self, spec: ContainerSpec) -> Container:
        """One ``srun`` makes the job and runs its start step (:mod:`.alloc`); it returns once
        the step runs on a node and has the image there (pulled per ``pull_policy``, else
        streamed from this host's store: :mod:`.images`)."""
        if not spec.command:
            raise ConfigurationError("a container needs a main process (ContainerSpec.command)")
        if not s.installed():
            raise EngineUnavailableError(s.not_installed())
        run = [
            "run",
            "--interactive",
            "--rm",
            "--name=@NAME@",
            "--hostname=@NAME@",
            "--pull=never",
            f"--label={s.JOB_LABEL}=@JOB@",
            f"--label={s.NODE_LABEL}=@NODE@",
            *[f"--env={name}" for name in NODE_ENV],  # the task can tell its node and job
            # cpus and memory are the job's (srun -c, --mem): Slurm enforces them on the node
            *run_args(container_intent(spec, rootless=True), limits=False),
            spec.image,
            *spec.command,
        ]
        script = s.NODE_CHECKS + s.START
        owner = listing.comment(this_owner(), spec.labels)
        started = alloc.start(self.cli, spec, owner, script, self.config.pull_policy, run)
        container_id = f"{s.CONTAINER_PREFIX}{started.job_id}-{started.node}"
        with self._lock:
            self._steps[container_id] = started.process
            self._stderr[container_id] = started.stderr_fd
        return Container(
            id=container_id,
            backend=self.name,
            image=spec.image,
            image_id=spec.image,
            scratch_dir=SCRATCH_DIR,
            python=spec.python,
            address=self.config.address or "",
        )

    # -- the verbs on a running container ------------------------------------------------

    def attach(self, container: Container) -> Channel:
        with self._lock:
            process = self._steps.get(container.id)
            handle = self._stderr.get(container.id)
        if handle is None or process is None or process.stdin is None or process.stdout is None:
            raise ContainerError(f"container {container.id} was not started by this process: cannot attach")
        return StepChannel(process, f"/proc/self/fd/{handle}", container)

    def _step(
        self,
        container: Container,
        podman_args: Sequence[str],
        stdin: bytes | None = None,
        script: str = 'exec podman "$@"',
    ) -> subprocess.CompletedProcess[bytes]:
        job_id, node = parse_handle(container.id)
        result = self.cli.run(self.cli.srun(job_id, script, podman_args), stdin=stdin, timeout=3600)
        if result.returncode != 0:
            err = s.decode(result.stderr)
            mapped = s.node_error(err, result.returncode, container.image, node)
            if mapped is not None:
                raise mapped
            lower = err.lower()
            if (
                "no such container" in lower
                or "invalid job id" in lower
                or "job/step already completing" in lower
            ):
                raise ContainerNotFoundError(
                    f"container {container.id} (Slurm job {job_id} on {node}) is gone: {err.strip()[-500:]}",
                    container_id=container.id,
                )
        return result

    def exec(
        self,
        container: Container,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> ExecResult:
        args = ["exec"] + [f"--env={k}={v}" for k, v in (env or {}).items()]
        if workdir:
            args.append(f"--workdir={workdir}")
        result = self._step(container, [*args, container.id, *argv])
        return ExecResult(result.returncode, result.stdout, result.stderr)

    def copy_in(self, container: Container, dest_dir: str, files: Mapping[str, bytes]) -> None:
        result = self._step(container, ["cp", "-", f"{container.id}:/"], stdin=make_tar(dest_dir, files))
        if result.returncode != 0:
            raise ContainerError(
                f"could not copy files into {container.id}: {s.decode(result.stderr).strip()[-1000:]}"
            )

    def copy_out(self, container: Container, src_dir: str) -> dict[str, bytes]:
        result = self._step(container, ["cp", f"{container.id}:{src_dir}", "-"])
        if result.returncode != 0:
            raise ContainerError(
                f"could not copy {src_dir} out of {container.id}: {s.decode(result.stderr).strip()[-1000:]}"
            )
        return read_tar([result.stdout], src_dir)

    # -- stop, remove, sweep -------------------------------------------------------------

    def stop(self, container: Container) -> None:
        """Kill and remove the container on its node, cancel its job, and wait until it ended."""
        job_id, node = parse_handle(container.id)
        state, _, _ = job_state(self.cli, job_id)
        removed = False
        if state == "RUNNING":
            try:
                removed = self._step(container, ["rm", "--force", "--time=0", container.id]).returncode == 0
            except ContainerNotFoundError:
                pass
        end_job(self.cli, job_id)
        if state in ("RUNNING", "COMPLETING") and not removed:  # it was ending under us (driver killed)
            remove_left_container(self.cli, node, container.id)

    def remove(self, container: Container) -> None:
        self.stop(container)
        with self._lock:
            process = self._steps.pop(container.id, None)
            handle = self._stderr.pop(container.id, None)
        if process is not None:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
            try:
                process.wait(timeout=GONE_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if handle is not None:
            os.close(handle)

    def sweep_unstarted(self, older_than: float) -> list[str]:
        """Cancel our jobs whose driver, a process on this host, has died (their traps remove
        the containers); jobs of drivers elsewhere end by their own limits."""
        result = self.cli.run(
            [
                "squeue",
                "--noheader",
                f"--name={s.JOB_NAME}",
                f"--user={self.cli.user or s.me()}",
                "--format=%i|%k",
            ]
        )
        if result.returncode != 0:
            return []
        swept = []
        for line in s.decode(result.stdout).splitlines():
            job_id, _, comment = line.partition("|")
            if owner_state(listing.comment_fields(comment).get("owner")) != "gone":
                continue  # its driver lives, or runs on another host: the job's limits end it
            try:
                end_job(self.cli, job_id.strip())
                swept.append(job_id.strip())
            except OCIExecutorError as exc:
                log.debug("could not sweep Slurm job %s: %s", job_id, exc)
        return swept

    # -- what ls, gc and the doctor see --------------------------------------------------

    def managed(self) -> list[ManagedContainer]:
        """Our jobs in the queue, each as the container it holds (none where Slurm is not installed)."""
        return listing.listed(self.cli) if s.installed() else []

    def remove_managed(self, container_id: str) -> None:
        """Remove the job's container and cancel the job (a pending one is only cancelled)."""
        try:
            parse_handle(container_id)
        except ContainerNotFoundError:  # a pending job: no node, no container yet
            end_job(self.cli, container_id.removeprefix(s.CONTAINER_PREFIX))
            return
        self.stop(Container(container_id, self.name, "", "", SCRATCH_DIR, ""))

    def diagnose(self, spec: ContainerSpec, pull_policy: str) -> list[Finding]:
        return diagnosis.diagnose(self, spec, pull_policy)

    def oom_killed(self, container: Container) -> bool:
        """Whether the kernel killed a process of the job at its memory limit: the job's memory
        cgroup counts it (Slurm's task/cgroup; False where Slurm makes no memory cgroup)."""
        try:
            result = self._step(container, [], script=OOM_KILLS)
        except OCIExecutorError:
            return False
        return s.decode(result.stdout).strip() not in ("", "0")

    def close(self) -> None:
        with self._lock:
            ids = list(self._steps)
        for container_id in ids:
            job_id, node = parse_handle(container_id)
            try:
                self.remove(Container(container_id, self.name, "", "", SCRATCH_DIR, ""))
            except OCIExecutorError as exc:
                log.warning("could not remove Slurm job %s on %s: %s", job_id, node, exc)


@hookimpl
def oci_executor_register_backends(registry: BackendRegistry) -> None:
    registry.add(SlurmBackend)
