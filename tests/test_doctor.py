"""``oci-executor doctor`` against the real engines, and against broken setups made here.

The healthy engines are the shared test engines (read only). Each broken setup is made by the
test and undone afterwards: a scratch user (vfs storage, no service running, no subordinate
IDs) who runs the diagnosis with Debian's Python and a copy of this checkout, a socket of mode
0660 root:root in front of Docker, a stale socket, images without Python or with another Python,
and a covalent.conf with invalid values.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from oci_executor import settings
from oci_executor.doctor import Finding, diagnose, exit_code, read_covalent_config
from oci_executor.errors import ConfigurationError
from oci_executor.task import host_python_version
from tests import engines
from tests.conftest import Target
from tests.rootless_user import REPO_ROOT, USER_PYTHON

HOST = host_python_version()


def _by_check(findings: list[Finding], backend: str) -> dict[str, Finding]:
    return {f.check: f for f in findings if f.backend == backend}


def _cgroup_version() -> str:
    return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


def _engine_version(target: Target) -> str:
    client = engines._client(target.backend, target.address)
    try:
        return str(client.version()["Version"])
    finally:
        client.close()


# -- healthy engines ---------------------------------------------------------------------------


def test_a_healthy_engine_passes_every_check(engine_target: Target) -> None:
    findings = diagnose(engine_target.backend, engine_target.image, engine_target.address, config={})
    found = _by_check(findings, engine_target.backend)
    rootless = engine_target.id == "podman-rootless"
    engine = found["engine"]
    assert engine.status == "ok", engine
    assert _engine_version(engine_target) in engine.message
    assert engine_target.address in engine.message
    assert ("(rootless)" if rootless else "(rootful)") in engine.message
    assert found["socket"].status == "ok" and "accepts connections" in found["socket"].message
    assert found["storage"].status == "ok" and "overlay" in found["storage"].message
    assert found["cgroup"].message == f"cgroup v{_cgroup_version()}"
    assert found["image"].status == "ok" and engine_target.image in found["image"].message
    python = found["python"]
    assert python.status == "ok" and f"Python {HOST}." in python.message, python
    if rootless:
        for check in ("subuid", "runtime-dir", "network"):
            assert found[check].status == "ok", found[check]
        assert "65536 UIDs" in found["subuid"].message
        if _cgroup_version() == "1":  # rootless Podman cannot limit cpus/memory on cgroup v1
            assert found["limits"].status == "warn"
            assert "cpus: no, memory: no" in found["limits"].message
            assert "cgroup v2" in found["limits"].fix
    else:
        assert found["limits"].status == "ok" and "cpus: yes, memory: yes" in found["limits"].message
        assert "subuid" not in found
    assert all(f.status in ("ok", "warn") for f in findings), [f.line() for f in findings]
    assert exit_code(findings, engine_target.backend) == 0


def test_rootless_limits_on_cgroup_v1_fail_when_configured() -> None:
    if _cgroup_version() != "1":
        pytest.skip("this host has cgroup v2: rootless limits may work")
    address = engines.require_engine("podman-rootless")
    findings = diagnose("podman", engines.test_image(), address, config={"cpus": 1, "memory": "256m"})
    limits = _by_check(findings, "podman")["limits"]
    assert limits.status == "fail", limits
    assert "cpus, memory cannot be enforced" in limits.message
    assert "systemd.unified_cgroup_hierarchy=1" in limits.fix
    assert exit_code(findings, "podman") == 1


def test_limits_the_local_backend_cannot_honour_fail() -> None:
    findings = diagnose("local", config={"memory": "1g", "cpus": 2})
    limits = _by_check(findings, "local")["limits"]
    assert limits.status == "fail"
    assert limits.message == "local cannot honour the configured option(s) cpus, memory"
    assert "use a container engine backend (docker or podman)" in limits.fix
    assert exit_code(findings, "local") == 1


@pytest.mark.parametrize("backend", ["docker", "podman"])
def test_gpus_without_the_nvidia_toolkit_fail_with_the_nvidia_ctk_command(backend: str) -> None:
    address = engines.require_engine(backend)
    findings = diagnose(backend, engines.test_image(), address, config={"gpus": "all"})
    limits = _by_check(findings, backend)["limits"]
    if "gpus: yes" in limits.message:
        pytest.skip("this host has the NVIDIA container toolkit")
    assert limits.status == "fail" and limits.message.startswith("configured gpus cannot be enforced")
    assert "nvidia-ctk" in limits.fix
    assert exit_code(findings, backend) == 1


@pytest.mark.parametrize("kind", ["nopython", "3.9"])
def test_an_image_without_the_hosts_python_fails(engine_target: Target, kind: str) -> None:
    image = engines.test_image(kind)
    findings = diagnose(engine_target.backend, image, engine_target.address, config={})
    found = _by_check(findings, engine_target.backend)
    assert found["image"].status == "ok", found["image"]
    python = found["python"]
    assert python.status == "fail", python
    if kind == "nopython":
        assert python.message == f"image {image} has no Python at 'python3'"
        assert 'python = "/path/to/python' in python.fix
    else:
        assert python.message.startswith(f"image {image} has Python 3.9, this host {HOST}")
    assert f'image = "python:{HOST}-slim"' in python.fix
    assert exit_code(findings, engine_target.backend) == 1
    # The test container went with the check (the fixture asserts none of ours is left).


def test_auto_picks_like_the_registry() -> None:
    for target_id in ("podman", "docker"):
        engines.require_engine(target_id)
    findings = diagnose(image=engines.test_image(), config={})
    assert {f.backend for f in findings} >= {"config", "docker", "podman", "local"}
    assert exit_code(findings, "auto") == 0


def test_exit_code_follows_the_backend_auto_would_pick() -> None:
    def engine(backend: str, status: str) -> Finding:
        return Finding(backend, "engine", status, "")  # type: ignore[arg-type]

    broken_image = Finding("podman", "python", "fail", "no Python")
    healthy = [engine("podman", "ok"), engine("docker", "ok"), engine("local", "ok")]
    assert exit_code(healthy, "auto") == 0
    # auto picks podman (highest priority) when it answers, even if its image is broken
    assert exit_code([*healthy, broken_image], "auto") == 1
    assert exit_code([*healthy, broken_image], "docker") == 0
    # an engine that is installed but down: auto refuses to fall back to the host
    assert exit_code([engine("podman", "fail"), engine("docker", "skip"), engine("local", "ok")], "auto") == 1
    assert exit_code([engine("podman", "fail"), engine("docker", "ok"), engine("local", "ok")], "auto") == 0
    # no engine installed at all: the local fallback
    assert exit_code([engine("podman", "skip"), engine("docker", "skip"), engine("local", "ok")], "auto") == 0
    assert exit_code([engine("docker", "skip")], "docker") == 1
    assert exit_code([Finding("config", "config", "fail", "bad"), *healthy], "auto") == 1


# -- a socket that does not answer -------------------------------------------------------------


@contextlib.contextmanager
def _stale_socket(owner: int | None = None) -> Iterator[str]:
    """A socket file nobody listens on (as an engine that died leaves it), owned by ``owner``
    (default: whoever runs the tests)."""
    folder = tempfile.mkdtemp(prefix="oci-doctor-stale-")
    try:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "podman", "podman.sock")
        os.makedirs(os.path.dirname(path))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.close()
        for item in (folder, os.path.dirname(path), path) if owner is not None else ():
            os.chown(item, owner, owner)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("backend", ["docker", "podman"])
def test_an_engine_that_stopped_fails_with_the_command_that_starts_it(backend: str) -> None:
    with _stale_socket() as path:
        findings = diagnose(backend, engines.test_image(), f"unix://{path}", config={})
    found = _by_check(findings, backend)
    assert found["socket"].status == "fail"
    assert f"{path} exists but nothing accepts connections" in found["socket"].message
    engine = found["engine"]
    assert engine.status == "fail" and "does not answer" in engine.message
    assert (
        "dockerd" if backend == "docker" else f"podman system service --time=0 unix://{path}"
    ) in engine.fix
    assert found["image"].status == "skip" and found["python"].status == "skip"
    assert exit_code(findings, backend) == 1


def test_no_engine_installed_falls_back_to_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no docker, dockerd or podman binary
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    findings = diagnose(address="unix:///nonexistent/engine.sock", config={})
    for backend in ("docker", "podman"):  # nothing else is said of an engine that is not here
        assert [(f.check, f.status) for f in findings if f.backend == backend] == [("engine", "skip")]
        assert "is not installed here" in _by_check(findings, backend)["engine"].message
    assert _by_check(findings, "local")["python"].status == "ok"
    assert exit_code(findings, "auto") == 0  # auto runs tasks on the host
    assert exit_code(findings, "docker") == 1


# -- covalent.conf -----------------------------------------------------------------------------


@pytest.fixture
def config_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="oci-doctor-conf-"))
    monkeypatch.setenv("COVALENT_CONFIG_DIR", str(folder))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_invalid_covalent_conf_values_fail_with_the_executors_own_errors(config_dir: Path) -> None:
    from oci_executor import OCIExecutor

    (config_dir / "covalent.conf").write_text(
        '[executors.oci]\nbackend = "dockr"\nmemory = "lots"\npull_policy = "sometimes"\ncolour = "blue"\n'
    )
    config = read_covalent_config()
    assert config == {"backend": "dockr", "memory": "lots", "pull_policy": "sometimes", "colour": "blue"}
    findings = diagnose("local")
    failed = [f for f in findings if f.backend == "config" and f.status == "fail"]
    assert len(failed) == 3, [f.line() for f in findings]
    for name, finding in zip(("backend", "memory", "pull_policy"), failed, strict=True):
        with pytest.raises(ConfigurationError) as raised:
            OCIExecutor(**{name: config[name]})
        assert finding.message == str(raised.value)
        assert str(config_dir / "covalent.conf") in finding.fix
    assert "unknown backend 'dockr'" in failed[0].message and 'backend = "auto"' in failed[0].fix
    assert 'memory = ""' in failed[1].fix
    # A name that is not an option: the executor ignores it (an older version's, say).
    (unknown,) = [f for f in findings if f.backend == "config" and f.status == "warn"]
    assert unknown.message.startswith('colour = "blue" in [executors.oci] is not an option')
    assert unknown.fix == f"remove `colour` from [executors.oci] in {config_dir / 'covalent.conf'}"
    assert exit_code(findings, "local") == 1


def test_a_valid_covalent_conf_passes(config_dir: Path) -> None:
    values = {**settings.defaults(), "backend": "local"}
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items() if not isinstance(v, dict | list))
    stale = 'retired_option = "debug"\n'  # an option another version wrote: ignored, so only a warning
    (config_dir / "covalent.conf").write_text("[executors]\n[executors.oci]\n" + lines + stale)
    findings = diagnose("local")
    statuses = [(f.status, f.message.split(" ")[0]) for f in findings if f.backend == "config"]
    assert statuses == [("warn", "retired_option"), ("ok", str(config_dir / "covalent.conf:"))]
    assert f"{len(lines.splitlines())} value(s) in [executors.oci], all valid" in findings[1].message
    assert exit_code(findings, "local") == 0


def test_a_covalent_conf_that_is_not_toml_fails(config_dir: Path) -> None:
    (config_dir / "covalent.conf").write_text("[executors.oci\nimage = \n")
    findings = diagnose("local")
    config = _by_check(findings, "config")["config"]
    assert config.status == "fail" and "is not valid TOML" in config.message
    assert exit_code(findings, "local") == 1


def test_no_covalent_conf_means_defaults(config_dir: Path) -> None:
    assert read_covalent_config() == {}
    config = _by_check(diagnose("local"), "config")["config"]
    assert config.status == "ok" and "the defaults apply" in config.message


# -- broken setups of a scratch user -----------------------------------------------------------


@dataclass(frozen=True)
class ScratchUser:
    """A fresh account that runs ``python -m oci_executor.doctor --json`` with Debian's Python."""

    name: str
    uid: int
    home: str
    bundle: str

    def doctor(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[Finding]]:
        variables = {
            "HOME": self.home,
            "USER": self.name,
            "LOGNAME": self.name,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": self.bundle,
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
            **(env or {}),
        }
        argv = [f"{k}={v}" for k, v in variables.items()]
        result = subprocess.run(
            ["runuser", "-u", self.name, "--", "env", "-i", *argv, USER_PYTHON, "-m", "oci_executor.doctor"]
            + ["--json", *args],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.stdout.startswith("["), f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result.returncode, [Finding(**item) for item in json.loads(result.stdout)]

    def service_processes(self) -> list[str]:
        """The user's live ``podman system service`` processes, once they had 10 s to exit."""
        deadline = time.monotonic() + 10
        while True:
            out = subprocess.run(
                ["ps", "-ww", "-u", str(self.uid), "-o", "args="], capture_output=True, text=True
            )
            services = [line for line in out.stdout.splitlines() if "system service" in line]
            if not services or time.monotonic() > deadline:
                return services
            time.sleep(0.2)


_PROBE = """
import json, sys
import oci_executor.doctor, oci_executor.backends.docker, oci_executor.backends.podman
found = {}
for name in list(sys.modules):
    top = name.split(".")[0]
    module = sys.modules.get(top)
    where = getattr(module, "__file__", None) or ""
    if top.startswith("_") or top == "oci_executor" or "-packages" not in where:
        continue
    found[top] = list(module.__path__)[0] if hasattr(module, "__path__") else where
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def bundle() -> Iterator[str]:
    """This checkout and the third-party modules the doctor imports, readable by anyone."""
    if os.geteuid() != 0 or not shutil.which("runuser") or not os.access(USER_PYTHON, os.X_OK):
        if engines.in_ci():
            pytest.fail("CI runs as root with runuser and Debian's Python", pytrace=False)
        pytest.skip("the scratch-user tests need root, runuser and " + USER_PYTHON)
    if not shutil.which("podman"):
        if engines.in_ci():
            pytest.fail("CI requires Podman for the scratch-user tests", pytrace=False)
        pytest.skip(f"Podman is not installed; {engines.SETUP_HINT}")
    folder = tempfile.mkdtemp(prefix="oci-doctor-bundle-")
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for top, path in {
            **json.loads(probe.stdout),
            "oci_executor": str(REPO_ROOT / "oci_executor"),
        }.items():
            if os.path.isdir(path):
                shutil.copytree(path, os.path.join(folder, top), ignore=ignore)
            else:
                shutil.copy(path, folder)
        subprocess.run(["chmod", "-R", "a+rX", folder], check=True)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _scratch_user(bundle: str, *useradd: str) -> Iterator[ScratchUser]:
    """A new user (``useradd -m`` gives subordinate IDs), with vfs storage; removed afterwards
    with every process, file and folder of theirs."""
    name = f"ocid{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", *useradd, name], check=True)
    entry = pwd.getpwnam(name)
    user = ScratchUser(name, entry.pw_uid, entry.pw_dir, bundle)
    try:
        conf = Path(user.home, ".config", "containers")
        conf.mkdir(parents=True)
        (conf / "storage.conf").write_text('[storage]\ndriver = "vfs"\n')
        subprocess.run(["chown", "-R", f"{name}:{name}", str(Path(user.home, ".config"))], check=True)
        yield user
    finally:
        _end_processes(user.uid)
        subprocess.run(["userdel", "-r", "-f", name], check=False, capture_output=True)
        for leftover in (f"/tmp/podman-run-{user.uid}", f"/tmp/containers-user-{user.uid}"):
            shutil.rmtree(leftover, ignore_errors=True)


def _end_processes(uid: int) -> None:
    """Kill what the scratch user left running (Podman's pause process), by PID."""
    out = subprocess.run(["ps", "-u", str(uid), "-o", "pid="], capture_output=True, text=True).stdout
    for pid in out.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), 9)


