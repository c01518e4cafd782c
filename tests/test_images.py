"""``oci-executor image copy`` and ``image build``: images between real stores, no registry."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from tests import engines

pytestmark = pytest.mark.engine("docker")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oci_executor.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.fixture
def name() -> Iterator[str]:
    """A name no store holds yet; removed from every store afterwards."""
    image = f"localhost/oci-copy-test-{uuid.uuid4().hex[:8]}:1"
    yield image
    engines.remove_image("docker", engines.address("docker"), image)
    engines.remove_image("podman", engines.address("podman"), image)
    if engines.rootless_uid() is not None and os.geteuid() == 0:
        subprocess.run(engines.as_test_user("podman", "rmi", "-f", image), capture_output=True, check=False)


def test_copy_goes_from_podman_to_docker_to_a_file_to_a_users_rootless_store(name: str) -> None:
    podman, docker = engines.require_engine("podman"), engines.require_engine("docker")
    subprocess.run(
        ["podman", "--url", podman, "tag", engines.test_image(), name], check=True, capture_output=True
    )

    done = _cli("image", "copy", f"podman:{name}", "docker", "--from-address", podman, "--to-address", docker)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Copied {name} from the Podman image store"), done.stdout
    ran = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", name, "python3", "-c", "print(6 * 7)"],
        capture_output=True,
        text=True,
    )
    assert ran.stdout.strip() == "42", ran.stderr

    with tempfile.TemporaryDirectory() as folder:
        archive = os.path.join(folder, "image.tar")
        done = _cli("image", "copy", f"docker:{name}", f"file:{archive}", "--from-address", docker)
        assert done.returncode == 0, done.stderr
        assert os.path.getsize(archive) > 10_000_000
        if os.geteuid() != 0:
            return
        rootless = engines.require_engine("podman-rootless")
        # Root copies into the rootless user's store through the user's own socket.
        done = _cli("image", "copy", f"file:{archive}", f"podman:{name}", "--to-address", rootless)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"Loaded {archive} into the Podman image store at {rootless}"), (
            done.stdout
        )
    exists = subprocess.run(engines.as_test_user("podman", "image", "exists", name), check=False)
    assert exists.returncode == 0, f"{name} is not in {engines.ROOTLESS_USER}'s store"


def test_copy_names_a_missing_image_and_a_wrong_store() -> None:
    engines.require_engine("docker")
    done = _cli("image", "copy", "docker:localhost/no-such-image:1", "podman")
    assert done.returncode == 1 and "no-such-image" in done.stderr, done.stderr
    done = _cli("image", "copy", "quay:python", "podman")
    assert done.returncode == 1
    assert "'quay:python' is not a store: use docker:IMAGE, podman:IMAGE or file:PATH" in done.stderr


def test_an_image_built_from_this_hosts_python_runs_a_task(name: str) -> None:
    podman = engines.require_engine("podman")
    done = _cli("image", "build", name, "--backend", "podman", "--address", podman)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Built {name} from this host's Python"), done.stdout
    from oci_executor import OCIExecutor

    def where() -> tuple[str, bool]:
        import os
        import platform

        return platform.python_version(), os.path.exists("/run/.containerenv")

    outcome = OCIExecutor(backend="podman", address=podman, image=name, reuse="never").run_sync(
        where, [], {}, {}
    )
    assert outcome.ok, outcome.summary()
    version, in_container = outcome.load_value()
    assert in_container is True
    assert version.rsplit(".", 1)[0] == ".".join(map(str, sys.version_info[:2]))
