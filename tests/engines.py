"""Which real engines the tests use, and what to do when one is missing.

On a developer's machine a missing engine skips its tests with a message saying how to
enable them; in CI (``CI`` set) it fails the run, so skipped engine tests never pass as green.
"""

from __future__ import annotations

import os
import platform
import pwd
import subprocess

import pytest

ROOTLESS_USER = os.environ.get("OCI_TEST_ROOTLESS_USER", "ocitest")
ENGINE_TARGETS = ["docker", "podman", "podman-rootless"]
CONTRACT_TARGETS = ["local", *ENGINE_TARGETS]
REMOTE_TARGETS = ["docker-ssh", "podman-rootless-ssh"]
"""The same engines reached over ssh (scripts/setup-sshd.sh: a real sshd on 127.0.0.1)."""
LOCAL_OF = {"docker-ssh": "docker", "podman-rootless-ssh": "podman-rootless"}
"""The local target of each remote one: the same engine, through its socket on this machine."""
SSH_PORT = int(os.environ.get("OCI_TEST_SSH_PORT", "22422"))
SSH_KEYS = os.environ.get("OCI_TEST_SSH_KEYS", "/etc/oci-executor/ssh")
LABEL = "io.oci-executor.managed=true"
SETUP_HINT = "run `sudo bash scripts/setup-engines.sh` to install and start the test engines"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def test_image(kind: str = "") -> str:
    """The test image for this host's Python (``kind`` picks a special one: 3.9, nopython)."""
    if kind == "nopython":
        return os.environ.get("OCI_TEST_IMAGE_NOPYTHON", "oci-executor-test/nopython:latest")
    if kind:
        return f"oci-executor-test/python:{kind}"
    minor = ".".join(platform.python_version_tuple()[:2])
    return os.environ.get("OCI_TEST_IMAGE", f"oci-executor-test/python:{minor}")


def rootless_uid() -> int | None:
    try:
        return pwd.getpwnam(ROOTLESS_USER).pw_uid
    except KeyError:
        return None


def ssh_user(target_id: str) -> str:
    """Who a remote target logs in as: root for Docker, the rootless user for its Podman."""
    return "root" if target_id == "docker-ssh" else ROOTLESS_USER


def identity(target_id: str) -> str:
    """The private key a remote target logs in with ("" for a local target)."""
    return f"{SSH_KEYS}/id_{ssh_user(target_id)}" if target_id in LOCAL_OF else ""


def address(target_id: str) -> str:
    if target_id == "docker-ssh":
        return f"ssh://root@127.0.0.1:{SSH_PORT}"
    if target_id == "podman-rootless-ssh":
        return f"ssh://{ROOTLESS_USER}@127.0.0.1:{SSH_PORT}/run/user/{rootless_uid()}/podman/podman.sock"
    if target_id == "docker":
        return os.environ.get("OCI_TEST_DOCKER_HOST", "unix:///var/run/docker.sock")
    if target_id == "podman":
        return os.environ.get("OCI_TEST_PODMAN_HOST", "unix:///run/podman/podman.sock")
    if target_id == "podman-rootless":
        try:
            uid = pwd.getpwnam(ROOTLESS_USER).pw_uid
        except KeyError:
            return f"unix:///run/user/<no user {ROOTLESS_USER}>/podman/podman.sock"
        return os.environ.get("OCI_TEST_PODMAN_ROOTLESS_HOST", f"unix:///run/user/{uid}/podman/podman.sock")
    raise ValueError(target_id)


def _client(backend: str, addr: str):  # type: ignore[no-untyped-def]
    if backend == "docker":
        import docker

        return docker.DockerClient(base_url=addr, timeout=30)
    import podman

    return podman.PodmanClient(base_url=addr)


_status: dict[str, str | None] = {}


def require_engine(target_id: str) -> str:
    """The engine's address, once it answered and has the test image; else skip or fail."""
    addr = address(target_id)
    if target_id in LOCAL_OF:
        require_engine(LOCAL_OF[target_id])
    if target_id not in _status and target_id in LOCAL_OF:
        _status[target_id] = _ssh_problem(target_id)
    if target_id not in _status:
        backend = "podman" if target_id.startswith("podman") else target_id
        problem = None
        try:
            client = _client(backend, addr)
            client.ping()
            try:
                client.images.get(test_image())
            finally:
                client.close()
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
            problem = f"{type(exc).__name__}: {exc}"
        _status[target_id] = problem
    problem = _status[target_id]
    if problem:
        message = (
            f"{target_id} engine at {addr} not usable with image {test_image()} ({problem}); {SETUP_HINT}"
        )
        if in_ci():
            pytest.fail(f"CI requires every engine: {message}", pytrace=False)
        pytest.skip(message)
    return addr


def _ssh_problem(target_id: str) -> str | None:
    """Why the test sshd cannot log ``target_id``'s user in, or None."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=5"]
    argv += ["-i", identity(target_id), "-p", str(SSH_PORT), f"{ssh_user(target_id)}@127.0.0.1", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ssh: {exc}"
    if done.returncode != 0:
        return f"test sshd on 127.0.0.1:{SSH_PORT}: {done.stderr.strip()[-300:]} (scripts/setup-sshd.sh)"
    return None


def container_ids(client, label: str) -> list[str]:  # type: ignore[no-untyped-def]
    """IDs of all containers with ``label``, from the list call alone.

    docker-py's default list inspects each container, which fails for one being removed.
    """
    import docker

    if isinstance(client, docker.DockerClient):
        return sorted(c.id for c in client.containers.list(all=True, sparse=True, filters={"label": label}))
    return sorted(c.id for c in client.containers.list(all=True, filters={"label": label}))


def container_attrs(backend: str, addr: str, container_id: str) -> dict:  # type: ignore[type-arg]
    """The engine's inspect data of one container."""
    client = _client(backend, addr)
    try:
        return dict(client.containers.get(container_id).attrs)
    finally:
        client.close()


def labelled_containers(backend: str, addr: str) -> list[str]:
    """IDs of all containers (running or not) that carry our managed label."""
    client = _client(backend, addr)
    try:
        return container_ids(client, LABEL)
    finally:
        client.close()
