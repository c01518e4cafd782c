"""Test session setup: an isolated HOME for Covalent, engine targets, and clean-up checks.

HOME is replaced before anything imports covalent, so tests never touch the developer's
covalent.conf, database or server.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_REAL_HOME = os.environ.get("HOME", "")
"""The user's own HOME: a user without root tests their own rootless Podman, with its store."""
_HOME = tempfile.mkdtemp(prefix="oci-tests-home-")
# Open to others as a real HOME is: the environments a test server builds under it
# (~/.cache/oci-executor) are mounted into the rootless user's containers, as a user's own are.
os.chmod(_HOME, 0o755)
os.environ["HOME"] = _HOME
os.environ["COVALENT_CONFIG_DIR"] = os.path.join(_HOME, ".config", "covalent")
# The test server runs without Dask; Covalent picks its default executors at import time.
os.environ["COVALENT_DISABLE_DASK"] = "1"
for _var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "COVALENT_CACHE_DIR"):
    os.environ.pop(_var, None)

import contextlib  # noqa: E402
import glob  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
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


def _skip_reason(report: pytest.TestReport) -> str:
    """Why a test was skipped, shortened to what groups alike tests (the engine, or root)."""
    longrepr = report.longrepr
    reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr).removeprefix("Skipped: ")
    reason = reason.split("; " + engines.SETUP_HINT, 1)[0]
    engine = re.match(r"([\w-]+) engine at \S+ not usable", reason)
    if engine:
        return f"need {engine.group(1)}, which is not usable here"
    return re.sub(r"\s*\(.*", "", reason)[:120]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The skipped tests by reason, counted as pytest counts them (for scripts/test.sh to print
    last, after tox's own summary)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        line = "0 tests skipped"
    else:
        reasons = Counter(_skip_reason(r) for r in skipped)
        parts = "; ".join(f"{count}: {why}" for why, count in reasons.most_common())
        hint = "the others need root: sudo bash scripts/test.sh" if os.geteuid() != 0 else engines.SETUP_HINT
        line = f"{len(skipped)} tests skipped ({parts}); {hint}"
    if _SESSION_PODMAN:
        line += f". Ran the rootless Podman tests on your own Podman ({_SESSION_PODMAN})"
    terminalreporter.write_line(line)
    summary = os.environ.get("OCI_TEST_SUMMARY_FILE")
    if summary:
        with open(summary, "w") as f:
            f.write(line + "\n")


_SESSION_PODMAN = ""
"""A user without root: the address of their rootless Podman the session uses."""
_session_service: subprocess.Popen[bytes] | None = None


def pytest_configure(config: pytest.Config) -> None:
    """A user without root tests their own rootless Podman: start its service where Podman
    puts it when none answers, and build the test image from this Python if it is missing."""
    global _SESSION_PODMAN, _session_service
    if os.geteuid() == 0 or not shutil.which("podman") or os.environ.get("OCI_TEST_PODMAN_ROOTLESS_HOST"):
        return
    address = engines.address("podman-rootless")
    path = address.removeprefix("unix://")
    if engines._engine_problem("podman", address) is not None and not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        _session_service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", address],
            env={**os.environ, "HOME": _REAL_HOME},  # the user's own store, not the tests' HOME
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )
        deadline = time.monotonic() + 20
        while not os.path.exists(path) and time.monotonic() < deadline and _session_service.poll() is None:
            time.sleep(0.1)
    if not os.path.exists(path):
        return
    from oci_executor.backend import BackendConfig
    from oci_executor.backends.podman import PodmanBackend
    from oci_executor.errors import OCIExecutorError
    from oci_executor.hostimage import build, host_python_version

    backend = PodmanBackend(BackendConfig(address=address))
    try:
        if engines.test_image().endswith(f":{host_python_version()}"):
            with contextlib.suppress(OCIExecutorError):
                if backend._find_image(backend.client(), engines.test_image()) is None:
                    build(backend, engines.test_image())
    finally:
        backend.close()
    _SESSION_PODMAN = address


def pytest_unconfigure(config: pytest.Config) -> None:
    global _session_service
    service, _session_service = _session_service, None
    if service is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGTERM)
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)


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


@pytest.fixture(params=engines.SERVER_TARGETS)
def server_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Each backend a Covalent server's tasks can use; asserts nothing of ours is left afterwards."""
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
