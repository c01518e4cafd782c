"""The backend contract: the container verbs every backend implements.

A backend drives one kind of container engine. The core creates a container whose main
process is the resident runner, and talks to it over its stdin/stdout::

    available() -> create(spec) -> attach(container) -> ... tasks over the channel ... -> remove()

``exec`` (the OOM probe), ``copy_in`` and ``copy_out`` work on any running container; ``stop``
kills one at once (time limit, cancel).
"""

from __future__ import annotations

import abc
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from oci_executor.errors import OCIExecutorError
from oci_executor.findings import Finding, basic_findings
from oci_executor.labels import MANAGED_LABEL  # noqa: F401 - part of the contract's names

if TYPE_CHECKING:
    from oci_executor.channel import Channel
    from oci_executor.environments.volumes import EngineVolumes
    from oci_executor.parsing import Option


PullPolicy = Literal["missing", "always", "never"]
PULL_POLICIES: tuple[str, ...] = typing.get_args(PullPolicy)


@dataclass(frozen=True)
class BackendConfig:
    """How to reach and use an engine; built by the executor from its options."""

    address: str | None = None
    """Engine socket URL (``unix:///...``, ``tcp://...``, ``ssh://user@host[:port][/socket]``), or a
    Podman connection name; ``None`` means the backend's default."""
    pull_policy: PullPolicy = "missing"
    ssh_identity: str | None = None
    """Private key file for ``ssh://`` addresses; ``None``: ssh's own choice (agent, ~/.ssh)."""


@dataclass(frozen=True)
class Volume:
    """A host folder mounted into the container."""

    host: str
    container: str
    read_only: bool = False


@dataclass(frozen=True)
class GpuRequest:
    """GPUs for the container: a count (-1 for all) or specific device IDs."""

    count: int = 0
    device_ids: tuple[str, ...] = ()


OPTIONAL_SETTINGS: tuple[str, ...] = (
    "volumes",
    "userns",
    "workdir",
    "user",
    "cpus",
    "memory",
    "shm_size",
    "gpus",
    "network",
    "read_only",
)
"""The :class:`ContainerSpec` fields a backend may or may not honour (see ``supported_options``)."""


@dataclass(frozen=True)
class ContainerSpec:
    """What to create: an immutable description of one container.

    ``None`` (or empty) means "the engine's default" for every optional field.
    """

    image: str
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    python: str = "python3"
    """Interpreter inside the image; the container's main process runs it."""
    idle_timeout: float = 60.0
    """The container ends itself when no task has signalled life for this many seconds."""
    max_lifetime: float = 24 * 3600.0
    """The container ends itself after this many seconds, whatever it is doing."""
    volumes: tuple[Volume, ...] = ()
    selinux_relabel: bool = False
    """Relabel volumes for SELinux (``:z``)."""
    userns: str | None = None
    """User namespace mode (Podman: ``keep-id``...); ``None``: automatic (see the Podman backend)."""
    workdir: str | None = None
    user: str | None = None
    cpus: float | None = None
    memory: int | None = None
    """Memory limit in bytes."""
    shm_size: int | None = None
    """Size of /dev/shm in bytes."""
    gpus: GpuRequest | None = None
    network: str | None = None
    """``None``: the engine's default network; ``"none"``: no network; else a network name."""
    read_only: bool = False
    """A read-only root filesystem, with a writable tmpfs at ``/tmp``."""
    pids_limit: int | None = None
    """Processes (and threads) the container may hold; ``None``: no limit. Every backend caps it."""
    queue_timeout: float = 600.0
    """Seconds a batch job may stay pending before creation fails (scheduler backends only)."""
    backend_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Options a backend adds (its ``Backend.options``), set to other than their default, by
    that backend's name: ``{"slurm": {"partition": "gpu"}}``."""
    command: tuple[str, ...] = ()
    """The main process (set by the core: the runner's bootstrap); it reads its stdin."""

    def options_set(self) -> list[str]:
        """Names of the optional container settings and backend options this spec asks for."""
        names = [name for name in OPTIONAL_SETTINGS if getattr(self, name) not in (None, (), "", False)]
        return names + sorted(name for options in self.backend_options.values() for name in options)

    def owner_of(self, option: str) -> str | None:
        """The backend that added ``option`` to :attr:`backend_options`, if one did."""
        return next((backend for backend, names in self.backend_options.items() if option in names), None)


