"""The verbs of an SDK-driven engine (Docker, Podman), once for both.

Both SDKs expose the same high-level objects (``client.images``, ``client.containers``,
``container.put_archive``...). :class:`EngineBackend` implements every verb on them; an engine
says how to connect (:meth:`_connect`), how to read an exec result, how to attach, and how to
render the container's intent in its SDK's keyword arguments (:meth:`_render`).
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

from oci_executor.backend import (
    OPTIONAL_SETTINGS,
    Container,
    ContainerSpec,
    ExecResult,
    ManagedContainer,
)
from oci_executor.backends.shared.archive import make_tar, read_tar
from oci_executor.backends.shared.engine.diagnosis import EngineDiagnosis
from oci_executor.backends.shared.engine.envvolumes import SdkVolumes
from oci_executor.backends.shared.intent import ContainerIntent, container_intent
from oci_executor.backends.shared.sdk import timestamp
from oci_executor.channel import Channel
from oci_executor.errors import (
    BackendError,
    ConfigurationError,
    ContainerError,
    ContainerNotFoundError,
    ImageHasNoPythonError,
    OCIExecutorError,
)
from oci_executor.labels import MANAGED_LABEL

SCRATCH_DIR = "/tmp/oci-executor"
REMOVE_TIMEOUT = 30.0  # seconds to wait for an engine's own removal of a killed container
CPU_PERIOD = 100_000  # microseconds; cpus=1.5 becomes a quota of 150000 per period
# Counts OOM kills in the container's memory cgroup (v2: memory.events, v1: memory.oom_control).
OOM_PROBE = """\
n = 0
for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
    try:
        for line in open(path):
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                n += int(value)
    except OSError:
        pass
