"""The diagnosis of one backend: its engine, socket, storage, cgroups and limits, the rootless
setup, and whether the configured image starts a runner with the host's Python.

Everything goes through the backend's own verbs (``problem``, ``facts``, ``unsupported``) and
the executor's own start path (:func:`oci_executor.lifecycle.start_runner`), so a finding says
what a task would meet.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Mapping
from typing import Any

from oci_executor import settings
from oci_executor.backend import Backend, ContainerSpec, EngineFacts
from oci_executor.backends.podman.rootless import VFS_MEASURED
from oci_executor.backends.shared.engine import EngineBackend
from oci_executor.core import our_labels
from oci_executor.doctor import host
from oci_executor.doctor.finding import Finding
from oci_executor.doctor.volumes import check_volumes
from oci_executor.errors import (
    ImageHasNoPythonError,
    ImageNotFoundError,
    OCIExecutorError,
    PythonVersionMismatchError,
    RunnerError,
)
from oci_executor.lifecycle import discard, start_runner
from oci_executor.options import parse_volumes
from oci_executor.task import host_python_version

DOCTOR_DISPATCH = "oci-executor-doctor"
"""The dispatch label of the doctor's test container (it is removed at once)."""
CDI_FOLDERS = ("/etc/cdi", "/var/run/cdi")
PYTHON_VERSION = "import platform; print(platform.python_version())"


def diagnose_backend(backend: Backend, image: str, values: Mapping[str, Any]) -> list[Finding]:
    """Every check of ``backend`` (closed afterwards), in the order a user fixes them."""
    try:
        return _diagnose(backend, image, values)
    finally:
        backend.close()


def _diagnose(backend: Backend, image: str, values: Mapping[str, Any]) -> list[Finding]:
    name = backend.name
    engine = isinstance(backend, EngineBackend)
    findings: list[Finding] = []
    address = backend.address() if engine else ""  # type: ignore[attr-defined]
    socket = host.check_socket(name, address, start_fix(backend, address)) if engine else None
    problem = backend.problem()
    facts: EngineFacts | None = None
    if problem is None and engine:
        try:
            facts = backend.facts()
        except OCIExecutorError as exc:
            problem = str(exc)
    engine_finding = _engine_finding(backend, problem, facts, address)
    if engine_finding.status == "skip":  # not installed: nothing else to say
        return [engine_finding]
    if socket is not None:
        findings.append(_transient_socket(socket, address) if _transient_possible(backend) else socket)
    findings.append(engine_finding)
    rootless = facts.rootless if facts else (name == "podman" and _expect_rootless(address))
    if problem is None:
        if facts is not None:
            findings.append(_storage(name, facts))
            findings.append(_cgroup(name, facts))
        findings.append(_limits(backend, facts, values))
        if engine:
            findings += check_volumes(name, backend.config, parse_volumes(values["volumes"]))
    else:
        findings += [
            _skipped(name, check) for check in (("storage", "cgroup") if engine else ()) + ("limits",)
        ]
    if rootless:
        uid = _engine_uid(facts, address)
        findings.append(host.check_subids(name, uid, facts.id_map if facts else ()))
        if name == "podman":
            findings.append(host.check_runtime_dir(uid, address))
            findings.append(host.check_network(uid, facts.network_helper if facts else "", values["network"]))
    if problem is not None:
        findings += [_skipped(name, check) for check in (("image",) if engine else ()) + ("python",)]
        return findings
    present = True
    if engine:
        image_finding = _image(backend, image, values["pull_policy"])
        findings.append(image_finding)
        present = image_finding.status == "ok"
    if present:
        findings.append(_python(backend, image, values))
    else:
        findings.append(Finding(name, "python", "skip", f"image {image} is not in the store: cannot run it"))
    return findings


def _skipped(name: str, check: str) -> Finding:
    return Finding(name, check, "skip", "not checked: the engine does not answer")


# -- the engine -----------------------------------------------------------------------------


def _transient_socket(socket: Finding, address: str) -> Finding:
    """The socket finding when no answer there means a transient service instead of a failure."""
    if socket.status != "fail":
        return socket
    instead = "oci-executor starts a transient `podman system service` per process instead"
    if "no socket" in socket.message:
        return Finding(
            socket.backend, "socket", "skip", f"no service socket at {host.socket_path(address)}: {instead}"
        )
    return Finding(
        socket.backend,
        "socket",
        "warn",
        f"{socket.message}; {instead} (start a service to save that)",
        socket.fix,
    )


def _transient_possible(backend: Backend) -> bool:
    """Whether the Podman backend would start its own service when no socket answers."""
    return (
        backend.name == "podman"
        and not backend.config.address
        and not os.environ.get("CONTAINER_HOST")
        and bool(shutil.which("podman"))
    )


def _expect_rootless(address: str) -> bool:
    return os.geteuid() != 0 or "/run/user/" in address or "/podman-run-" in address


