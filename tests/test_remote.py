"""Remote engines over ssh, through the real test sshd (scripts/setup-sshd.sh) on 127.0.0.1.

Docker is reached as root (``ssh://root@127.0.0.1:PORT``), rootless Podman as the test user
(``ssh://ocitest@127.0.0.1:PORT/run/user/UID/podman/podman.sock``) while these tests run as
root: the test drives another user's engine, as a user driving a remote server would.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from oci_executor import OCIExecutor, settings
from oci_executor.backend import BackendConfig, Volume
from oci_executor.backends.docker import DockerBackend
from oci_executor.backends.podman import PodmanBackend
from oci_executor.backends.shared.engine.volumes import check_volumes
from oci_executor.errors import (
    ImageNotFoundError,
    PythonVersionMismatchError,
    SshConnectionError,
    TaskTimeoutError,
)
from oci_executor.registry import shared_backend
from tests import engines, tasks
from tests.conftest import Target

META = {"dispatch_id": "remote", "node_id": 0}
PORT = engines.SSH_PORT


def _backend(target: Target, **options: Any) -> Any:
    executor = target.executor(**options)
    return shared_backend(target.backend, settings.backend_config(executor.values()))


def _tunnel_processes() -> list[str]:
    """Command lines of this process's ssh tunnel wrappers."""
    found = []
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            if ppid != os.getpid():
                continue
            with open(path.replace("stat", "cmdline"), "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if "oci-ssh-tunnel" in cmdline:
            found.append(cmdline)
    return found


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


# -- one transport ----------------------------------------------------------------------------


def test_one_ssh_transport_serves_every_task_and_the_pool(remote_target: Target) -> None:
    executor = remote_target.executor(reuse="never")
    warm = remote_target.executor(reuse="process", keep_warm=5)
    results: list[int] = []
    earlier = _backend(remote_target).tunnel  # an earlier test of this session may have made one
    starts_before = earlier.starts if earlier is not None else 0
    allowed = 0 if earlier is not None and earlier.alive() else 1  # a live one is reused as it is

    def run(x: int) -> None:
        results.append(executor.run_sync(tasks.add, [x, 1], {}, META).load_value())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(3):
        assert warm.run_sync(tasks.add, [i, i], {}, META).load_value() == 2 * i
    assert sorted(results) == [1, 2, 3, 4]
    tunnel = _backend(remote_target).tunnel
    assert tunnel is not None and tunnel.alive()
    if tunnel is earlier:
        assert tunnel.starts - starts_before <= allowed, "more than one ssh transport for these tasks"
    else:
        assert tunnel.starts == 1
    mine = [c for c in _tunnel_processes() if f"{engines.ssh_user(remote_target.id)}@127.0.0.1" in c]
    assert len(mine) == 1, mine


def test_the_tunnel_dies_with_the_process_and_leaves_no_file(remote_target: Target) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from oci_executor import OCIExecutor, settings
        from oci_executor.registry import shared_backend
        ex = OCIExecutor(image={remote_target.image!r}, backend={remote_target.backend!r},
                         address={remote_target.address!r}, ssh_identity={remote_target.identity!r})
        backend = shared_backend(ex.backend, settings.backend_config(ex.values()))
        backend.check()
        print(backend.tunnel.pid, backend.tunnel.folder, flush=True)
        time.sleep(300)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    wrapper, folder = child.stdout.readline().split()
    ssh = _children(int(wrapper))
    assert ssh and os.path.exists(os.path.join(folder, "engine.sock"))
    child.send_signal(signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 30
    while (os.path.exists(folder) or any(os.path.exists(f"/proc/{p}") for p in [int(wrapper), *ssh])) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert not os.path.exists(folder), "the tunnel's socket folder outlived its process"
    assert not any(os.path.exists(f"/proc/{p}") for p in [int(wrapper), *ssh]), "ssh outlived its process"


def test_close_leaves_no_socket_behind(remote_target: Target) -> None:
    # The key named by another path: a tunnel of its own, not the one the other tests share.
    key = os.path.join(os.path.dirname(remote_target.identity), ".", os.path.basename(remote_target.identity))
    backend = (DockerBackend if remote_target.backend == "docker" else PodmanBackend)(
        BackendConfig(address=remote_target.address, ssh_identity=key)
    )
    backend.check()
    assert backend.tunnel is not None
    folder = backend.tunnel.folder
    assert os.path.exists(os.path.join(folder, "engine.sock"))
    backend.close()
    assert not os.path.exists(folder)


# -- everything works remotely ----------------------------------------------------------------


def test_pull_policy_never_names_the_remote_store(remote_target: Target) -> None:
    executor = remote_target.executor(image="oci-executor-test/absent:never", pull_policy="never")
    with pytest.raises(ImageNotFoundError, match="127.0.0.1") as info:
        executor.run_sync(tasks.add, [1, 2], {}, META)
    assert info.value.address == remote_target.address


def test_python_check_over_ssh(remote_target: Target) -> None:
    executor = remote_target.executor(image=engines.test_image("3.9"))
    with pytest.raises(PythonVersionMismatchError, match="3.9"):
        executor.run_sync(tasks.add, [1, 2], {}, META)


def test_time_limit_over_ssh(remote_target: Target) -> None:
    with pytest.raises(TaskTimeoutError, match="time_limit of 2 s"):
        remote_target.executor(time_limit=2).run_sync(tasks.sleep_then, [60, 1], {}, META)


def test_out_of_memory_over_ssh() -> None:
    """Docker only: rootless Podman cannot set memory limits on this cgroup v1 host."""
    from oci_executor.errors import OutOfMemoryError
    from tests.conftest import _leaving_nothing

    for target in _leaving_nothing("docker-ssh"):

        def hog() -> int:
            blocks = [bytearray(16 * 1024 * 1024) for _ in range(64)]
            return len(blocks)

        with pytest.raises(OutOfMemoryError, match=r"ran out of memory.*64 MiB"):
            target.executor(memory="64m").run_sync(hog, [], {}, META)


# -- losing the link --------------------------------------------------------------------------


def test_losing_the_link_mid_task_fails_naming_the_host_and_the_container_ends(remote_target: Target) -> None:
    executor = remote_target.executor(reuse="never", idle_timeout=10)
    started = threading.Event()
    seen: dict[str, Any] = {}

    def on_container(container: Any) -> None:
        seen["id"] = container.id
        started.set()

    def run() -> None:
        try:
            executor.run_sync(tasks.sleep_then, [120, 1], {}, META, on_container=on_container)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            seen["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(60), "the task never got a container"
    time.sleep(1.0)  # the task is running
    tunnel = _backend(remote_target).tunnel
    assert tunnel is not None and tunnel.pid is not None
    for pid in _children(tunnel.pid):
        os.kill(pid, signal.SIGKILL)  # the ssh process: the link is gone
    thread.join(120)
    error = seen.get("error")
    assert isinstance(error, SshConnectionError), repr(error)
    assert error.reason == "link-lost"
    assert error.host == "127.0.0.1"
    assert "ssh link to" in str(error) and "127.0.0.1" in str(error)
    # The container ends itself: its runner sees the attach stream close (or idle_timeout pass).
    deadline = time.monotonic() + 10 + 30
    while seen["id"] in remote_target.our_containers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert seen["id"] not in remote_target.our_containers()
    # The next task connects again.
    assert remote_target.executor().run_sync(tasks.add, [2, 3], {}, META).load_value() == 5


# -- bad input: an error naming the host and the fix ------------------------------------------


def _error(backend: str, address: str, identity: str = "") -> SshConnectionError:
    cls = DockerBackend if backend == "docker" else PodmanBackend
    with pytest.raises(SshConnectionError) as info:
        cls(BackendConfig(address=address, ssh_identity=identity or None)).check()
    return info.value


def test_unknown_host() -> None:
    error = _error("docker", "ssh://root@no-such-host.invalid", engines.identity("docker-ssh"))
    assert error.reason == "unknown-host" and error.host == "no-such-host.invalid"
    assert "no-such-host.invalid" in str(error) and "~/.ssh/config" in str(error)


def test_refused_key() -> None:
    engines.require_engine("docker-ssh")
    error = _error("docker", f"ssh://root@127.0.0.1:{PORT}", engines.identity("podman-rootless-ssh"))
    assert error.reason == "key-refused"
    assert "127.0.0.1" in str(error) and "ssh-copy-id" in str(error) and "ssh_identity" in str(error)


def test_unknown_host_key() -> None:
    engines.require_engine("docker-ssh")
    error = _error("docker", f"ssh://root@localhost:{PORT}", engines.identity("docker-ssh"))
    assert error.reason == "host-key"
    assert "localhost" in str(error) and "known_hosts" in str(error)


def test_no_sshd_on_that_port() -> None:
    error = _error("docker", "ssh://root@127.0.0.1:1", engines.identity("docker-ssh"))
    assert error.reason == "refused" and "port 1" in str(error)


def test_wrong_socket_path_names_the_path_and_podman_info() -> None:
    engines.require_engine("podman-rootless-ssh")
    uid = engines.rootless_uid()
    address = f"ssh://{engines.ROOTLESS_USER}@127.0.0.1:{PORT}/run/user/{uid}/podman/nope.sock"
    error = _error("podman", address, engines.identity("podman-rootless-ssh"))
    assert error.reason == "wrong-socket"
    text = str(error)
    assert f"/run/user/{uid}/podman/nope.sock" in text and "127.0.0.1" in text
    assert "podman info --format '{{.Host.RemoteSocket.Path}}'" in text
    assert f"/run/user/{uid}/podman/podman.sock" in text  # what podman info said, as the fix


def test_a_socket_the_user_may_not_use() -> None:
    engines.require_engine("podman-rootless-ssh")
    address = f"ssh://{engines.ROOTLESS_USER}@127.0.0.1:{PORT}/var/run/docker.sock"
    error = _error("docker", address, engines.identity("podman-rootless-ssh"))
    assert error.reason == "socket-permission"
    assert engines.ROOTLESS_USER in str(error) and "group" in str(error)


class _AbsentEngine(DockerBackend):
    """Docker looked for under a command no host has: this machine runs both engines, so "a
    host without the engine" is a login where the engine's command and socket are absent."""

    cli = "oci-no-such-engine"
    engine = "NoSuchEngine"


def test_a_host_without_the_engine() -> None:
    engines.require_engine("docker-ssh")
    address = f"ssh://root@127.0.0.1:{PORT}/run/oci-no-such-engine.sock"
    with pytest.raises(SshConnectionError) as info:
        _AbsentEngine(BackendConfig(address=address, ssh_identity=engines.identity("docker-ssh"))).check()
    assert info.value.reason == "no-engine"
    assert "127.0.0.1 has no NoSuchEngine" in str(info.value) and "install" in str(info.value)


# -- Podman connection names, CONTAINER_HOST / CONTAINER_SSHKEY, DOCKER_HOST ------------------


def test_podman_connection_name_is_an_address(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target_address = engines.require_engine("podman-rootless-ssh")
    name = f"oci-test-{os.getpid()}"
    # Root's `podman system connection add` rewrites /etc/containers/containers.conf: give it a
    # copy of its own (CONTAINERS_CONF), which our lookup (`podman system connection list`) reads too.
    conf = tmp_path / "containers.conf"
    shutil.copyfile("/etc/containers/containers.conf", conf)
    monkeypatch.setenv("CONTAINERS_CONF", str(conf))
    home = os.environ["HOME"]  # the tests' own HOME: the connection goes into its containers.conf
    os.makedirs(os.path.join(home, ".ssh"), exist_ok=True)
    mine = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".ssh", "known_hosts")  # what our ssh reads
    with open(mine) as src, open(os.path.join(home, ".ssh", "known_hosts"), "w") as dst:
        dst.write(src.read())  # podman's own ssh reads $HOME/.ssh/known_hosts
    identity = engines.identity("podman-rootless-ssh")
    subprocess.run(
        ["podman", "system", "connection", "add", "--identity", identity, name, target_address],
        check=True,
        capture_output=True,
    )
    try:
        executor = OCIExecutor(image=engines.test_image(), backend="podman", address=name, keep_warm=0)
        outcome = executor.run_sync(tasks.where, [], {}, META)
        assert outcome.ok
        backend = shared_backend("podman", settings.backend_config(executor.values()))
        assert backend.tunnel is not None and backend.tunnel.target.identity == identity
        assert backend.rootless()  # it is the test user's rootless service
    finally:
        subprocess.run(["podman", "system", "connection", "remove", name], check=False, capture_output=True)


def test_unknown_connection_name_lists_the_known_ones() -> None:
    from oci_executor.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="no Podman connection has that name.*connection add"):
        PodmanBackend(BackendConfig(address="oci-no-such-connection")).check()


def test_container_host_and_sshkey(monkeypatch: pytest.MonkeyPatch) -> None:
    address = engines.require_engine("podman-rootless-ssh")
    monkeypatch.setenv("CONTAINER_HOST", address)
    monkeypatch.setenv("CONTAINER_SSHKEY", engines.identity("podman-rootless-ssh"))
    backend = PodmanBackend(BackendConfig())
    try:
        backend.check()
        assert backend.address() == address and backend.rootless()
    finally:
        backend.close()


def test_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    address = engines.require_engine("docker-ssh")
    monkeypatch.setenv("DOCKER_HOST", address)
    backend = DockerBackend(BackendConfig(ssh_identity=engines.identity("docker-ssh")))
    try:
        backend.check()
        assert backend.tunnel is not None and backend.tunnel.alive()
    finally:
        backend.close()


# -- volumes name folders on the engine's host ------------------------------------------------


def test_volume_findings_name_the_remote_host() -> None:
    engines.require_engine("docker-ssh")
    here = tempfile.mkdtemp(prefix="oci-vol-")
    try:
        config = BackendConfig(
            address=f"ssh://root@127.0.0.1:{PORT}", ssh_identity=engines.identity("docker-ssh")
        )
        findings = check_volumes(
            DockerBackend(config), [Volume(here, "/data"), Volume("/oci-no-such-folder", "/x")]
        )
        text = "\n".join(f.message for f in findings)
        assert "127.0.0.1" in text and "not on this machine" in text
        missing = [f for f in findings if "/oci-no-such-folder" in f.message]
        assert missing and missing[0].status == "fail" and "does not exist on 127.0.0.1" in missing[0].message
        assert "mkdir -p /oci-no-such-folder" in missing[0].fix
        assert not [f for f in findings if here in f.message and f.status == "fail"]
        local = BackendConfig(address="unix:///var/run/docker.sock")
        assert check_volumes(DockerBackend(local), [Volume(here, "/d")]) == []
    finally:
        os.rmdir(here)


# -- our own parsing and classification (no engine) --------------------------------------------


def test_ssh_addresses_parse() -> None:
    from oci_executor.backends.shared.ssh import parse

    target = parse("ssh://me@bigbox:2222/run/user/1000/podman/podman.sock", "~/.ssh/k")
    assert (target.user, target.host, target.port) == ("me", "bigbox", 2222)
    assert target.socket == "/run/user/1000/podman/podman.sock"
    assert target.identity == os.path.expanduser("~/.ssh/k")
    assert target.where == "me@bigbox:2222"
    bare = parse("ssh://bigbox")
    assert (bare.user, bare.port, bare.socket, bare.login) == ("", None, "", "bigbox")


@pytest.mark.parametrize(
    "address, match",
    [("ssh://me:secret@bigbox", "password"), ("ssh://me@bigbox:port", "bad port"), ("ssh://", "not an ssh")],
)
def test_bad_ssh_addresses_are_refused(address: str, match: str) -> None:
    from oci_executor.backends.shared.ssh import parse
    from oci_executor.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=match):
        parse(address)


@pytest.mark.parametrize(
    "stderr, reason",
    [
        ("ssh: Could not resolve hostname bigbx: Name or service not known", "unknown-host"),
        ("Host key verification failed.", "host-key"),
        ("me@bigbox: Permission denied (publickey).", "key-refused"),
        ('Load key "/k": bad permissions', "key-file"),
        ("ssh: connect to host bigbox port 22: Connection refused", "refused"),
        ("ssh: connect to host bigbox port 22: Connection timed out", "unreachable"),
        ("something else entirely", "ssh"),
    ],
)
def test_ssh_failures_are_classified_with_a_fix(stderr: str, reason: str) -> None:
    from oci_executor.backends.shared.ssh import login_error, parse

    error = login_error(parse("ssh://me@bigbox"), stderr)
    assert error.reason == reason and error.host == "bigbox"
    assert "me@bigbox" in str(error) and "Fix:" in str(error)


def test_podman_address_without_a_path_uses_the_socket_podman_info_reports() -> None:
    engines.require_engine("podman-rootless-ssh")
    address = f"ssh://{engines.ROOTLESS_USER}@127.0.0.1:{PORT}"
    backend = PodmanBackend(
        BackendConfig(address=address, ssh_identity=engines.identity("podman-rootless-ssh"))
    )
    try:
        backend.check()
        target = backend.remote()
        assert (
            target is not None and target.socket == f"/run/user/{engines.rootless_uid()}/podman/podman.sock"
        )
        assert backend.rootless()
    finally:
        backend.close()