@dataclass(frozen=True)
class Container:
    """A handle on a created container, returned by :meth:`Backend.create`."""

    id: str
    backend: str
    image: str
    image_id: str
    scratch_dir: str
    """Folder inside the container where task folders are copied."""
    python: str
    """Interpreter to exec inside the container."""
    address: str = ""
    """Where the engine that holds it answers (for a job handle)."""
    ssh_identity: str = ""
    """The key file that reaches a remote engine (for a job handle), if one was set."""


@dataclass(frozen=True)
class EngineFacts:
    """What an engine says about itself (for ``oci-executor doctor``); see :meth:`Backend.facts`."""

    engine: str
    version: str
    address: str
    rootless: bool
    storage_driver: str
    storage_root: str = ""
    cgroup_version: str = ""
    """``"1"`` or ``"2"``; empty if the engine does not say."""
    cpu_limits: bool = True
    """Whether the engine can enforce ``cpus`` (a CPU quota) here."""
    memory_limits: bool = True
    """Whether the engine can enforce ``memory`` here."""
    runtimes: tuple[str, ...] = ()
    id_map: tuple[tuple[int, int, int], ...] = ()
    """The engine user's UID map (container ID, host ID, size), for a rootless engine."""
    network_helper: str = ""
    """The rootless network helper the engine found (slirp4netns or pasta), if it says."""
    transient: bool = False
    """Whether the backend started its own engine service to answer."""


