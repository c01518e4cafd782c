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

import contextlib
import logging
import os
import re
import shutil
from typing import Any

import podman
import podman.errors

from oci_executor.backend import Container, ContainerSpec, EngineFacts, ExecResult
from oci_executor.backends.podman.attach import http_attach
from oci_executor.backends.podman.connection import connection
from oci_executor.backends.podman.diagnosis import PodmanDiagnosis
from oci_executor.backends.podman.info import engine_facts
from oci_executor.backends.podman.pull import make_workdir, pull
from oci_executor.backends.podman.rootless import (  # noqa: F401 - re-exported: this backend's public helpers
    ROOTFUL_SOCKET,
    VFS_WARNING,
    cli_has_image,
    container_host_error,
    default_address,
    rootless_candidates,
    rootless_socket,
    runtime_dir_error,
    runtime_dir_problem,
)
from oci_executor.backends.podman.service import SERVICE_IDLE_SECONDS, TransientService  # noqa: F401
from oci_executor.backends.shared.engine import CONNECT_TIMEOUT
from oci_executor.backends.shared.intent import ContainerIntent
from oci_executor.backends.shared.ssh import SshTarget, run_remote
from oci_executor.channel import Channel
from oci_executor.errors import ContainerError, EngineUnavailableError, OCIExecutorError
from oci_executor.hookspecs import hookimpl
from oci_executor.progress import PullReport
from oci_executor.registry import BackendRegistry

API_VERSION = "v4.0.0"
REMOTE_SOCKET_QUERY = "podman info --format '{{.Host.RemoteSocket.Path}}'"

_info_cache: dict[str, dict[str, Any]] = {}
_vfs_warned: set[str] = set()
log = logging.getLogger(__name__)


