"""The container's intent as ``podman run`` options for rootless Podman on the job's node."""

from __future__ import annotations

from oci_executor.backends.shared.intent import ContainerIntent

NODE_ENV = ("SLURMD_NODENAME", "SLURM_JOB_ID")
"""Passed from the step into the container: the task can tell its node and job."""


def podman_run_args(intent: ContainerIntent) -> list[str]:
    """``podman run`` options rendering ``intent`` (image and command excluded).

    ``cpus`` and ``memory`` are the job's (``sbatch -c``, ``--mem``): Slurm enforces them on
    the node, so they are not repeated here.
    """
    args = [f"--label={key}={value}" for key, value in intent.labels.items()]
    args += [f"--env={name}" for name in NODE_ENV]
    args += [f"--env={key}={value}" for key, value in intent.env.items()]
    if intent.no_new_privileges:
        args.append("--security-opt=no-new-privileges")
    args += [f"--cap-drop={cap}" for cap in intent.cap_drop]
    args += [f"--volume={b.source}:{b.target}:{','.join(b.options)}" for b in intent.binds]
    if intent.userns:
        args.append(f"--userns={intent.userns}")
    if intent.workdir:
        args.append(f"--workdir={intent.workdir}")
    if intent.user:
        args.append(f"--user={intent.user}")
    if intent.shm_size:
        args.append(f"--shm-size={intent.shm_size}")
    if intent.network:
        args.append(f"--network={intent.network}")
    if intent.read_only:
        args.append("--read-only")
    args += [f"--tmpfs={target}:{options}" for target, options in intent.tmpfs.items()]
    args += [f"--device={device}" for device in intent.devices]
    args.append(f"--log-driver={intent.log_driver}")
    return args
