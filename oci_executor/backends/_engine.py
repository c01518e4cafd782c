"""What the Docker and Podman backends share.

Both SDKs expose the same high-level objects (``client.images``, ``client.containers``,
``container.put_archive``...). :class:`EngineBackend` implements every verb once on top of
them; a subclass says how to connect, how to read an exec result, and how to name its engine.
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from oci_executor.backend import (
    MANAGED_LABEL,
    OPTIONAL_SETTINGS,
    SCHEDULER_SETTINGS,
    Backend,
    BackendConfig,
    Container,
    ContainerSpec,
    ExecResult,
    ManagedContainer,
)
from oci_executor.backends._archive import make_tar, read_tar
from oci_executor.backends._errors import SdkErrors
from oci_executor.backends._sdk import describe, timestamp
from oci_executor.channel import Channel
from oci_executor.errors import (
    BackendError,
    ConfigurationError,
    ContainerError,
    ContainerNotFoundError,
    ImageHasNoPythonError,
    ImageNotFoundError,
    ImagePullError,
    OCIExecutorError,
)
from oci_executor.progress import PullProgress, PullReport

SCRATCH_DIR = "/tmp/oci-executor"
CONNECT_TIMEOUT = 5.0
"""Seconds to connect to an engine and hear its first ping."""
API_TIMEOUT = 120.0
"""Seconds an API call may wait without an answer (a pull streams, so this is not a cap on it)."""
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


class EngineBackend(SdkErrors, Backend):
    """A backend driving a Docker-API-like engine through its Python SDK."""

    supported_options = frozenset(OPTIONAL_SETTINGS) - frozenset(SCHEDULER_SETTINGS)

    def __init__(self, config: BackendConfig | None = None) -> None:
        super().__init__(config)
        self._client: Any = None
        self._containers: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- what subclasses provide -------------------------------------------------------

    @abc.abstractmethod
    def _connect(self) -> Any:
        """A new SDK client for :meth:`address`."""

    @abc.abstractmethod
    def _exec_result(self, raw: Any) -> ExecResult:
        """Convert the SDK's ``exec_run(..., demux=True)`` return value."""

    def _pull(self, client: Any, image: str, report: PullReport) -> Any:
        """Pull ``image``, passing the engine's progress to ``report``; return the image object.

        The default reads the Docker API's progress stream (``status``, ``id`` and
        ``progressDetail`` per layer).
        """
        for event in client.api.pull(image, stream=True, decode=True):
            if event.get("error"):
                raise RuntimeError(event["error"])
            status = str(event.get("status", ""))
            detail = event.get("progressDetail") or {}
            layer = str(event.get("id", "")) if "progressDetail" in event else ""
            report(
                PullProgress(
                    image=image,
                    layer=layer,
                    status=status,
                    current=detail.get("current"),
                    total=detail.get("total"),
                    done=bool(layer) and status in ("Pull complete", "Already exists"),
                )
            )
        return client.images.get(image)

    def _before_start(self, obj: Any, spec: ContainerSpec) -> None:
        """Adjust a created container before it starts (engine-specific; nothing by default)."""

    def _create_kwargs(self, spec: ContainerSpec) -> dict[str, Any]:
        """``containers.create`` keyword arguments for the spec's options; engines add theirs."""
        kwargs: dict[str, Any] = {}
        if spec.workdir:
            kwargs["working_dir"] = spec.workdir
        if spec.user:
            kwargs["user"] = spec.user
        if spec.memory:
            kwargs["mem_limit"] = spec.memory
            kwargs["memswap_limit"] = spec.memory  # no swap beyond the limit: OOM is OOM
        if spec.shm_size:
            kwargs["shm_size"] = spec.shm_size
        if spec.cpus:
            kwargs["cpu_period"] = CPU_PERIOD
            kwargs["cpu_quota"] = int(spec.cpus * CPU_PERIOD)
        if spec.network in ("none", "host", "bridge"):
            kwargs["network_mode"] = spec.network
        if spec.userns:
            kwargs["userns_mode"] = spec.userns
        return kwargs

    # -- connection and error mapping --------------------------------------------------

    def describe(self) -> str:
        return f"{self.name} at {self.address()}"

    def store(self) -> str:
        """The image store, for messages."""
        return f"{self.engine} image store at {self.address()}"

    def client(self) -> Any:
        """The SDK client, connected on first use.

        Connecting and the first ping time out after :data:`CONNECT_TIMEOUT` seconds (an
        engine that accepts connections but never answers must not hang a task); later calls
        fail after :data:`API_TIMEOUT` seconds without an answer.
        """
        with self._lock:
            if self._client is None:
                try:
                    client = self._connect()
                    client.api.timeout = CONNECT_TIMEOUT
                    client.ping()
                    client.api.timeout = API_TIMEOUT
                except OCIExecutorError:
                    raise  # already ours (a transient service that would not start)
                except Exception as exc:  # noqa: BLE001 - every connect failure is "unavailable"
                    raise self.unavailable(describe(exc)) from exc
                self._client = client
            return self._client

    def check(self) -> None:
        """Raise :class:`EngineUnavailableError` unless the engine answers a ping now."""
        try:
            client = self.client()
            self._ping(client, CONNECT_TIMEOUT)
        except OCIExecutorError:
            raise
        except Exception as exc:  # noqa: BLE001 - the engine did not answer
            raise self.unavailable(describe(exc)) from exc

    def _ping(self, client: Any, timeout: float) -> None:
        """One ping with its own timeout (the client may be in use by other threads)."""
        response = client.api.head(client.api._url("/_ping"), timeout=timeout)
        response.raise_for_status()

    def available(self) -> bool:
        return self.problem() is None

    def problem(self) -> str | None:
        try:
            self.client()
        except OCIExecutorError as exc:
            return str(exc)
        return None

    # -- images ------------------------------------------------------------------------

    def ensure_image(self, image: str) -> Any:
        """The image object, pulled according to the pull policy."""
        client = self.client()
        policy = self.config.pull_policy
        if policy != "always":
            local = self._find_image(client, image)
            if local is not None:
                return local
            if policy == "never":
                raise ImageNotFoundError(
                    f"image {image!r} is not in the {self.store()} and pull_policy='never'. "
                    f"`{self.name} images` lists what it holds; build or load the image there "
                    f"(`{self.name} build`, `{self.name} load`, `{self.name} pull {image}`), "
                    "or use pull_policy='missing'.",
                    address=self.address(),
                    image=image,
                )
        report = PullReport(image, self.store())
        try:
            with self._errors(f"pull {image}"):
                pulled = self._pull(client, image, report)
                if not getattr(pulled, "id", None):
                    raise ContainerError(f"{self.engine} returned no image for {image!r}")
                report.finished()
                return pulled
        except OCIExecutorError as exc:
            if policy == "always":
                advice = (
                    "pull_policy='always' never falls back to a local copy: check the name and your "
                    "registry access, or use pull_policy='missing' to use the local image"
                )
            else:
                advice = (
                    f"it is not in the {self.store()} either (`{self.name} images` lists what is): "
                    f"check the name (a typo?) and your registry access, or build or load it there "
                    f"(`{self.name} build`, `{self.name} load`)"
                )
            raise ImagePullError(
                f"could not pull image {image!r} (pull_policy={policy!r}): {exc}. {advice}.",
                address=self.address(),
                image=image,
            ) from exc

    def _find_image(self, client: Any, image: str) -> Any | None:
        try:
            with self._errors(f"look up image {image}", image=image):
                return client.images.get(image)
        except ImageNotFoundError:
            return None

    # -- verbs -------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> Container:
        client = self.client()
        image = self.ensure_image(spec.image)
        if not spec.command:
            raise ConfigurationError("a container needs a main process (ContainerSpec.command)")
        with self._errors(f"create a container from {spec.image}", image=spec.image):
            obj = client.containers.create(
                image.id,
                command=list(spec.command),
                labels=dict(spec.labels),
                environment=dict(spec.env),
                auto_remove=True,
                stdin_open=True,  # the runner's channel; it ends when the host lets go
                **self._create_kwargs(spec),
            )
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

    @abc.abstractmethod
    def _attach(self, container: Container) -> Channel:
        """The engine's attach stream to the container's stdin/stdout/stderr."""

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
            if getattr(exc, "kind", "") != "conflict":  # 409: not running
                raise

    def remove(self, container: Container) -> None:
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

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._containers.clear()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


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
