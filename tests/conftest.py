"""Test session setup: an isolated HOME for Covalent, engine targets, and clean-up checks.

HOME is replaced before anything imports covalent, so tests never touch the developer's
covalent.conf, database or server.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_HOME = tempfile.mkdtemp(prefix="oci-tests-home-")
os.environ["HOME"] = _HOME
os.environ["COVALENT_CONFIG_DIR"] = os.path.join(_HOME, ".config", "covalent")
# The test server runs without Dask; Covalent picks its default executors at import time.
os.environ["COVALENT_DISABLE_DASK"] = "1"
for _var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "COVALENT_CACHE_DIR"):
    os.environ.pop(_var, None)

import glob  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import cloudpickle  # noqa: E402
import pytest  # noqa: E402

from tests import engines  # noqa: E402

# Functions defined in test modules must travel by value: the container cannot import them.
for _name in ("tests", "tests.engines", "tests.tasks"):
    __import__(_name)
    cloudpickle.register_pickle_by_value(sys.modules[_name])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line on skipped engine tests (for scripts/test.sh to print last, after tox's own)."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if engines.SETUP_HINT in str(r.longrepr)]
    if skipped:
        line = (
            f"{len(skipped)} engine tests skipped: no usable engine for them here. "
            f"Run them with: sudo bash scripts/setup-engines.sh && bash scripts/test.sh"
        )
    else:
        line = "0 engine tests skipped"
    terminalreporter.write_line(line)
    summary = os.environ.get("OCI_TEST_SUMMARY_FILE")
    if summary:
        with open(summary, "w") as f:
            f.write(line + "\n")


@dataclass(frozen=True)
class Target:
    """A backend the contract suite runs on, with the address and image to use."""

    id: str
    backend: str
    address: str
    image: str
    identity: str = ""
    """The ssh key of a remote target."""
    local_address: str = ""
    """Where a remote target's engine answers on this machine (to list containers independently)."""

    @property
    def is_engine(self) -> bool:
        return self.backend != "local"

    def executor(self, **options: object):  # type: ignore[no-untyped-def]
        from oci_executor import OCIExecutor

        options = {
            "image": self.image,
            "backend": self.backend,
            "address": self.address,
            "keep_warm": KEEP_WARM,
            **({"ssh_identity": self.identity} if self.identity else {}),
            **options,
        }
        return OCIExecutor(**options)

    def our_containers(self) -> list[str]:
        """IDs of containers carrying our label (engines) or our temp folders (local)."""
        if not self.is_engine:
            return sorted(glob.glob(os.path.join(tempfile.gettempdir(), "oci-executor-local-*")))
        return engines.labelled_containers(self.backend, self.local_address or self.address)


def _target(target_id: str) -> Target:
    if target_id == "local":
        return Target("local", "local", "", engines.test_image())
    address = engines.require_engine(target_id)
    if target_id == engines.CLI_TEMPLATE:  # its containers are rootful Podman's: listed there
        return Target(target_id, target_id, address, engines.test_image(), "", engines.address("podman"))
    backend = "podman" if target_id.startswith("podman") else target_id.removesuffix("-ssh")
    local = engines.address(engines.LOCAL_OF[target_id]) if target_id in engines.LOCAL_OF else ""
    return Target(target_id, backend, address, engines.test_image(), engines.identity(target_id), local)


KEEP_WARM = 2.0
"""Tests keep idle containers warm briefly, so that a server's pool empties soon after a test."""


def _leaving_nothing(target_id: str) -> Iterator[Target]:
    """Yield the target; afterwards assert that nothing of ours was left on it.

    This process's pool is drained at once; a Covalent server's pool removes its idle
    containers after ``keep_warm`` (the default 10 s for ``executor="oci"``), so wait that long.
    """
    from oci_executor.pool import POOL

    tgt = _target(target_id)
    before = set(tgt.our_containers())
    yield tgt
    POOL.drain()
    deadline = time.monotonic() + 10 + 5
    while (left := set(tgt.our_containers()) - before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"left behind on {tgt.id}: {sorted(left)}"


@pytest.fixture(params=engines.CONTRACT_TARGETS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Each backend the contract suite covers; asserts nothing of ours is left afterwards."""
    yield from _leaving_nothing(request.param)


@pytest.fixture(params=engines.ENGINE_TARGETS)
def engine_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Each real engine; asserts no container of ours is left afterwards."""
    yield from _leaving_nothing(request.param)


@pytest.fixture(params=engines.REMOTE_TARGETS)
def remote_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Each engine reached over ssh (the test sshd); asserts no container of ours is left afterwards."""
    yield from _leaving_nothing(request.param)


@pytest.fixture(params=["docker", "podman"])
def rootful_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The engines that can enforce resource limits on this host (not rootless on cgroup v1)."""
    yield from _leaving_nothing(request.param)


@pytest.fixture
def podman_target() -> Iterator[Target]:
    """Rootful Podman alone (for tests that stop and restart its service)."""
    yield from _leaving_nothing("podman")