@pytest.fixture(scope="module")
def scratch(bundle: str) -> Iterator[ScratchUser]:
    with _scratch_user(bundle) as user:
        yield user


def test_vfs_storage_warns_with_the_slowdown_and_the_fix(scratch: ScratchUser) -> None:
    # No service runs for this user: the backend starts a transient one, as for a task.
    code, findings = scratch.doctor("--backend", "podman")
    found = _by_check(findings, "podman")
    assert found["engine"].status == "ok" and "transient `podman system service`" in found["engine"].message
    assert "(rootless)" in found["engine"].message
    assert found["socket"].status == "skip"
    storage = found["storage"]
    assert storage.status == "warn" and "vfs" in storage.message
    assert "7 s against 0.16 s with overlay" in storage.message and "40 times slower" in storage.message
    assert """printf '[storage]\\ndriver = "overlay"\\n' > ~/.config/containers/storage.conf""" in storage.fix
    assert "storage.conf" in storage.fix and "podman system reset" in storage.fix
    assert found["subuid"].status == "ok", found["subuid"]
    # su-like environment: no XDG_RUNTIME_DIR; it works, but says how to use /run/user/UID
    runtime = found["runtime-dir"]
    # unset works (Podman uses /tmp/podman-run-UID): no advice to export a folder nobody made
    assert runtime.status == "ok" and "XDG_RUNTIME_DIR is not set" in runtime.message, runtime
    assert not runtime.fix
    # the user's store is empty; the first task would pull the image
    assert found["image"].status == "warn" and "podman pull" in found["image"].fix
    assert found["python"].status == "skip"
    assert code == 0
    assert scratch.service_processes() == []  # the transient service went with the doctor