def _engine_uid(facts: EngineFacts | None, address: str) -> int:
    """The user the engine runs as: its UID map's container root, else the socket's owner."""
    if facts and facts.id_map:
        return next((hid for cid, hid, _ in facts.id_map if cid == 0), os.geteuid())
    path = host.socket_path(address)
    if path and os.path.exists(path):
        return os.stat(path).st_uid
    match = re.search(r"/run/user/(\d+)/|/podman-run-(\d+)/", address)
    return int(match.group(1) or match.group(2)) if match else os.geteuid()


def start_fix(backend: Backend, address: str) -> str:
    """The command that starts the engine at ``address``."""
    if backend.name == "docker":
        return "sudo systemctl start docker (without systemd: sudo dockerd &)"
    if backend.name == "podman":
        if _expect_rootless(address):
            return f"podman system service --time=0 {address} & (as the rootless user; or: systemctl --user start podman.socket)"
        return f"sudo podman system service --time=0 {address} & (or: sudo systemctl start podman.socket)"
    return str(getattr(backend, "start_hint", ""))


def _engine_finding(
    backend: Backend, problem: str | None, facts: EngineFacts | None, address: str
) -> Finding:
    name = backend.name
    if problem is not None:
        if not backend.installed():
            return Finding(name, "engine", "skip", f"{backend.describe()} is not installed here")
        hint = str(getattr(backend, "start_hint", ""))
        message = problem.replace(hint, "").strip() if hint else problem
        if address.startswith("ssh://") or " over ssh" in problem:
            fix = "the message says it (Fix: ...); see docs/remote.md"
        elif "permission denied" in problem.lower():
            fix = "see the socket finding: join the socket's group, or use a socket you may use"
        else:
            fix = start_fix(backend, address)
        return Finding(name, "engine", "fail", message, fix)
    if facts is None:
        return Finding(
            name, "engine", "ok", f"{backend.describe()} runs tasks on the host, without a container"
        )
    mode = "rootless" if facts.rootless else "rootful"
    where = (
        f"through a transient `podman system service` (none answers at {backend.config.address or _default(backend)})"
        if facts.transient
        else f"at {facts.address}"
    )
    return Finding(name, "engine", "ok", f"{facts.engine} {facts.version} answers {where} ({mode})")


def _default(backend: Backend) -> str:
    from oci_executor.backends.podman.rootless import default_address

    return default_address() if backend.name == "podman" else ""


# -- storage, cgroups, limits ---------------------------------------------------------------


def _storage(name: str, facts: EngineFacts) -> Finding:
    where = f"{facts.storage_driver} storage at {facts.storage_root}"
    if facts.storage_driver != "vfs":
        return Finding(name, "storage", "ok", where)
    message = (
        f"{where}: vfs copies the whole image for every container (measured for rootless Podman: "
        f"{VFS_MEASURED}, about 40 times slower)"
    )
    if name == "docker":
        fix = 'set {"storage-driver": "overlay2"} in /etc/docker/daemon.json, then restart dockerd'
    elif facts.rootless:
        fix = (
            "mkdir -p ~/.config/containers && printf '[storage]\\ndriver = \"overlay\"\\n' > "
            "~/.config/containers/storage.conf && podman system reset (DELETES this user's images and "
            "containers: load them again afterwards; see docs/podman.md)"
        )
    else:
        fix = 'set driver = "overlay" under [storage] in /etc/containers/storage.conf, then sudo podman system reset'
    return Finding(name, "storage", "warn", message, fix)


def _cgroup(name: str, facts: EngineFacts) -> Finding:
    version = f"cgroup v{facts.cgroup_version}" if facts.cgroup_version else "cgroup version not reported"
    return Finding(name, "cgroup", "ok", version)


