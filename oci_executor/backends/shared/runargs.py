"""The container's intent as ``run`` options of an OCI engine's command line (``podman run``;
``docker run`` takes the same), for backends that drive an engine through its CLI."""

from __future__ import annotations

from oci_executor.backends.shared.intent import ContainerIntent


def run_args(intent: ContainerIntent, *, limits: bool = True) -> list[str]:
    """``run`` options rendering ``intent`` (image and command excluded); ``limits=False``
    leaves ``cpus`` and ``memory`` to something else (a batch scheduler's allocation)."""
    args = [f"--label={key}={value}" for key, value in intent.labels.items()]
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
    if limits and intent.cpus:
        args.append(f"--cpus={intent.cpus:g}")
    if limits and intent.memory:
        args += [f"--memory={intent.memory}", f"--memory-swap={intent.memory}"]
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
