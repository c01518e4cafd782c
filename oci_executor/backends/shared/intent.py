"""The container spec translated once: what every container of ours is, whatever runs it.

:func:`container_intent` turns a :class:`~oci_executor.backend.ContainerSpec` into a
:class:`ContainerIntent`: the security posture (no new privileges, the capabilities dropped),
the mounts, the tmpfs of a read-only root, the devices, the user mapping, the labels and the
limits. A backend only renders the intent in its engine's terms (docker-py keyword arguments,
podman-py keyword arguments, a ``podman run`` command line); it decides nothing of its own, so
the posture cannot drift between backends (``tests/test_posture.py`` checks it on each).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from oci_executor.backend import ContainerSpec, GpuRequest
from oci_executor.backends.shared.cdi import cdi_devices

DROPPED_CAPABILITIES: tuple[str, ...] = ("AUDIT_WRITE", "MKNOD", "NET_RAW")
"""Capabilities Docker grants by default and Podman does not: dropped, so that a task holds
the same (Podman's default) set on every engine."""
TMPFS_OPTIONS = "rw,exec,nosuid,nodev,mode=1777"
"""The writable ``/tmp`` of a read-only root (the runner's scratch folder lives there)."""
KEEP_ID = "keep-id"
BUILTIN_NETWORKS = ("none", "host", "bridge")


@dataclass(frozen=True)
class Bind:
    """A host folder mounted into the container."""

    source: str
    target: str
    read_only: bool = False
    relabel: bool = False
    """SELinux relabel (``z``)."""

    @property
    def options(self) -> tuple[str, ...]:
        """``ro``/``rw``, then ``z`` when relabelled."""
        return ("ro" if self.read_only else "rw", *(("z",) if self.relabel else ()))


@dataclass(frozen=True)
class ContainerIntent:
    """What the container must be; each backend renders exactly this, nothing more."""

    image: str
    command: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    no_new_privileges: bool = True
    """setuid binaries grant the task nothing."""
    cap_drop: tuple[str, ...] = DROPPED_CAPABILITIES
    read_only: bool = False
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    """Mount point -> mount options."""
    binds: tuple[Bind, ...] = ()
    userns: str | None = None
    """``None``: the engine's default; ``keep-id``: the invoking user is the task's user."""
    user: str | None = None
    workdir: str | None = None
    cpus: float | None = None
    memory: int | None = None
    """Bytes; no swap beyond it (an OOM is an OOM)."""
    shm_size: int | None = None
    network: str | None = None
    gpus: GpuRequest | None = None
    devices: tuple[str, ...] = ()
    """CDI device names (``nvidia.com/gpu=0``) for engines that take CDI devices."""
    log_driver: str = "none"
    """The runner's channel carries payloads, not logs: nothing is copied to disk."""

    @property
    def builtin_network(self) -> bool:
        """Whether :attr:`network` is a mode (``none``, ``host``, ``bridge``), not a network's name."""
        return self.network in BUILTIN_NETWORKS


def container_intent(spec: ContainerSpec, *, rootless: bool) -> ContainerIntent:
    """The intent of a container of ``spec``; ``rootless``: the engine runs as a user, so a
    mounted folder gets the user mapping ``keep-id`` (files the task writes belong to that
    user on the host) unless ``spec.userns`` says otherwise."""
    userns = spec.userns or (KEEP_ID if rootless and spec.volumes else None)
    return ContainerIntent(
        image=spec.image,
        command=tuple(spec.command),
        labels=dict(spec.labels),
        env=dict(spec.env),
        read_only=spec.read_only,
        tmpfs={"/tmp": TMPFS_OPTIONS} if spec.read_only else {},
        binds=tuple(Bind(v.host, v.container, v.read_only, spec.selinux_relabel) for v in spec.volumes),
        userns=userns,
        user=spec.user,
        workdir=spec.workdir,
        cpus=spec.cpus,
        memory=spec.memory,
        shm_size=spec.shm_size,
        network=spec.network,
        gpus=spec.gpus,
        devices=tuple(cdi_devices(spec.gpus)) if spec.gpus else (),
    )