def _gpu_support(name: str, facts: EngineFacts | None) -> tuple[bool, str, str]:
    """Whether GPUs can be given to containers, what was found, and the fix."""
    if name == "docker":
        ok = any("nvidia" in r for r in (facts.runtimes if facts else ())) or bool(
            shutil.which("nvidia-container-runtime-hook") or shutil.which("nvidia-container-runtime")
        )
        return (
            ok,
            "NVIDIA runtime" if ok else "no NVIDIA container runtime",
            "install the NVIDIA Container Toolkit, then sudo nvidia-ctk runtime configure --runtime=docker and restart dockerd",
        )
    specs = [
        p
        for folder in CDI_FOLDERS
        for p in sorted(glob.glob(f"{folder}/*.yaml") + glob.glob(f"{folder}/*.json"))
    ]
    ok = any("nvidia.com/gpu" in _read(p) for p in specs)
    return (
        ok,
        "CDI nvidia.com/gpu" if ok else f"no CDI spec for nvidia.com/gpu in {' or '.join(CDI_FOLDERS)}",
        "install the NVIDIA Container Toolkit, then sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml",
    )


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _limits(backend: Backend, facts: EngineFacts | None, values: Mapping[str, Any]) -> Finding:
    name = backend.name
    spec = settings.container_spec(values, {})
    try:
        unsupported = backend.unsupported(spec)
    except OCIExecutorError as exc:
        return Finding(name, "limits", "fail", f"cannot tell which options {name} honours: {exc}")
    if facts is None:  # no engine: the backend's own list is the whole story
        if unsupported:
            return Finding(
                name,
                "limits",
                "fail",
                f"{name} cannot honour the configured option(s) {', '.join(unsupported)}",
                backend.explain_unsupported(unsupported),
            )
        return Finding(name, "limits", "ok", "no option that this backend cannot honour is configured")
    gpus, gpu_found, gpu_fix = _gpu_support(name, facts)
    can = {"cpus": facts.cpu_limits, "memory": facts.memory_limits, "gpus": gpus}
    shown = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in can.items())
    why = f"cgroup v{facts.cgroup_version}" + (", rootless" if facts.rootless else "")
    message = f"enforceable here ({why}; {gpu_found}): {shown}"
    requested = [k for k in can if getattr(spec, k)]
    refused = sorted({*unsupported, *(k for k in requested if not can[k])})
    if not facts.rootless:
        cgroup_fix = "enable the kernel's cpu and memory cgroup controllers (boot with cgroup_enable=memory swapaccount=1)"
    elif facts.cgroup_version != "2":
        cgroup_fix = "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1) for rootless limits, or use rootful Podman or Docker"
    else:
        cgroup_fix = "delegate the cpu and memory controllers to users (systemd: Delegate=cpu memory in user@.service), or use rootful Podman or Docker"
    if refused:
        fixes = [backend.explain_unsupported(unsupported)] if unsupported else []
        if any(k in ("cpus", "memory") and k not in unsupported for k in refused):
            fixes.append(cgroup_fix)
        if "gpus" in refused and "gpus" not in unsupported:
            fixes.append(gpu_fix)
        return Finding(
            name,
            "limits",
            "fail",
            f"configured {', '.join(refused)} cannot be enforced; {message}",
            "; ".join(fixes),
        )
    if not (facts.cpu_limits and facts.memory_limits):
        return Finding(
            name, "limits", "warn", message, f"{cgroup_fix} (only if you need cpus or memory limits)"
        )
    return Finding(name, "limits", "ok", message)


# -- the image and its Python ---------------------------------------------------------------


def _image(backend: Backend, image: str, policy: str) -> Finding:
    name = backend.name
    assert isinstance(backend, EngineBackend)
    try:
        found = backend.ensure_image(image)  # the doctor's backends never pull
    except ImageNotFoundError:
        fix = f"{name} pull {image} (or {name} load -i FILE, or {name} build -t {image} ...)"
        if policy == "never":
            return Finding(
                name,
                "image",
                "fail",
                f"image {image} is not in the {backend.store()} and pull_policy='never'",
                fix,
            )
        return Finding(
            name,
            "image",
            "warn",
            f"image {image} is not in the {backend.store()}: the first task pulls it (pull_policy={policy!r})",
            fix,
        )
    except OCIExecutorError as exc:
        return Finding(name, "image", "fail", f"cannot look up image {image}: {exc}")
    return Finding(
        name,
        "image",
        "ok",
        f"image {image} is in the {backend.store()} ({str(found.id).removeprefix('sha256:')[:12]})",
    )


def _python(backend: Backend, image: str, values: Mapping[str, Any]) -> Finding:
    """Start a runner from the image exactly as a task would, then remove it."""
    name = backend.name
    host_version = host_python_version()
    spec = ContainerSpec(
        image=image,
        labels=our_labels(DOCTOR_DISPATCH, "python"),
        python=values["python"],
        idle_timeout=60.0,
        max_lifetime=300.0,
        network=(values["network"] or None) if "network" in backend.supported_options else None,
    )
    image_fix = (
        f'use an image with Python {host_version}: image = "python:{host_version}-slim" in [executors.oci]'
    )
    try:
        runner = start_runner(backend, spec)
    except PythonVersionMismatchError as exc:
        return Finding(
            name,
            "python",
            "fail",
            f"image {image} has Python {exc.image_version}, this host {exc.host_version}: tasks need the same major.minor",
            image_fix,
        )
    except ImageHasNoPythonError:
        return Finding(
            name,
            "python",
            "fail",
            f"image {image} has no Python at {values['python']!r}",
            f'{image_fix}, or set python = "/path/to/python{host_version}" to the image\'s interpreter',
        )
    except RunnerError as exc:
        return Finding(name, "python", "fail", str(exc).splitlines()[0], image_fix)
    except OCIExecutorError as exc:
        return Finding(
            name,
            "python",
            "fail",
            f"cannot start a container from {image}: {' '.join(str(exc).split())[:400]}",
        )
    try:
        result = backend.exec(runner.container, [runner.container.python, "-c", PYTHON_VERSION])
        version = result.stdout.decode(errors="replace").strip() or host_version
    except OCIExecutorError:
        version = host_version
    finally:
        discard(runner)
    where = "the host's own interpreter" if not backend.isolated else f"image {image}"
    return Finding(
        name, "python", "ok", f"Python {version} in {where} runs the runner (host: {host_version})"
    )