class PodmanBackend(PodmanDiagnosis):
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
    option_notes = {
        "backend": '`"podman"`',
        "address": "service URL (`unix://`, `tcp://`, `ssh://user@host[:port]/path/to/podman.sock`) or a connection name (`podman system connection add`); empty: `CONTAINER_HOST`, else your rootless socket (`$XDG_RUNTIME_DIR/podman/podman.sock`, `/run/user/UID/...` or `/tmp/podman-run-UID/...`), else (root only) `unix:///run/podman/podman.sock`; with neither set and no socket answering, a transient service",
        "ssh_identity": "yes; empty: the connection's identity, else `CONTAINER_SSHKEY`, else your ssh agent and `~/.ssh` keys",
        "env": "`environment`",
        "volumes": '`volumes={host: {bind, extended_mode: [ro/rw]}}`; rootless: `userns_mode="keep-id"` unless `userns` is set',
        "selinux_relabel": "adds `z` to each volume's options",
        "userns": "`userns_mode` (e.g. `keep-id`, `auto`); empty: automatic, see `volumes`",
        "workdir": "`working_dir`, created owned by `user` if missing",
        "user": "`user`",
        "cpus": "yes; rootless on cgroup v1: error",
        "memory": "yes; rootless on cgroup v1: error",
        "gpus": "CDI `devices`: `nvidia.com/gpu=all`, `=0..N-1`, or `=ID` each",
        "network": "`none`/`host`/`bridge` as `network_mode`; a name as `networks={name: {}}`",
        "read_only": "`read_only=True` and a tmpfs mount at `/tmp`",
        "queue_timeout": "unused (no queue)",
    }
    start_hint = (
        "Start the Podman service (`podman system service --time=0 &` as your user for rootless"
        + (
            ", `systemctl --user start podman.socket`, or `sudo systemctl start podman.socket`"
            if os.path.isdir("/run/systemd/system")  # no systemd here: no systemctl advice
            else ""
        )
        + "), or point the executor's 'address' option at a running service. With the podman "
        "binary installed and no address set, oci-executor starts a transient service itself."
    )
    cli = "podman"
    remote_socket = "/run/podman/podman.sock"
    remote_start_hint = (
        "start its service there (`systemctl --user enable --now podman.socket`, or "
        "`podman system service --time=0 &` as that user; rootful: `sudo systemctl start podman.socket`)"
    )
    remote_socket_query = REMOTE_SOCKET_QUERY

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._service = TransientService()
        self._info: dict[str, Any] | None = None
        self._storage_checked = False

    def address(self) -> str:
        return self._service.address or self.config.address or default_address()

    # -- remote: a connection name, the socket podman info reports -----------------------

    def _ssh_address(self) -> tuple[str, str] | None:
        address = self.address()
        identity = self.config.ssh_identity or ""
        if "://" not in address:
            uri, connection_identity = connection(address)
            address, identity = uri, identity or connection_identity
        if not address.startswith("ssh://"):
            return None
        return address, identity or os.environ.get("CONTAINER_SSHKEY", "")

    def _remote_default_socket(self, target: SshTarget) -> str:
        """The socket ``podman info`` reports on the remote host for that user, else the rootful one."""
        try:
            done = run_remote(target, REMOTE_SOCKET_QUERY)
        except Exception:  # noqa: BLE001 - no answer: the system socket
            return self.remote_socket
        path = done.stdout.strip().removeprefix("unix://")
        return path if done.returncode == 0 and path.startswith("/") else self.remote_socket

    def wrong_socket_hint(self, target: SshTarget, suggested: str) -> str:
        return (
            f"`{REMOTE_SOCKET_QUERY}` on {target.host} prints the path"
            + (f" (it says {suggested})" if suggested else "")
            + "; start the service if none listens (`podman system service --time=0 &`, or "
            "`systemctl --user enable --now podman.socket`)"
        )

    # -- connection, with a transient service as the fallback --------------------------

    def _local_default(self) -> bool:
        """Whether the address is this user's own default (no address option, no CONTAINER_HOST)."""
        return not self.config.address and not os.environ.get("CONTAINER_HOST")

    def _connect(self) -> Any:
        problem = runtime_dir_error() if self._local_default() else None
        if problem:  # Podman itself cannot work with it: say so before anything fails obscurely
            raise EngineUnavailableError(problem, address=self.address())
        client = podman.PodmanClient(base_url=self.endpoint(), timeout=CONNECT_TIMEOUT)
        if self.config.address or os.environ.get("CONTAINER_HOST") or not shutil.which("podman"):
            return client
        try:
            client.ping()
            return client
        except Exception:  # noqa: BLE001 - no service: start our own
            client.close()
        failed = self._service.start()
        if failed is not None:
            raise self.unavailable(f"could not start a transient `podman system service`: {failed}")
        return podman.PodmanClient(base_url=self.address(), timeout=CONNECT_TIMEOUT)

    def _ping(self, client: Any, timeout: float) -> None:
        client.api.head("/_ping", timeout=timeout).raise_for_status()

    def client(self) -> Any:
        # A transient service exits after SERVICE_IDLE_SECONDS without clients, and keeps the
        # store it opened: start anew after either.
        if self._service.exited() or self._service.store_changed():
            self._restart_service()
        client = super().client()
        if self._service.running and not self._service.graph_root:
            with contextlib.suppress(Exception):  # no info, no watch: the service still works
                self._service.watch(str(dict(client.info()).get("store", {}).get("graphRoot", "")))
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

    def _restart_service(self) -> None:
        """Drop the client and the transient service; the next call starts a fresh one."""
        with self._lock:
            stale, self._client = self._client, None
        if stale is not None:
            stale.close()
        self._service.stop()
        self._info = None

    def _find_image(self, client: Any, image: str) -> Any | None:
        found = super()._find_image(client, image)
        if found is None and self._service.running and cli_has_image(image):
            # The podman command sees it and our service does not: a stale store. Reopen it.
            log.info("the transient Podman service did not see image %s: restarting it", image)
            self._restart_service()
            found = super()._find_image(self.client(), image)
        return found

    @property
    def transient_service(self) -> bool:
        """Whether this backend started its own Podman service."""
        return self._service.running

    def close(self) -> None:
        super().close()
        self._service.stop()

    def installed(self) -> bool:
        if self.config.address and self.remote() is not None:
            return True
        return bool(shutil.which("podman")) or os.path.exists(self.address().split("://", 1)[-1])

    def unavailable(self, detail: str) -> EngineUnavailableError:
        host = os.environ.get("CONTAINER_HOST", "")
        if host and not self.config.address and self.remote() is None:
            return EngineUnavailableError(container_host_error(host, detail), address=host)
        problem = runtime_dir_error() if self._local_default() else None
        if problem:  # the cause first; what Podman said after it
            return EngineUnavailableError(f"{problem} (Podman: {detail})", address=self.address())
        return super().unavailable(detail)

    # -- what the service says ---------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """``podman info`` of the service (cached per address for the process)."""
        if self._info is None:
            address = self.address()
            cached = None if self._service.running else _info_cache.get(address)
            if cached is None:
                with self._errors("read the service's info"):
                    cached = dict(self.client().info())
                if not self._service.running:
                    _info_cache[address] = cached
            self._info = cached
        return self._info

    def rootless(self) -> bool:
        return bool(self.info().get("host", {}).get("security", {}).get("rootless", False))

    def facts(self) -> EngineFacts:
        return engine_facts(self.info(), self.engine, self.address(), self.transient_service)

    def store(self) -> str:
        # A user's own store is named as the docs name it; a throwaway socket means nothing to them.
        if self.remote() is None and (self._service.running or os.geteuid() != 0):
            with contextlib.suppress(OCIExecutorError):
                if self.rootless() and os.geteuid() != 0:
                    return "rootless Podman image store of this user"
            if self._service.running:
                return "Podman image store"
        return super().store()

    def unsupported(self, spec: ContainerSpec) -> list[str]:
        names = super().unsupported(spec)
        if (
            (spec.cpus or spec.memory)
            and self.rootless()
            and self.info().get("host", {}).get("cgroupVersion") == "v1"
        ):
            names += [name for name in ("cpus", "memory") if getattr(spec, name)]
        return sorted(names)

    def explain_unsupported(self, names: list[str], spec: ContainerSpec) -> str:
        if {"cpus", "memory"} & set(names) and self.rootless():
            return (
                "rootless Podman cannot set cpus or memory limits on a cgroup v1 host (it would "
                "silently ignore them). Boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1), "
                "use rootful Podman or Docker, or drop the limits"
            )
        return super().explain_unsupported(names, spec)

    # -- the intent in podman-py's terms, and the verbs' engine specifics ------------------

    def _render(self, intent: ContainerIntent) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "log_config": {"Type": intent.log_driver},
            "no_new_privileges": intent.no_new_privileges,
        }
        if intent.tmpfs:
            kwargs["mounts"] = [tmpfs_mount(target, options) for target, options in intent.tmpfs.items()]
        if intent.binds:
            kwargs["volumes"] = {
                b.source: {"bind": b.target, "extended_mode": list(b.options)} for b in intent.binds
            }
        if intent.network and not intent.builtin_network:
            kwargs["networks"] = {intent.network: {}}
        if intent.devices:
            kwargs["devices"] = list(intent.devices)
        return kwargs

    def _pull(self, client: Any, image: str, report: PullReport) -> Any:
        return pull(client, image, report)

    def _before_start(self, obj: Any, spec: ContainerSpec) -> None:
        """Create a missing workdir, owned by the task's user: Podman's API does not (Docker does)."""
        make_workdir(obj, spec)

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


def tmpfs_mount(target: str, options: str) -> dict[str, str]:
    """A podman-py tmpfs mount; it passes on only ``mode`` and ``size`` (Podman's tmpfs mounts
    are ``rw,nosuid,nodev`` and exec by default, as the intent asks)."""
    mount = {"type": "tmpfs", "source": "tmpfs", "target": target}
    for option in options.split(","):
        key, _, value = option.partition("=")
        if key in ("mode", "size"):
            mount[key] = value
    return mount


@hookimpl
def oci_executor_register_backends(registry: BackendRegistry) -> None:
    registry.add(PodmanBackend)