def test_a_stopped_rootless_service_fails_as_the_user_sees_it(scratch: ScratchUser) -> None:
    # The user's covalent.conf points at their service, which died and left its socket behind.
    with _stale_socket(owner=scratch.uid) as path:
        runtime_dir = os.path.dirname(os.path.dirname(path))
        os.chmod(runtime_dir, 0o700)
        conf = Path(runtime_dir, "covalent.conf")
        conf.write_text(f'[executors.oci]\nbackend = "podman"\naddress = "unix://{path}"\n')
        os.chown(conf, scratch.uid, scratch.uid)
        code, findings = scratch.doctor(
            env={"XDG_RUNTIME_DIR": runtime_dir, "COVALENT_CONFIG_DIR": runtime_dir}
        )
        # Without that address (backend auto), the backend starts a transient service instead.
        auto_code, auto_findings = scratch.doctor(
            env={"XDG_RUNTIME_DIR": runtime_dir, "COVALENT_CONFIG_DIR": f"{runtime_dir}/none"}
        )
    found = _by_check(findings, "podman")
    assert found["socket"].status == "fail" and "nothing accepts connections" in found["socket"].message
    engine = found["engine"]
    assert engine.status == "fail" and f"does not answer at unix://{path}" in engine.message
    assert engine.fix.startswith(f"podman system service --time=0 unix://{path} &")
    assert found["runtime-dir"].status == "ok", found["runtime-dir"]
    assert found["subuid"].status == "ok"
    assert found["python"].status == "skip"
    assert code == 1  # the configured backend cannot run a task

    found = _by_check(auto_findings, "podman")
    assert found["socket"].status == "warn" and "starts a transient" in found["socket"].message
    assert found["socket"].fix.startswith(f"podman system service --time=0 unix://{path} &")
    assert found["engine"].status == "ok" and "transient" in found["engine"].message
    assert auto_code == 0  # auto picks Podman, which works
    assert scratch.service_processes() == []


