"""The Slurm command line, and Slurm's messages mapped to our errors.

The backend talks to Slurm only through its command line tools (``srun``, ``squeue``,
``scancel``, ``sinfo``): they are the stable interface across Slurm versions.
Every step on a node starts with :data:`NODE_PRELUDE`, which fixes one runtime folder for
rootless Podman (the submit side's ``XDG_RUNTIME_DIR`` means nothing on a node) and checks
that Podman is there.
"""

from __future__ import annotations

import math
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from oci_executor.backend import ContainerSpec
from oci_executor.backends.slurm.options import slurm_options
from oci_executor.backends.slurm.scripts import (  # noqa: F401 - re-exported: what the backend reads
    ACTIVE_STATES,
    CONTAINER_PREFIX,
    IMAGE_LINE,
    JOB_LABEL,
    JOB_NAME,
    LOAD,
    LOAD_EXIT,
    NO_IMAGE_EXIT,
    NO_PODMAN_EXIT,
    NODE_CHECKS,
    NODE_ERROR,
    NODE_LABEL,
    NODE_PRELUDE,
    PULL_EXIT,
    READY,
    RUNTIME_DIR_EXIT,
    SAVE,
    START,
)
from oci_executor.errors import (
    BackendError,
    ConfigurationError,
    EngineUnavailableError,
    OCIExecutorError,
)
from oci_executor.secrets import scrubbed_environ

CLI_TIMEOUT = 60.0
"""Seconds any Slurm command may take (the controller answers in milliseconds when up)."""
NEVER_RUNS = {
    "PartitionTimeLimit": "its --time (from max_lifetime, or time_limit + 60 s) is above the partition's "
    "MaxTime (`sinfo -o '%P %l'` shows it): lower max_lifetime, or use another partition",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows",
    "BadConstraints": "no node of the partition can ever meet its request (cpus, memory, gpus or slurm_args): "
    "`sinfo -N -o '%N %c %m %G'` shows what the nodes have; lower the request or use another partition",
    "PartitionConfig": "it asks for more than the partition's nodes have (cpus, memory, gpus) or for an account "
    "or qos the partition does not allow: `sinfo -N -o '%N %P %c %m %G'` shows the nodes; ask for less",
    "InvalidAccount": "the account is not valid: `sacctmgr show assoc user=$USER` lists yours",
    "InvalidQOS": "the qos is not valid for the account: `sacctmgr show assoc user=$USER format=account,qos`",
}
"""squeue reasons that mean a pending job will never start, with what to do."""


