"""The ``podman`` backend: the Podman REST API through the ``podman`` SDK, rootful or rootless.

Address: the executor's ``address`` option, else ``CONTAINER_HOST``, else the rootless socket
``$XDG_RUNTIME_DIR/podman/podman.sock``, else ``/run/podman/podman.sock``. When none of these
answers but the ``podman`` binary is installed (and no address was given), the backend starts
a transient ``podman system service`` of its own (one per backend instance, and the executor
shares one instance per process), starts it again if it exited while idle, and stops it in
:meth:`PodmanBackend.close`, which runs at process exit.

Remote: ``ssh://user@host[:port]/path/to/podman.sock`` (without a path: the socket ``podman
info`` reports for that user on that host), or the name of a connection made with ``podman
system connection add`` (its URI and identity). The key: ``ssh_identity``, else the
connection's identity, else ``CONTAINER_SSHKEY``. See docs/remote.md.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
from typing import Any

import podman
import podman.errors

from oci_executor.backend import Container, ContainerSpec, EngineFacts, ExecResult
from oci_executor.backends._engine import CONNECT_TIMEOUT, EngineBackend
from oci_executor.backends._rootless import (  # noqa: F401 - re-exported: this backend's public helpers
    ROOTFUL_SOCKET,
    VFS_WARNING,
    default_address,
    rootless_candidates,
    rootless_socket,
    runtime_dir_problem,
)
from oci_executor.channel import Channel, SocketChannel
from oci_executor.errors import ConfigurationError, ContainerError, EngineUnavailableError, OCIExecutorError
from oci_executor.hookspecs import hookimpl
from oci_executor.progress import PullProgress, PullReport
from oci_executor.registry import BackendRegistry

API_VERSION = "v4.0.0"
SERVICE_IDLE_SECONDS = 60
"""A transient service left behind by a killed executor exits after this long without clients."""
SERVICE_START_TIMEOUT = 20.0


_info_cache: dict[str, dict[str, Any]] = {}
_vfs_warned: set[str] = set()
log = logging.getLogger(__name__)


def cdi_devices(spec: ContainerSpec) -> list[str]:
    """Podman's CDI device names (``--device nvidia.com/gpu=...``) for the spec's GPUs."""
    assert spec.gpus is not None
    if spec.gpus.device_ids:
        return [f"nvidia.com/gpu={device}" for device in spec.gpus.device_ids]
    if spec.gpus.count < 0:
        return ["nvidia.com/gpu=all"]
    return [f"nvidia.com/gpu={index}" for index in range(spec.gpus.count)]


class PodmanBackend(EngineBackend):
    """Tasks in Podman containers, rootful or rootless."""

    name = "podman"
    priority = 30
    error_types = (
        (podman.errors.ImageNotFound, "missing"),
        (podman.errors.NotFound, "missing"),
        (podman.errors.APIError, "engine"),
        (podman.errors.PodmanError, "engine"),
    )
    engine = "Podman"
    start_hint = (
        "Start the Podman service (`podman system service --time=0 &` as your user for rootless, "
        "`systemctl --user start podman.socket`, or `sudo systemctl start podman.socket`), or point "
        "CONTAINER_HOST or the executor's 'address' option at a running service. With the podman "
        "binary installed and no address set, oci-executor starts a transient service itself."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._service: subprocess.Popen[bytes] | None = None
        self._service_dir: str | None = None
        self._info: dict[str, Any] | None = None
        self._storage_checked = False

    cli = "podman"
    remote_socket = "/run/podman/podman.sock"
    remote_start_hint = (
        "start its service there (`systemctl --user enable --now podman.socket`, or "
        "`podman system service --time=0 &` as that user; rootful: `sudo systemctl start podman.socket`)"
    )

    def address(self) -> str:
        if self._service_dir:
            return f"unix://{self._service_dir}/podman.sock"
        return self.config.address or default_address()

    def _ssh_address(self) -> tuple[str, str] | None:
        address = self.address()
        identity = self.config.ssh_identity or ""
        if "://" not in address:
            uri, connection_identity = connection(address)
            address, identity = uri, identity or connection_identity
        if not address.startswith("ssh://"):
            return None
        return address, identity or os.environ.get("CONTAINER_SSHKEY", "")

    def _remote_default_socket(self, target: Any) -> str:
        """The socket ``podman info`` reports on the remote host for that user, else the rootful one."""
        from oci_executor.backends._ssh import run_remote

        try:
            done = run_remote(target, "podman info --format '{{.Host.RemoteSocket.Path}}'")
        except Exception:  # noqa: BLE001 - no answer: the system socket
            return self.remote_socket
        path = done.stdout.strip().removeprefix("unix://")
        return path if done.returncode == 0 and path.startswith("/") else self.remote_socket

    # -- connection, with a transient service as the fallback --------------------------

    def _connect(self) -> Any:
        client = podman.PodmanClient(base_url=self.endpoint(), timeout=CONNECT_TIMEOUT)
        if self.config.address or os.environ.get("CONTAINER_HOST") or not shutil.which("podman"):
            return client
        try:
            client.ping()
            return client
        except Exception:  # noqa: BLE001 - no service: start our own
            client.close()
        self._start_service()
        return podman.PodmanClient(base_url=self.address(), timeout=CONNECT_TIMEOUT)

    def _ping(self, client: Any, timeout: float) -> None:
        client.api.head("/_ping", timeout=timeout).raise_for_status()

    def unsupported(self, spec: ContainerSpec) -> list[str]:
        names = super().unsupported(spec)
        if (
            (spec.cpus or spec.memory)
            and self.rootless()
            and self.info().get("host", {}).get("cgroupVersion") == "v1"
        ):
            names += [name for name in ("cpus", "memory") if getattr(spec, name)]
        return sorted(names)

    def explain_unsupported(self, names: list[str]) -> str:
        if {"cpus", "memory"} & set(names) and self.rootless():
            return (
                "rootless Podman cannot set cpus or memory limits on a cgroup v1 host (it would "
                "silently ignore them). Boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1), "
                "use rootful Podman or Docker, or drop the limits"
            )
        return super().explain_unsupported(names)

    def store(self) -> str:
        if self._service is not None:  # a throwaway socket means nothing to the user
            return "rootless Podman image store of this user" if self.rootless() else "Podman image store"
        return super().store()

    def installed(self) -> bool:
        if self.config.address and self.remote() is not None:
            return True
        return bool(shutil.which("podman")) or os.path.exists(self.address().split("://", 1)[-1])

    def unavailable(self, detail: str) -> EngineUnavailableError:
        error = super().unavailable(detail)
        problem = runtime_dir_problem() if not self.config.address and self.remote() is None else None
        if problem and "does not answer" in str(error):
            return EngineUnavailableError(f"{error} Also: {problem}", address=error.address)
        return error

    def _start_service(self) -> None:
        """Start ``podman system service`` on a private socket and wait until it answers."""
        base = os.environ.get("XDG_RUNTIME_DIR")
        if not base or not os.access(base, os.W_OK):
            base = None
        self._service_dir = tempfile.mkdtemp(prefix="oci-executor-podman-", dir=base)
        socket_path = f"{self._service_dir}/podman.sock"
        log_path = f"{self._service_dir}/service.log"
        with open(log_path, "wb") as log:
            self._service = subprocess.Popen(
                ["podman", "system", "service", f"--time={SERVICE_IDLE_SECONDS}", f"unix://{socket_path}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + SERVICE_START_TIMEOUT
        while not os.path.exists(socket_path):
            if self._service.poll() is not None or time.monotonic() > deadline:
                with open(log_path, "rb") as handle:
                    detail = handle.read().decode(errors="replace").strip()[-500:]
                self._stop_service()
                raise self.unavailable(f"could not start a transient `podman system service`: {detail}")
            time.sleep(0.05)

    def _stop_service(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            # The whole process group: rootless Podman re-executes itself in a user namespace,
            # and a child signalled only through its parent can miss a stop sent soon after start.
            _signal_group(service, signal.SIGTERM)
            try:
                service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(service, signal.SIGKILL)
                service.wait()
        if self._service_dir:
            shutil.rmtree(self._service_dir, ignore_errors=True)
            self._service_dir = None

    def client(self) -> Any:
        # A transient service exits after SERVICE_IDLE_SECONDS without clients: start anew.
        service = self._service
        if service is not None and service.poll() is not None:
            with self._lock:
                stale, self._client = self._client, None
            if stale is not None:
                stale.close()
            self._stop_service()
            self._info = None
        client = super().client()
        if self._storage_checked is False:
            self._storage_checked = True
            self._warn_about_vfs()
        return client

    def _warn_about_vfs(self) -> None:
        """Log once per process and store if Podman uses the vfs storage driver (seconds per container)."""
        try:
            store = self.info().get("store", {})
        except OCIExecutorError:
            return
        driver = store.get("graphDriverName", "")
        root = store.get("graphRoot", "")
        if driver != "vfs" or root in _vfs_warned:
            return
        _vfs_warned.add(root)
        log.warning(VFS_WARNING, root)

    @property
    def transient_service(self) -> bool:
        """Whether this backend started its own Podman service."""
        return self._service is not None

    def close(self) -> None:
        super().close()
        self._stop_service()

    # -- engine specifics ----------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """``podman info`` of the service (cached per address for the process)."""
        if self._info is None:
            address = self.address()
            cached = None if self._service_dir else _info_cache.get(address)
            if cached is None:
                with self._errors("read the service's info"):
                    cached = dict(self.client().info())
                if not self._service_dir:
                    _info_cache[address] = cached
            self._info = cached
        return self._info

    def rootless(self) -> bool:
        return bool(self.info().get("host", {}).get("security", {}).get("rootless", False))

    def facts(self) -> EngineFacts:
        info = self.info()
        host, store = info.get("host", {}), info.get("store", {})
        rootless = self.rootless()
        cgroup = str(host.get("cgroupVersion", "")).lstrip("v")
        controllers = set(host.get("cgroupControllers") or ())
        # Rootless Podman limits only with cgroup v2 and the controller delegated to the user.
        enforce = {c: not rootless or (cgroup == "2" and c in controllers) for c in ("cpu", "memory")}
        helper = next(
            (
                str(host[key].get("executable", ""))
                for key in ("pasta", "slirp4netns")
                if isinstance(host.get(key), dict) and host[key].get("executable")
            ),
            "",
        )
        return EngineFacts(
            engine=self.engine,
            version=str(info.get("version", {}).get("Version", "?")),
            address=self.address(),
            rootless=rootless,
            storage_driver=str(store.get("graphDriverName", "")),
            storage_root=str(store.get("graphRoot", "")),
            cgroup_version=cgroup,
            cpu_limits=enforce["cpu"],
            memory_limits=enforce["memory"],
            runtimes=(str(host.get("ociRuntime", {}).get("name", "")),),
            id_map=tuple(
                (int(m["container_id"]), int(m["host_id"]), int(m["size"]))
                for m in host.get("idMappings", {}).get("uidmap") or ()
            ),
            network_helper=helper,
            transient=self.transient_service,
        )

    def _pull(self, client: Any, image: str, report: PullReport) -> Any:
        # Podman's API streams text lines ("Copying blob sha256:..."), no byte counts, and
        # reports a failed pull only inside the stream. tls_verify=None leaves TLS to
        # registries.conf, as the podman CLI does (podman-py would force it on).
        layers: list[str] = []
        for event in client.images.pull(image, stream=True, decode=True, tls_verify=None):
            if not isinstance(event, dict):
                continue
            if event.get("error"):
                raise RuntimeError(event["error"])
            line = str(event.get("stream", "")).strip()
            if line.startswith("Copying blob "):
                layers.append(line.rsplit(":", 1)[-1][:12])
                report(PullProgress(image=image, layer=layers[-1], status="Copying blob"))
            elif line:
                report(PullProgress(image=image, layer="", status=line))
        for layer in layers:
            report(PullProgress(image=image, layer=layer, status="Pull complete", done=True))
        return client.images.get(image)

    def _before_start(self, obj: Any, spec: ContainerSpec) -> None:
        """Create a missing workdir, owned by the task's user: Podman's API does not (Docker does)."""
        if not spec.workdir:
            return
        try:
            obj.get_archive(spec.workdir)
            return
        except Exception:  # noqa: BLE001 - missing: create it below
            pass
        uid, _, gid = (spec.user or "0").partition(":")
        info = tarfile.TarInfo(spec.workdir.strip("/"))
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.uid = int(uid) if uid.isdigit() else 0
        info.gid = int(gid) if gid.isdigit() else info.uid
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.addfile(info)
        obj.put_archive("/", buffer.getvalue())

    def _create_kwargs(self, spec: ContainerSpec) -> dict[str, Any]:
        kwargs = super()._create_kwargs(spec)
        kwargs["log_config"] = {"Type": "none"}  # the runner's channel is not a log
        kwargs["no_new_privileges"] = True  # setuid binaries grant the task nothing
        if spec.read_only:
            kwargs["read_only"] = True
            kwargs["mounts"] = [{"type": "tmpfs", "source": "tmpfs", "target": "/tmp", "mode": "1777"}]
        rootless = self.rootless()
        if rootless and spec.pids_limit:
            # Rootless Podman on cgroup v1 ignores pids_limit: the kernel's per-user count holds
            # (RLIMIT_NPROC, counted over the user's containers that run as the same user).
            limit = spec.pids_limit
            kwargs["ulimits"] = [{"Name": "nproc", "Soft": limit, "Hard": limit}]
        if spec.volumes:
            extra = ["z"] if spec.selinux_relabel else []
            kwargs["volumes"] = {
                v.host: {"bind": v.container, "extended_mode": ["ro" if v.read_only else "rw", *extra]}
                for v in spec.volumes
            }
            if rootless and not spec.userns:
                # Files the task writes belong to the invoking user on the host, and the
                # task can read that user's files.
                kwargs["userns_mode"] = "keep-id"
        if spec.network and "network_mode" not in kwargs:
            kwargs["networks"] = {spec.network: {}}
        if spec.gpus:
            kwargs["devices"] = cdi_devices(spec)
        return kwargs

    def _map_error(self, exc: Exception, action: str) -> OCIExecutorError | None:
        text = " ".join(str(exc).split())
        match = re.search(r"statfs (\S+): (permission denied|no such file or directory)", text)
        if match:
            return ContainerError(
                f"Podman cannot mount the host folder {match.group(1)}: {match.group(2)}. The folder must exist "
                "and be reachable by the user running the Podman service (for rootless Podman: you); "
                "create it, or give that user search (x) permission on every parent folder."
            )
        return None

    def _attach(self, container: Container) -> Channel:
        # podman-py has no attach: speak the libpod endpoint directly. Podman closes the
        # container's stdin when this stream closes, also when this process is killed.
        return http_attach(
            self.endpoint(),
            f"/{API_VERSION}/libpod/containers/{container.id}/attach"
            "?stdin=true&stdout=true&stderr=true&stream=true&detachKeys=",
        )

    def _exec_result(self, raw: Any) -> ExecResult:
        exit_code, output = raw
        stdout, stderr = output if isinstance(output, tuple) else (output, b"")
        return ExecResult(int(exit_code or 0), stdout or b"", stderr or b"")


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal ``process`` and its process group (it leads one: ``start_new_session``)."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        process.send_signal(signum)


def connection(name: str) -> tuple[str, str]:
    """The URI and identity file of a Podman connection (``podman system connection add``)."""
    if not shutil.which("podman"):
        raise ConfigurationError(
            f"address={name!r} is neither a URL nor a Podman connection name that can be looked up "
            "(no podman command here). Use ssh://user@host[:port]/path/to/podman.sock, unix://... or tcp://..."
        )
    done = subprocess.run(
        ["podman", "system", "connection", "list", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    try:
        entries = json.loads(done.stdout or "[]") if done.returncode == 0 else []
    except ValueError:
        entries = []
    for entry in entries:
        if entry.get("Name") == name:
            return str(entry.get("URI", "")), str(entry.get("Identity", "") or "")
    known = ", ".join(str(e.get("Name")) for e in entries) or "none"
    raise ConfigurationError(
        f"address={name!r} is not a URL and no Podman connection has that name (connections: {known}). "
        "Add it with `podman system connection add NAME ssh://user@host[:port]/path/to/podman.sock "
        "--identity KEY`, or give the URL itself."
    )


def http_attach(address: str, path: str) -> SocketChannel:
    """POST an attach request with ``Upgrade: tcp`` and return the upgraded stream."""
    if address.startswith(("unix://", "http+unix://")):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = address.split("://", 1)[1]
        if address.startswith("http+unix://"):
            target = urllib.parse.unquote(target)
    elif address.startswith(("tcp://", "http://")):
        host, _, port = address.split("://", 1)[1].rstrip("/").rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
    else:
        raise ConfigurationError(f"cannot attach over {address!r}: use a unix:// or tcp:// address")
    sock.settimeout(CONNECT_TIMEOUT)
    try:
        sock.connect(target)
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
            "Content-Length: 0\r\n\r\n".encode("ascii")
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("the engine closed the attach request")
            head += chunk
            if len(head) > 65536:
                raise ConnectionError("the engine's attach answer has no end of headers")
    except BaseException:
        sock.close()
        raise
    head, _, rest = head.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if " 101 " not in status + " " and " 200 " not in status + " ":
        sock.close()
        raise ContainerError(f"Podman refused to attach: {status} {rest[:300].decode(errors='replace')}")
    sock.settimeout(None)
    return SocketChannel(sock, prefix=rest)


@hookimpl
def oci_executor_register_backends(registry: BackendRegistry) -> None:
    registry.add(PodmanBackend)