@dataclass(frozen=True)
class ManagedContainer:
    """A container of ours as an engine lists it (for ``oci-executor ls`` and ``gc``)."""

    id: str
    name: str
    state: str
    """The engine's word: ``running``, ``created``, ``exited``..."""
    created: float | None
    """Seconds since the epoch."""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one :meth:`Backend.exec`."""

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""


class Backend(abc.ABC):
    """One container engine, driven through a few typed verbs.

    Subclasses set :attr:`name`, are constructed with a :class:`BackendConfig` and must map
    their engine's exceptions to :mod:`oci_executor.errors` types.
    """

    name: ClassVar[str]
    priority: ClassVar[int] = 0
    """Where ``backend="auto"`` tries this backend: higher first (Podman 30, Docker 20, local -10)."""
    supported_options: ClassVar[frozenset[str]] = frozenset()
    """The :meth:`ContainerSpec.options_set` names this backend can honour."""
    isolated: ClassVar[bool] = True
    """Whether tasks run in a container (the local backend's run on the host)."""
    auto_candidate: ClassVar[bool] = True
    """Whether ``backend="auto"`` may pick this backend (a cluster must be asked for by name)."""
    options: ClassVar[tuple[Option, ...]] = ()
    """The options this backend adds to the shared ones; they reach it in
    ``ContainerSpec.backend_options[name]``, and every other backend refuses them."""
    option_notes: ClassVar[Mapping[str, str]] = {}
    """How this backend treats each shared option, where it differs from
    :attr:`option_note_default` (the docs table's column for this backend)."""
    start_hint: ClassVar[str] = ""
    """How to start this backend's engine, for messages."""
    option_note_default: ClassVar[str] = "yes"
    """What this backend does with a shared option its notes do not name."""

    def __init__(self, config: BackendConfig | None = None) -> None:
        self.config = config or BackendConfig()
        self.auto_reason = ""
        """Why ``backend="auto"`` picked this backend when it is a fallback (for messages)."""

    def unsupported(self, spec: ContainerSpec) -> list[str]:
        """The options ``spec`` asks for that this backend cannot honour (asked per instance:
        some limits, like rootless Podman's on cgroup v1, are known only at run time)."""
        own = {option.name for option in self.options}
        return sorted(set(spec.options_set()) - self.supported_options - own)

    def explain_unsupported(self, names: list[str], spec: ContainerSpec) -> str:
        """What to do about options :meth:`unsupported` named."""
        owners = {spec.owner_of(name) for name in names}
        if len(owners) == 1 and None not in owners:
            owner = owners.pop()
            return f"they apply to backend={owner!r} only: remove them, or use backend={owner!r}"
        return "use a container engine backend (docker or podman) or remove them"

    def adapt_spec(self, spec: ContainerSpec, time_limit: float | None) -> ContainerSpec:
        """The spec to create containers from, given the task's ``time_limit`` (seconds or None).

        Unchanged by default; a batch scheduler bounds its job's wall time (and so the
        container's ``max_lifetime``) by the task's time limit.
        """
        return spec

    def check(self) -> None:  # noqa: B027 - nothing to check by default
        """The one health probe a backend implements: raise
        :class:`~oci_executor.errors.EngineUnavailableError` (or another of our errors, naming
        the fix) unless it can run a task now. Nothing by default (always ready)."""

    def problem(self) -> str | None:
        """Why the backend cannot run a task now (:meth:`check`'s message), or None; never raises."""
        try:
            self.check()
        except OCIExecutorError as exc:
            return str(exc)
        return None

    def available(self) -> bool:
        """Whether the backend can run a task now (:meth:`check` passes); never raises."""
        return self.problem() is None

    def describe(self) -> str:
        """A short human description (engine and address) for messages."""
        return self.name

    def facts(self) -> EngineFacts | None:
        """The engine's version, mode and storage (for diagnosis); None without an engine.

        Raises :class:`~oci_executor.errors.EngineUnavailableError` if the engine does not answer.
        """
        return None

    def image_id(self, image: str) -> str | None:
        """The ID of ``image`` in the engine's store, or None if absent or unknown (optional;
        environments use it to find an image's facts without starting a container)."""
        return None

    def environment_volumes(self) -> EngineVolumes | None:
        """Named volumes where a remote engine keeps environments (see docs/environments.md);
        None (the default): environments are folders of this machine's store, bind-mounted."""
        return None

    def diagnose(self, spec: ContainerSpec, pull_policy: str) -> list[Finding]:
        """This backend's findings for ``oci-executor doctor``, each with its fix, in the order a
        user fixes them: its engine, then what ``spec`` needs of it (``spec.image`` is the
        configured image; nothing may be pulled). The doctor adds the Python check (a runner
        started from the image) when none of these is a failure of the engine or the image.

        By default: whether it answers, and whether it honours ``spec``'s options.
        """
        return basic_findings(self, spec)

    def installed(self) -> bool:
        """Whether this backend's engine is installed here (so ``auto`` must not skip past it to
        a backend without isolation); True by default."""
        return True

    @abc.abstractmethod
    def create(self, spec: ContainerSpec) -> Container:
        """Create and start a container that waits for tasks; pull the image per policy."""

    @abc.abstractmethod
    def attach(self, container: Container) -> Channel:
        """A channel to the main process's stdin and stdout; closing it ends that process."""

    @abc.abstractmethod
    def copy_in(self, container: Container, dest_dir: str, files: Mapping[str, bytes]) -> None:
        """Write ``files`` (relative path -> content) under ``dest_dir`` in the container."""

    @abc.abstractmethod
    def exec(
        self,
        container: Container,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> ExecResult:
        """Run ``argv`` in the container and wait for it."""

    @abc.abstractmethod
    def copy_out(self, container: Container, src_dir: str) -> dict[str, bytes]:
        """Read every regular file under ``src_dir`` (relative path -> content)."""

    @abc.abstractmethod
    def stop(self, container: Container) -> None:
        """Stop the container at once (running execs are killed)."""

    @abc.abstractmethod
    def remove(self, container: Container) -> None:
        """Remove the container and everything in it; a missing container is not an error."""

    def sweep_unstarted(self, older_than: float) -> list[str]:
        """Remove our containers that were created but never started, ``older_than`` seconds ago.

        Such a container's driver died between create and start: no runner ever ran in it,
        so nothing would end it. Returns the removed IDs; optional (nothing by default).
        """
        return []

    def managed(self) -> list[ManagedContainer]:
        """Every container carrying ``MANAGED_LABEL`` that this engine holds, in any state.

        Optional: a backend without an engine holds none.
        """
        return []

    def remove_managed(self, container_id: str) -> None:  # noqa: B027 - optional hook
        """Kill and remove one container that :meth:`managed` listed; a gone one is fine."""

    def oom_killed(self, container: Container) -> bool:
        """Whether the kernel's OOM killer killed a process in the container (best effort)."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or helper processes held by the backend."""