@dataclass(frozen=True)
class Cli:
    """How to run Slurm's tools: the config file, and (as root) the user jobs run as."""

    conf: str | None = None
    user: str | None = None

    @classmethod
    def from_address(cls, address: str | None) -> Cli:
        """``[user@]/path/to/slurm.conf``; empty: ``SLURM_CONF`` or Slurm's default."""
        user, _, conf = (address or "").rpartition("@")
        if user and os.geteuid() != 0:
            raise ConfigurationError(
                f"address={address!r} names a user ({user}) to run jobs as: only root may do that "
                "(srun --uid). Leave the user out: your jobs run as you."
            )
        if user:
            try:
                pwd.getpwnam(user)
            except KeyError:
                raise ConfigurationError(f"address={address!r}: there is no user {user!r} here") from None
        return cls(conf or None, user or None)

    def env(self) -> dict[str, str]:
        env = scrubbed_environ()  # sbatch --export=ALL: no secret goes into the job's record
        if self.conf:
            env["SLURM_CONF"] = self.conf
        return env

    def as_user(self) -> list[str]:
        """Options naming the user a step or a test submission runs as (root only)."""
        return [f"--uid={self.user}", f"--gid={pwd.getpwnam(self.user).pw_gid}"] if self.user else []

    def run_as(self) -> list[str]:
        """The prefix running an allocating ``srun`` as the user: ``srun --uid`` from root
        cannot read the controller's answer to a request that had to wait."""
        return ["runuser", "-u", self.user, "--"] if self.user else []

    def run(
        self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float = CLI_TIMEOUT
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a Slurm tool; a missing tool or a hang is :class:`EngineUnavailableError`."""
        try:
            return subprocess.run(
                list(argv),
                input=stdin,
                capture_output=True,
                env=self.env(),
                timeout=timeout,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                cwd="/",
            )
        except FileNotFoundError:
            raise EngineUnavailableError(not_installed()) from None
        except subprocess.TimeoutExpired:
            raise EngineUnavailableError(
                f"`{' '.join(argv[:2])} ...` did not answer within {timeout:g} s: {controller_fix(self.conf)}"
            ) from None

    def srun(self, job_id: str, script: str, args: Sequence[str] = ()) -> list[str]:
        """argv of a step in job ``job_id`` running :data:`NODE_PRELUDE` + ``script`` with ``args``."""
        return [
            "srun",
            f"--jobid={job_id}",
            "--overlap",
            "--quiet",
            "--unbuffered",  # srun holds output until a newline otherwise: frames have none
            "--ntasks=1",
            *self.as_user(),
            "bash",
            "-c",
            NODE_PRELUDE + script,
            "oci-executor-step",
            *args,
        ]


def installed() -> bool:
    return shutil.which("srun") is not None


def not_installed() -> str:
    return (
        "Slurm's command line tools (srun, squeue, scancel, sinfo) are not installed here. Install them "
        "(Debian/Ubuntu: `apt-get install slurm-client`, plus the cluster's munge key) on the machine that "
        "runs the Covalent server, and point SLURM_CONF (or the address option) at the cluster's slurm.conf"
    )


def controller_fix(conf: str | None) -> str:
    where = conf or os.environ.get("SLURM_CONF") or "the default /etc/slurm/slurm.conf"
    return (
        f"the Slurm controller does not answer. Check that slurmctld runs (`scontrol ping`), that munge "
        f"works (`munge -n | unmunge`), and that {where} is your cluster's slurm.conf (set SLURM_CONF or "
        "the executor's address to its path)"
    )


def job_minutes(spec: ContainerSpec) -> int:
    """The job's ``--time`` in whole minutes: the container's ``max_lifetime``."""
    return max(1, math.ceil(spec.max_lifetime / 60))


def request_args(spec: ContainerSpec) -> list[str]:
    """The job's request as ``srun``/``sbatch`` options: where, how much, and ``slurm_args``."""
    own = slurm_options(spec)
    argv = []
    if own.partition:
        argv.append(f"--partition={own.partition}")
    if own.account:
        argv.append(f"--account={own.account}")
    if own.qos:
        argv.append(f"--qos={own.qos}")
    if spec.cpus:
        argv.append(f"--cpus-per-task={math.ceil(spec.cpus)}")
    if spec.memory:
        argv.append(f"--mem={math.ceil(spec.memory / 1024**2)}M")
    if spec.gpus:
        count = len(spec.gpus.device_ids) or spec.gpus.count
        if count > 0:
            argv.append(f"--gpus={count}")
    return argv + list(own.slurm_args)


def request(spec: ContainerSpec) -> str:
    """The job's request, for messages."""
    return (
        f"cpus={spec.cpus or 1}, memory={spec.memory or 'default'}, gpus={'yes' if spec.gpus else 'no'}, "
        f"partition={slurm_options(spec).partition or 'default'}, slurm_args={list(slurm_options(spec).slurm_args)}"
    )


def alloc_error(stderr: str, spec: ContainerSpec, cli: Cli) -> OCIExecutorError:
    """Our error for a refused allocation (``srun``, ``sbatch --test-only``), with its fix."""
    text = " ".join(
        line for line in stderr.splitlines() if "error" in line.lower() or "refused" in line.lower()
    )
    text = " ".join((text or stderr).split())
    for tool in ("srun", "sbatch"):
        text = text.replace(f"{tool}: error: ", "")
    own = slurm_options(spec)
    lower = text.lower()
    if "invalid partition" in lower:
        return ConfigurationError(
            f"Slurm has no partition {own.partition!r} ({text}). `sinfo -s` lists the partitions: set "
            "'partition' to one of them, or leave it empty for the cluster's default."
        )
    if "invalid account" in lower:
        return ConfigurationError(
            f"Slurm refused the account {own.account!r} ({text}). `sacctmgr show assoc user=$USER` lists "
            "the accounts (and partitions) you may use: set 'account' to one of them, or leave it empty."
        )
    if "invalid qos" in lower:
        return ConfigurationError(
            f"Slurm refused the qos {own.qos!r} ({text}). `sacctmgr show assoc user=$USER format=account,qos` "
            "lists the ones you may use: set 'qos' to one of them, or leave it empty."
        )
    if any(s in lower for s in ("unable to contact", "socket timed out", "zero bytes were transmitted")):
        return EngineUnavailableError(f"Slurm refused the job ({text}): {controller_fix(cli.conf)}.")
    if "requested node configuration is not available" in lower:
        return ConfigurationError(
            f"no node of the partition can meet the job's request ({text}): cpus={spec.cpus or 1}, "
            f"memory={spec.memory or 'default'}, gpus, slurm_args={list(own.slurm_args)}. "
            "`sinfo -N -o '%N %P %c %m %G'` shows what the nodes have: ask for less or use another partition."
        )
    if "time limit" in lower:
        return ConfigurationError(
            f"Slurm refused the job's time limit ({text}): its --time comes from max_lifetime (or time_limit "
            "+ 60 s); lower it below the partition's MaxTime (`sinfo -o '%P %l'`)."
        )
    if "unrecognized option" in lower or "invalid option" in lower or "unknown option" in lower:
        return ConfigurationError(f"srun refused an argument ({text}): check 'slurm_args'.")
    return BackendError(f"Slurm refused the job: {text}. Check the Slurm options (partition, slurm_args...).")


def node_error(stderr: str, exit_code: int, spec_image: str, node: str) -> OCIExecutorError | None:
    """Our error for a failed step on a node, when it is one of the checks of ours."""
    from oci_executor.errors import ImageNotFoundError, ImagePullError

    text = stderr.strip()
    line = next((x for x in text.splitlines() if x.startswith(NODE_ERROR)), "")
    if exit_code == RUNTIME_DIR_EXIT and line:
        return EngineUnavailableError(
            f"rootless Podman has no usable runtime folder (XDG_RUNTIME_DIR) on node {node}: "
            f"{line[len(NODE_ERROR) :].strip().removeprefix('runtime-dir: ')}. Fix on the node: an admin creates /run/user/UID owned by "
            "the user (`install -d -o USER -m 700 /run/user/UID`, or `loginctl enable-linger USER`), or "
            "removes the foreign one so Podman uses /tmp/podman-run-UID. See docs/slurm.md."
        )
    if exit_code == NO_PODMAN_EXIT and line:
        return EngineUnavailableError(
            f"Podman is missing on node {node}: {line[len(NODE_ERROR) :].strip().removeprefix('no-podman: ')}. The slurm backend runs "
            "each task with rootless Podman on the node: ask the admin to install it on every node "
            "(`apt-get install podman uidmap slirp4netns fuse-overlayfs`), or exclude nodes without it "
            "(slurm_args=['--constraint=podman'])."
        )
    if exit_code in (NO_IMAGE_EXIT, PULL_EXIT) and line:
        cls = ImageNotFoundError if exit_code == NO_IMAGE_EXIT else ImagePullError
        errors = [x.strip() for x in text.splitlines() if x.strip().startswith("Error:")]
        detail = f" ({errors[-1][:500]})" if errors else ""
        fix = (
            "make it pullable from the node (pull_policy='missing')"
            if cls is ImageNotFoundError
            else "check its name and the node's access to the registry"
        )
        return cls(
            f"{line[len(NODE_ERROR) :].strip()}{detail}. A node that lacks the image and cannot pull it gets it "
            "streamed from the jobs' user's store on this host: keep it there (`podman image exists IMAGE`), "
            f"load it on the node by hand (`srun -w NODE podman load -i image.tar`), or {fix}.",
            image=spec_image,
        )
    return None


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def is_root() -> bool:
    return os.geteuid() == 0


def me() -> str:
    """The name of the user this process runs as."""
    return pwd.getpwuid(os.geteuid()).pw_name


def pending_advice(reason: str) -> str:
    """What a pending job's squeue reason means for the user."""
    if reason in ("Resources", "Priority", "Dependency", "ReqNodeNotAvail, Reserved for maintenance"):
        return "the cluster has no free node for the request now"
    if reason.startswith(("AssocGrp", "AssocMax", "QOS")):
        return "a limit of the account or qos holds it"
    if (
        reason in ("PartitionDown", "PartitionInactive")
        or "ReqNodeNotAvail" in reason
        or "NodeDown" in reason
    ):
        return "the partition or its nodes are down or drained: `sinfo` shows them; ask the cluster admin"
    return "`squeue -j JOB -o %r` and `scontrol show job JOB` tell more"
