"""The ``docker`` backend: the Docker Engine API through the ``docker`` SDK.

Address: the executor's ``address`` option, else ``DOCKER_HOST``, else the default socket
``unix:///var/run/docker.sock``. An ``ssh://user@host[:port]`` address reaches
``/var/run/docker.sock`` on that host through the process's one ssh tunnel (see
:mod:`oci_executor.backends.shared.ssh` and docs/remote.md), not through docker-py's own ssh modes.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import docker
import docker.errors
import docker.types

from oci_executor.backend import Container, EngineFacts, ExecResult, GpuRequest
from oci_executor.backends.shared.engine import CONNECT_TIMEOUT, EngineBackend
from oci_executor.backends.shared.intent import ContainerIntent
from oci_executor.channel import Channel, SocketChannel
from oci_executor.hookspecs import hookimpl
from oci_executor.registry import BackendRegistry

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


class DockerBackend(EngineBackend):
    """Tasks in Docker containers."""

    name = "docker"
    priority = 20
    error_types = (
        (docker.errors.ImageNotFound, "missing"),
        (docker.errors.NotFound, "missing"),
        (docker.errors.APIError, "engine"),
        (docker.errors.DockerException, "engine"),
    )
    engine = "Docker"
    option_notes = {
        "backend": '`"docker"`',
        "address": "Engine URL (`unix://`, `tcp://`, `ssh://user@host[:port]`, see docs/remote.md); empty: `DOCKER_HOST`, else `unix:///var/run/docker.sock`",
        "ssh_identity": "private key file for an `ssh://` address (`ssh -i`); empty: your ssh agent and `~/.ssh` keys",
        "env": "`environment`",
        "volumes": "`volumes={host: {bind, mode: ro/rw}}` (bind mounts)",
        "selinux_relabel": "adds `z` to each volume's mode",
        "userns": "`userns_mode` (e.g. `host`)",
        "workdir": "`working_dir` (created by Docker)",
        "user": '`user` (`"uid[:gid]"` or a name in the image)',
        "cpus": "`cpu_period=100000`, `cpu_quota=cpus*100000`",
        "memory": '`mem_limit` and `memswap_limit` (no swap beyond it); `"512m"`, `"2g"` or bytes',
        "gpus": '`device_requests=[DeviceRequest(count or device_ids, capabilities=[["gpu"]])]` (`--gpus`)',
        "network": "`network_mode`: `none`, `host`, `bridge` or a network's name",
        "shm_size": "`shm_size` in bytes",
        "read_only": "`read_only=True` and a tmpfs at `/tmp` (mode 1777)",
        "queue_timeout": "unused (no queue)",
    }
    start_hint = (
        "Start the Docker daemon (`sudo systemctl start docker`, or `sudo dockerd &`), "
        "or point DOCKER_HOST or the executor's 'address' option at a running engine."
    )

    subid_reload = "systemctl --user restart docker"  # rootless Docker reads the ranges when it starts

    def start_command(self) -> str:
        return "sudo systemctl start docker (without systemd: sudo dockerd &)"

    def storage_fix(self, facts: EngineFacts) -> str:
        return 'set {"storage-driver": "overlay2"} in /etc/docker/daemon.json, then restart dockerd'

    def gpu_support(self, facts: EngineFacts | None) -> tuple[bool, str, str]:
        """The NVIDIA container runtime (``--gpus``), not CDI."""
        ok = any("nvidia" in r for r in (facts.runtimes if facts else ())) or bool(
            shutil.which("nvidia-container-runtime-hook") or shutil.which("nvidia-container-runtime")
        )
        return (
            ok,
            "NVIDIA runtime" if ok else "no NVIDIA container runtime",
            "install the NVIDIA Container Toolkit, then sudo nvidia-ctk runtime configure --runtime=docker and restart dockerd",
        )

    def address(self) -> str:
        return self.config.address or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET

    def installed(self) -> bool:
        if self.remote() is not None:
            return True
        return bool(shutil.which("dockerd") or shutil.which("docker")) or os.path.exists(
            self.address().split("://", 1)[-1]
        )

    def facts(self) -> EngineFacts:
        with self._errors("read the engine's info"):
            info = dict(self.client().info())
        return EngineFacts(
            engine=self.engine,
            version=str(info.get("ServerVersion", "?")),
            address=self.address(),
            rootless=any("name=rootless" in str(o) for o in info.get("SecurityOptions") or ()),
            storage_driver=str(info.get("Driver", "")),
            storage_root=str(info.get("DockerRootDir", "")),
            cgroup_version=str(info.get("CgroupVersion", "")),
            cpu_limits=bool(info.get("CpuCfsQuota", True)),
            memory_limits=bool(info.get("MemoryLimit", True)),
            runtimes=tuple(sorted(info.get("Runtimes") or {})),
        )

    def _connect(self) -> Any:
        if self.remote() is not None:
            return docker.DockerClient(base_url=self.endpoint(), timeout=int(CONNECT_TIMEOUT))
        if self.config.address:
            return docker.DockerClient(base_url=self.config.address, timeout=int(CONNECT_TIMEOUT))
        return docker.from_env(timeout=int(CONNECT_TIMEOUT))

    def _render(self, intent: ContainerIntent) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "log_config": docker.types.LogConfig(type=intent.log_driver),
            "security_opt": ["no-new-privileges"] if intent.no_new_privileges else [],
        }
        if intent.tmpfs:
            kwargs["tmpfs"] = dict(intent.tmpfs)
        if intent.binds:
            kwargs["volumes"] = {
                b.source: {"bind": b.target, "mode": ",".join(b.options)} for b in intent.binds
            }
        if intent.network and not intent.builtin_network:
            kwargs["network_mode"] = intent.network  # a user-defined network, by name
        if intent.gpus:
            kwargs["device_requests"] = [device_request(intent.gpus)]
        return kwargs

    def _attach(self, container: Container) -> Channel:
        # Created without ``detach``, the container has StdinOnce: its stdin closes when this
        # stream does, also when this process is killed, and the runner then ends.
        sock = self.client().api.attach_socket(
            container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        )
        raw = getattr(sock, "_sock", sock)
        raw.settimeout(None)
        return SocketChannel(raw, keep=sock)

    def _list(self, client: Any, filters: dict[str, str]) -> list[Any]:
        # sparse: no inspect per container (one being removed would fail it)
        return list(client.containers.list(all=True, sparse=True, filters=filters))

    def _exec_result(self, raw: Any) -> ExecResult:
        stdout, stderr = raw.output if raw.output is not None else (None, None)
        return ExecResult(int(raw.exit_code or 0), stdout or b"", stderr or b"")


def device_request(gpus: GpuRequest) -> docker.types.DeviceRequest:
    """Docker's GPU request (``docker run --gpus``) for a GPU request."""
    if gpus.device_ids:
        return docker.types.DeviceRequest(device_ids=list(gpus.device_ids), capabilities=[["gpu"]])
    return docker.types.DeviceRequest(count=gpus.count, capabilities=[["gpu"]])


@hookimpl
def oci_executor_register_backends(registry: BackendRegistry) -> None:
    registry.add(DockerBackend)