print(n)
"""


class EngineBackend(EngineDiagnosis):
    """A backend driving a Docker-API-like engine through its Python SDK."""

    supported_options = frozenset(OPTIONAL_SETTINGS)

    # -- what an engine provides -------------------------------------------------------

    @abc.abstractmethod
    def _exec_result(self, raw: Any) -> ExecResult:
        """Convert the SDK's ``exec_run(..., demux=True)`` return value."""

    @abc.abstractmethod
    def _attach(self, container: Container) -> Channel:
        """The engine's attach stream to the container's stdin/stdout/stderr."""

    @abc.abstractmethod
    def _render(self, intent: ContainerIntent) -> dict[str, Any]:
        """The engine's own ``containers.create`` keyword arguments for ``intent`` (added to
        :func:`sdk_kwargs`, which both SDKs take alike)."""

    def rootless(self) -> bool:
        """Whether the engine runs as a user (then mounted folders get ``keep-id``)."""
        return False

    def environment_volumes(self) -> SdkVolumes | None:
        """Named volumes for environments on a remote (``ssh://``) engine; None for a local one."""
        return SdkVolumes(self) if self.remote() is not None else None

    def _before_start(self, obj: Any, spec: ContainerSpec) -> None:
        """Adjust a created container before it starts (engine-specific; nothing by default)."""

    def create_kwargs(self, spec: ContainerSpec) -> dict[str, Any]:
        """Every ``containers.create`` keyword argument for ``spec`` but the image."""
        intent = container_intent(spec, rootless=self.rootless())
        return {**sdk_kwargs(intent), **self._render(intent)}

    # -- verbs -------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> Container:
        client = self.client()
        image = self.ensure_image(spec.image)
        if not spec.command:
            raise ConfigurationError("a container needs a main process (ContainerSpec.command)")
        with self._errors(f"create a container from {spec.image}", image=spec.image):
            obj = client.containers.create(image.id, **self.create_kwargs(spec))
        try:
            with self._errors(f"prepare a container from {spec.image}", container_id=obj.id):
                self._before_start(obj, spec)
            with self._errors(f"start a container from {spec.image}", container_id=obj.id):
                obj.start()
        except BaseException as exc:
            # Whatever went wrong (the engine dropping between create and start included),
            # the created container must not stay behind.
            with contextlib.suppress(OCIExecutorError):
                self._force_remove(obj)
            text = str(exc).lower()
            if isinstance(exc, ContainerError) and (
                "executable file not found" in text or "no such file or directory" in text
            ):
                raise ImageHasNoPythonError(
                    f"image {spec.image!r} has no Python at {spec.python!r}: {exc}. "
                    "Use an image with the host's Python major.minor, or set the executor's "
                    "'python' option to the interpreter's path in the image.",
                    address=self.address(),
                    image=spec.image,
                ) from exc
            raise
        with self._lock:
            self._containers[obj.id] = obj
        return Container(
            id=obj.id,
            backend=self.name,
            image=spec.image,
            image_id=str(image.id),
            scratch_dir=SCRATCH_DIR,
            python=spec.python,
            address=self.address(),
            ssh_identity=self._ssh.identity if self._ssh is not None else "",
        )

    def _obj(self, container: Container) -> Any:
        with self._lock:
            obj = self._containers.get(container.id)
        if obj is None:
            with self._errors(f"find container {container.id[:12]}"):
                obj = self.client().containers.get(container.id)
        return obj

    def attach(self, container: Container) -> Channel:
        with self._errors(f"attach to container {container.id[:12]}"):
            return self._attach(container)

    def copy_in(self, container: Container, dest_dir: str, files: Mapping[str, bytes]) -> None:
        data = make_tar(dest_dir, files)
        with self._errors(f"copy files into container {container.id[:12]}"):
            if not self._obj(container).put_archive("/", data):
                raise ContainerError(f"{self.engine} refused to copy files into {container.id[:12]}")

    def exec(
        self,
        container: Container,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> ExecResult:
        kwargs: dict[str, Any] = {"demux": True}
        if env:
            kwargs["environment"] = dict(env)
        if workdir:
            kwargs["workdir"] = workdir
        with self._errors(f"exec in container {container.id[:12]}"):
            return self._exec_result(self._obj(container).exec_run(list(argv), **kwargs))

    def copy_out(self, container: Container, src_dir: str) -> dict[str, bytes]:
        with self._errors(f"copy files out of container {container.id[:12]}"):
            chunks, _stat = self._obj(container).get_archive(src_dir)
            return read_tar(chunks, src_dir)

    def sweep_unstarted(self, older_than: float) -> list[str]:
        client = self.client()
        filters = {"label": f"{MANAGED_LABEL}=true", "status": "created"}
        with self._errors("list containers that never started"):
            found = self._list(client, filters)
        removed = []
        now = time.time()
        for obj in found:
            created = timestamp(obj.attrs.get("Created"))
            if created is not None and now - created > older_than:
                try:
                    self._force_remove(obj)
                    removed.append(obj.id)
                except OCIExecutorError:
                    pass
        return removed

    def managed(self) -> list[ManagedContainer]:
        client = self.client()
        with self._errors("list our containers"):
            found = self._list(client, {"label": f"{MANAGED_LABEL}=true"})
        return [_managed(obj) for obj in found]

    def remove_managed(self, container_id: str) -> None:
        try:
            with self._errors(f"find container {container_id[:12]}", container_id=container_id):
                obj = self.client().containers.get(container_id)
        except ContainerNotFoundError:
            return
        self._force_remove(obj)

    def _list(self, client: Any, filters: dict[str, str]) -> list[Any]:
        return list(client.containers.list(all=True, filters=filters))

    def oom_killed(self, container: Container) -> bool:
        try:
            result = self.exec(container, [container.python, "-c", OOM_PROBE])
            if result.exit_code == 0 and int(result.stdout.strip() or 0) > 0:
                return True
        except Exception:  # noqa: BLE001 - best effort; fall back to the engine's flag
            pass
        try:
            obj = self._obj(container)
            obj.reload()
            return bool(obj.attrs.get("State", {}).get("OOMKilled"))
        except Exception:  # noqa: BLE001
            return False

    def stop(self, container: Container) -> None:
        """Kill the container; one that is not running (or gone) is fine, anything else is reported."""
        try:
            with self._errors(f"kill container {container.id[:12]}", container_id=container.id):
                self._obj(container).kill()
        except ContainerNotFoundError:
            return
        except ContainerError as exc:
            if exc.kind != "conflict":  # 409: not running
                raise

    def remove(self, container: Container) -> None:
        if self.remote() is not None:
            self.client()  # a lost ssh link is connected again first
        with self._lock:
            obj = self._containers.pop(container.id, None)
        if obj is None:
            try:
                with self._errors(f"find container {container.id[:12]}", container_id=container.id):
                    obj = self.client().containers.get(container.id)
            except ContainerNotFoundError:
                return
        self._force_remove(obj)

    def _force_remove(self, obj: Any, timeout: float = REMOVE_TIMEOUT) -> None:
        """Kill and remove a container, and return once it is gone; "not found" is fine.

        A container killed moments before (time limit, cancel) may already be being removed
        by the engine (auto-remove, a 409 conflict), or be in a state the engine refuses to
        remove for a moment (rootless Podman): then wait until it is gone.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._errors(f"remove container {obj.id[:12]}", container_id=obj.id):
                    obj.remove(force=True)
                return
            except ContainerNotFoundError:
                return
            except ContainerError as exc:
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"could not remove container {obj.id[:12]} within {timeout:g} s: {exc}",
                        address=self.address(),
                        container_id=obj.id,
                    ) from exc
            time.sleep(0.1)


def _managed(obj: Any) -> ManagedContainer:
    """A listed SDK container as :class:`ManagedContainer` (Docker inspects, Podman lists)."""
    attrs = obj.attrs
    state = attrs.get("State", "")
    labels = (attrs.get("Config") or {}).get("Labels") or attrs.get("Labels") or {}
    names = attrs.get("Names") or [attrs.get("Name", "")]
    return ManagedContainer(
        id=obj.id,
        name=str(names[0]).lstrip("/"),
        state=str(state.get("Status", "") if isinstance(state, dict) else state),
        created=timestamp(attrs.get("Created")),
        labels=dict(labels),
    )


def sdk_kwargs(intent: ContainerIntent) -> dict[str, Any]:
    """The ``containers.create`` keyword arguments docker-py and podman-py take alike."""
    kwargs: dict[str, Any] = {
        "command": list(intent.command),
        "labels": dict(intent.labels),
        "environment": dict(intent.env),
        "auto_remove": True,
        "stdin_open": True,  # the runner's channel; it ends when the host lets go
        "cap_drop": list(intent.cap_drop),
    }
    if intent.workdir:
        kwargs["working_dir"] = intent.workdir
    if intent.user:
        kwargs["user"] = intent.user
    if intent.memory:
        kwargs["mem_limit"] = intent.memory
        kwargs["memswap_limit"] = intent.memory  # no swap beyond the limit: OOM is OOM
    if intent.shm_size:
        kwargs["shm_size"] = intent.shm_size
    if intent.cpus:
        kwargs["cpu_period"] = CPU_PERIOD
        kwargs["cpu_quota"] = int(intent.cpus * CPU_PERIOD)
    if intent.builtin_network:
        kwargs["network_mode"] = intent.network
    if intent.userns:
        kwargs["userns_mode"] = intent.userns
    if intent.read_only:
        kwargs["read_only"] = True
    kwargs["pids_limit"] = intent.pids_limit or -1  # -1: none (Podman would default to 2048)
    return kwargs
