"""Which real engines the tests use, and what to do when one is missing.

On a developer's machine a missing engine skips its tests with a message saying how to
enable them; in CI (``CI`` set) it fails the run, so skipped engine tests never pass as green.
"""

from __future__ import annotations

import os
import platform
import pwd
import time

import pytest

ROOTLESS_USER = os.environ.get("OCI_TEST_ROOTLESS_USER", "ocitest")
ENGINE_TARGETS = ["docker", "podman", "podman-rootless"]
CONTRACT_TARGETS = ["local", *ENGINE_TARGETS]
LABEL = "io.oci-executor.managed=true"
PULL_PROBE = "127.0.0.1:5000/oci-executor-test/pull-probe:latest"
"""An image only the test registry holds (scripts/setup-engines.sh pushes it): pulls for real."""
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


def address(target_id: str) -> str:
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


def unusable(message: str) -> None:
    """Skip (outside CI) or fail (in CI) a test whose engine cannot be used, with the setup hint."""
    if in_ci():
        pytest.fail(f"CI requires every engine: {message}; {SETUP_HINT}", pytrace=False)
    pytest.skip(f"{message}; {SETUP_HINT}")


def has_test_image(backend: str, addr: str) -> bool:
    """Whether the engine at ``addr`` answers and holds the test image."""
    try:
        client = _client(backend, addr)
        try:
            client.images.get(test_image())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - not usable
        return False
    return True


def auto_pick() -> str:
    """The backend ``backend="auto"`` should use with the test image, worked out without our
    code: Podman at this user's default socket, then Docker, else the local backend."""
    from oci_executor.backends.podman import default_address

    candidates = [("podman", default_address()), ("docker", "unix:///var/run/docker.sock")]
    return next((name for name, addr in candidates if has_test_image(name, addr)), "local")


def require_engine(target_id: str) -> str:
    """The engine's address, once it answered and has the test image; else skip or fail."""
    addr = address(target_id)
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
        unusable(f"{target_id} engine at {addr} not usable with image {test_image()} ({problem})")
    return addr


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


def remove_image(backend: str, addr: str, image: str, wait: float = 20.0) -> None:
    """Remove ``image`` from an engine's store, waiting up to ``wait`` s for containers that
    still use it to go (a server's idle container ends after its keep_warm); missing is fine."""
    client = _client(backend, addr)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                client.images.remove(image)
                return
            except Exception as exc:  # noqa: BLE001 - "not found" is fine, "in use" is retried
                text = str(exc).lower()
                if any(words in text for words in ("not found", "no such image", "not known")):
                    return
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)
    finally:
        client.close()
