"""What the Docker and Podman backends share.

Both SDKs expose the same high-level objects (``client.images``, ``client.containers``,
``container.put_archive``...). :class:`EngineBackend` implements every verb once on top of
them; a subclass says how to connect, how to read an exec result, and how to name its engine.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import shlex
import subprocess
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
from oci_executor.backends._ssh import TUNNELS, SshTarget, Tunnel, is_ssh, login_error, run_remote, ssh_error
from oci_executor.channel import Channel
from oci_executor.errors import (
    BackendError,
    ConfigurationError,
    ContainerError,
    ContainerNotFoundError,
    EngineUnavailableError,
    ImageHasNoPythonError,
    ImageNotFoundError,
    ImagePullError,
    OCIExecutorError,
    SshConnectionError,
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
        self._ssh: SshTarget | None = None
        self._tunnel: Tunnel | None = None
        self._tunnel_lock = threading.Lock()
        self._endpoint = ""

    # -- what subclasses provide -------------------------------------------------------

    @abc.abstractmethod
    def _connect(self) -> Any:
        """A new SDK client for :meth:`address`."""

    @abc.abstractmethod
    def _exec_result(self, raw: Any) -> ExecResult:
        """Convert the SDK's ``exec_run(..., demux=True)`` return value."""

    remote_socket = "/var/run/docker.sock"
    """The engine's socket on a remote host when an ``ssh://`` address names none."""
    cli = "docker"
    """The engine's command, looked for on a remote host to tell "no engine" from "wrong socket"."""
    remote_start_hint = "start the engine there (`sudo systemctl start docker`, or `sudo dockerd &`)"

    def _ssh_address(self) -> tuple[str, str] | None:
        """The ``ssh://`` address and key file to use, or None for a local or tcp engine."""
        address = self.address()
        if is_ssh(address):
            return address, self.config.ssh_identity or ""
        return None

    def _remote_default_socket(self, target: SshTarget) -> str:
        """The socket path for an ``ssh://`` address without one."""
        return self.remote_socket

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

    # -- remote engines over ssh -------------------------------------------------------

    def remote(self) -> SshTarget | None:
        """The remote host and socket when the address is ``ssh://`` (or a Podman connection)."""
        if self._ssh is None:
            found = self._ssh_address()
            if found is None:
                return None
            from oci_executor.backends._ssh import parse

            target = parse(*found)
            if not target.socket:
                target = dataclasses.replace(target, socket=self._remote_default_socket(target))
            self._ssh = target
        return self._ssh

    def endpoint(self) -> str:
        """What the SDK and the attach stream connect to: the address, or for a remote engine
        the local end of the process's ssh tunnel to it (started, or restarted, on demand)."""
        target = self.remote()
        if target is None:
            return self.address()
        with self._tunnel_lock:
            if self._tunnel is None:
                self._tunnel = TUNNELS.acquire(target)
            tunnel = self._tunnel
        return tunnel.ensure()

    @property
    def tunnel(self) -> Tunnel | None:
        """The ssh tunnel this backend uses, if it is remote and has connected."""
        return self._tunnel

    def _link_lost(self) -> bool:
        """Whether the ssh tunnel died (waiting a moment for one that is dying)."""
        tunnel = self._tunnel
        if tunnel is None or tunnel.process is None:
            return tunnel is not None and tunnel.starts > 0
        if tunnel.process.poll() is not None:
            return True
        try:
            tunnel.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:  # still running: the link is up
            return False
        return True

    def _remote_problem(self, target: SshTarget, detail: str) -> SshConnectionError:
        """Why a remote engine does not answer, found out over a separate ssh, with the fix."""
        tunnel = self._tunnel
        if tunnel is not None and self._link_lost():
            said = " ".join(tunnel.stderr().split())[-300:]
            if not tunnel.was_up:
                return login_error(target, said or detail)
            return ssh_error(
                f"the ssh link to {target.where} was lost ({said or detail}). Containers on {target.host} "
                "end themselves: each runner sees its attach stream close (or its idle_timeout pass). "
                "The next task connects again; if the link keeps dropping, check the network and "
                "the server's ClientAliveInterval.",
                target,
                "link-lost",
                self.address(),
            )
        path = target.socket
        script = (
            f'p={shlex.quote(path)}; if [ -S "$p" ]; then if [ -r "$p" ] && [ -w "$p" ]; then echo socket-ok; '
            'else echo socket-denied; fi; elif [ -e "$p" ]; then echo not-socket; else echo missing; fi; '
            f"command -v {self.cli} >/dev/null 2>&1 && echo has-engine || echo no-engine; "
            + (
                f"{self.cli} info --format '{{{{.Host.RemoteSocket.Path}}}}' 2>/dev/null"
                if self.cli == "podman"
                else "true"
            )
        )
        try:
            done = run_remote(target, script)
        except Exception as exc:  # noqa: BLE001 - the diagnosis itself failed
            return ssh_error(
                f"the {self.engine} engine does not answer at {path} on {target.where} ({detail}), and a "
                f"second ssh to look why failed: {describe(exc)}",
                target,
                "ssh",
                self.address(),
            )
        if done.returncode == 255:
            return login_error(target, done.stderr)
        lines = done.stdout.split()
        state = lines[0] if lines else "?"
        has_engine = "has-engine" in lines
        suggested = next((x for x in lines[2:] if x.startswith("/")), "")
        where = f"{path} on {target.where}"
        if state == "socket-denied":
            return ssh_error(
                f"user {target.user or '(you)'} may not use the {self.engine} socket {where}. Fix: add that user "
                f"to the socket's group on {target.host}, log in as a user who may use it, or point the "
                "address at that user's own socket (rootless Podman: /run/user/UID/podman/podman.sock).",
                target,
                "socket-permission",
                self.address(),
            )
        if not has_engine and state != "socket-ok":
            return ssh_error(
                f"{target.host} has no {self.engine}: no `{self.cli}` command and no socket at {path}. "
                f"Fix: install {self.engine} on {target.host} and {self.remote_start_hint}, or point the "
                "address at a host that runs it.",
                target,
                "no-engine",
                self.address(),
            )
        if state in ("missing", "not-socket"):
            hint = (
                f"`{self.cli} info --format '{{{{.Host.RemoteSocket.Path}}}}'` on {target.host} prints the path"
                + (f" (it says {suggested})" if suggested else "")
                + "; start the service if none listens (`podman system service --time=0 &`, or "
                "`systemctl --user enable --now podman.socket`)"
                if self.cli == "podman"
                else f"Docker listens at /var/run/docker.sock unless configured otherwise; {self.remote_start_hint}"
            )
            return ssh_error(
                f"no {self.engine} socket at {where} ({'not a socket' if state == 'not-socket' else 'no such file'}). "
                f"Fix: give the right socket path in the address (ssh://user@host[:port]/path/to/socket): {hint}.",
                target,
                "wrong-socket",
                self.address(),
            )
        return ssh_error(
            f"the {self.engine} engine does not answer at {where} ({detail}), though the socket is there. "
            f"Fix: {self.remote_start_hint} (the service may have stopped and left its socket).",
            target,
            "no-engine",
            self.address(),
        )

    def unavailable(self, detail: str) -> EngineUnavailableError:
        target = self.remote()
        if target is not None:
            return self._remote_problem(target, detail)
        return super().unavailable(detail)

    def store(self) -> str:
        """The image store, for messages."""
        return f"{self.engine} image store at {self.address()}"

    def client(self) -> Any:
        """The SDK client, connected on first use.

        Connecting and the first ping time out after :data:`CONNECT_TIMEOUT` seconds (an
        engine that accepts connections but never answers must not hang a task); later calls
        fail after :data:`API_TIMEOUT` seconds without an answer.
        """
        if self.remote() is not None:
            endpoint = self.endpoint()  # (re)starts the tunnel; a new socket means a new client
            with self._lock:
                if endpoint != self._endpoint:
                    stale, self._client, self._endpoint = self._client, None, endpoint
                    self._containers.clear()
                    if stale is not None:
                        with contextlib.suppress(Exception):
                            stale.close()
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
        """Raise :class:`EngineUnavailableError` unless the engine answers a ping now.

        For a remote engine whose ssh link died, that is the error (naming the host): the
        link is not silently rebuilt here (the next task's connection does that).
        """
        target = self.remote()
        if target is not None and self._tunnel is not None and self._tunnel.lost():
            raise self._remote_problem(target, "the ssh tunnel ended")
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

    def image_id(self, image: str) -> str | None:
        try:
            found = self._find_image(self.client(), image)
        except OCIExecutorError:
            return None
        return str(found.id) if found is not None else None

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

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._containers.clear()
            self._endpoint = ""
        with self._tunnel_lock:
            tunnel, self._tunnel = self._tunnel, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        if tunnel is not None:
            TUNNELS.release(tunnel.target)


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