def test_a_runtime_dir_of_another_user_or_open_to_others_is_named(scratch: ScratchUser) -> None:
    folder = tempfile.mkdtemp(prefix="oci-doctor-xdg-")
    try:
        os.chmod(folder, 0o755)
        own = os.path.join(folder, "own")
        os.mkdir(own, 0o755)
        os.chmod(own, 0o755)
        os.chown(own, scratch.uid, scratch.uid)
        dead = f"unix://{folder}/podman.sock"  # no service needed for these checks
        _, open_findings = scratch.doctor(
            "--backend", "podman", "--address", dead, env={"XDG_RUNTIME_DIR": own}
        )
        _, root_findings = scratch.doctor(
            "--backend", "podman", "--address", dead, env={"XDG_RUNTIME_DIR": folder}
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    opened = _by_check(open_findings, "podman")["runtime-dir"]
    assert opened.status == "warn" and f"{own} has mode 0755" in opened.message
    assert opened.fix == f"chmod 700 {own}"
    inherited = _by_check(root_findings, "podman")["runtime-dir"]
    assert inherited.status == "fail"
    assert (
        f"XDG_RUNTIME_DIR={folder} belongs to root (uid 0), not to you (uid {scratch.uid})"
        in inherited.message
    )
    assert inherited.fix == "unset XDG_RUNTIME_DIR"


def test_a_user_without_subordinate_ids_is_told_the_usermod_command(bundle: str) -> None:
    with _scratch_user(bundle, "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0") as user:
        code, findings = user.doctor("--backend", "podman")
        subuid = _by_check(findings, "podman")["subuid"]
        assert subuid.status == "fail", subuid
        assert f"user {user.name} has no range in /etc/subuid and /etc/subgid" in subuid.message
        assert (
            f"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user.name}" in subuid.fix
        )
        assert "podman system migrate" in subuid.fix
        assert code == 1


@contextlib.contextmanager
def _proxy(target: str, path: str) -> Iterator[None]:
    """A socket at ``path`` (mode 0660 root:root) that forwards each connection to ``target``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o660)
    server.listen(16)
    open_sockets: list[socket.socket] = []

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(target)
            open_sockets.extend((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(timeout=10)
        for sock in open_sockets:
            sock.close()
        os.unlink(path)


def test_a_socket_the_user_may_not_open_names_the_permission_and_the_fix(scratch: ScratchUser) -> None:
    docker_address = engines.require_engine("docker")
    folder = tempfile.mkdtemp(prefix="oci-doctor-perm-")
    try:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "docker.sock")
        with _proxy(docker_address.split("://", 1)[1], path):
            # root may use it: the proxy answers like Docker itself
            as_root = _by_check(
                diagnose("docker", engines.test_image(), f"unix://{path}", config={}), "docker"
            )
            assert as_root["engine"].status == "ok" and as_root["python"].status == "ok", as_root
            code, findings = scratch.doctor("--backend", "docker", "--address", f"unix://{path}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    found = _by_check(findings, "docker")
    sock = found["socket"]
    assert sock.status == "fail"
    assert sock.message == (
        f"permission denied on {path} (mode 0660 root:root): user {scratch.name} is neither its owner "
        "nor in group root"
    )
    assert f"sudo chgrp docker {path}" in sock.fix and f"sudo usermod -aG docker {scratch.name}" in sock.fix
    engine = found["engine"]
    assert engine.status == "fail" and "permission denied" in engine.message
    assert code == 1


def test_a_socket_in_a_closed_folder_names_the_folder(scratch: ScratchUser) -> None:
    with _stale_socket() as path:
        closed = os.path.dirname(path)
        os.chmod(closed, 0o700)
        code, findings = scratch.doctor("--backend", "docker", "--address", f"unix://{path}")
    sock = _by_check(findings, "docker")["socket"]
    assert sock.status == "fail"
    assert (
        sock.message
        == f"permission denied on {path}: user {scratch.name} may not enter {closed} (mode 0700 root:root)"
    )
    assert sock.fix.startswith(f"sudo chmod o+x {closed}")
    assert code == 1


def test_a_socket_of_a_group_names_the_group_to_join(scratch: ScratchUser) -> None:
    docker_address = engines.require_engine("docker")
    group = f"ocidg{uuid.uuid4().hex[:6]}"
    folder = tempfile.mkdtemp(prefix="oci-doctor-group-")
    subprocess.run(["groupadd", group], check=True)
    try:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "docker.sock")
        with _proxy(docker_address.split("://", 1)[1], path):
            shutil.chown(path, group=group)
            code, findings = scratch.doctor("--backend", "docker", "--address", f"unix://{path}")
            # The fix, done: the user joins the group (a new login picks it up).
            subprocess.run(["usermod", "-aG", group, scratch.name], check=True)
            fixed_code, fixed = scratch.doctor("--backend", "docker", "--address", f"unix://{path}")
    finally:
        subprocess.run(["groupdel", "-f", group], check=False, capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
    sock = _by_check(findings, "docker")["socket"]
    assert sock.status == "fail" and f"(mode 0660 root:{group})" in sock.message
    assert sock.fix == f"sudo usermod -aG {group} {scratch.name}, then log in again (or `newgrp {group}`)"
    assert code == 1
    found = _by_check(fixed, "docker")
    assert found["socket"].status == "ok" and found["engine"].status == "ok", found
    assert fixed_code == 0


def test_volumes_of_a_remote_engine_are_checked_on_its_host() -> None:
    """Over ssh, a volume's folder must exist on the engine's host; the doctor checks it there."""
    engines.require_engine("docker-ssh")
    config = {
        "backend": "docker",
        "address": engines.address("docker-ssh"),
        "ssh_identity": engines.identity("docker-ssh"),
        "volumes": ["/oci-doctor-no-such-folder:/data"],
        "image": engines.test_image(),
    }
    findings = diagnose("docker", config=config)
    volumes = [f for f in findings if f.check == "volumes"]
    assert any(f.status == "ok" and "not on this machine" in f.message for f in volumes), volumes
    missing = [f for f in volumes if f.status == "fail"]
    assert missing and "/oci-doctor-no-such-folder does not exist on 127.0.0.1" in missing[0].message
    assert "mkdir -p /oci-doctor-no-such-folder" in missing[0].fix
    assert exit_code(findings, "docker") == 1
