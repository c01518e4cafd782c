"""docs/podman.md as a new user follows it: a fresh account, no sudo, no docker group, no logind.

The test session creates the user, then runs the page's steps as written, as that user:
storage.conf with overlay, a venv with oci-executor installed from a wheel, their own Covalent
server, and the seed workflow with ``executor="oci"`` configured in covalent.conf, once with a
Podman service they started by hand (``XDG_RUNTIME_DIR`` unset, so its socket is in
``/tmp/podman-run-UID``) and once with none (a transient service).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pytest

from tests import engines
from tests.rootless_user import USER_PYTHON, RootlessUser, _build_wheel, image_for
from tests.test_rootless import _covalent_server

pytestmark = pytest.mark.covalent

SEED = """
import covalent as ct

ct.set_config({"executors.oci.image": PARAMS["image"], "executors.oci.backend": "auto"})


@ct.electron(executor="oci")
def add(x, y):
    return x + y


@ct.electron(executor="oci")
def multiply(x, y):
    return x * y


@ct.lattice
def workflow(x, y):
    return multiply(y, add(x, y))


dispatch_id = ct.dispatch(workflow)(2, 3)
result = ct.get_result(dispatch_id, wait=True)
node = result.get_node_result(0)
emit({"dispatch_id": dispatch_id, "status": str(result.status), "result": result.result,
      "error": str(result.error), "stderr": node["stderr"], "node_error": str(node["error"])})
"""


@dataclass(frozen=True)
class NewUser(RootlessUser):
    """A user with no login session: no ``XDG_RUNTIME_DIR`` unless a step sets one."""

    def env(self, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
        env = super().env(overrides)
        if not overrides or "XDG_RUNTIME_DIR" not in overrides:
            env.pop("XDG_RUNTIME_DIR", None)
        return env


@pytest.fixture(scope="module")
def newcomer() -> Iterator[NewUser]:
    if os.geteuid() != 0:
        if engines.in_ci():
            pytest.fail("CI runs as root: the journey test creates a user", pytrace=False)
        pytest.skip("creating a user needs root")
    name = f"ocij{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    entry = pwd.getpwnam(name)
    workdir = tempfile.mkdtemp(prefix="oci-executor-journey-")
    os.chown(workdir, entry.pw_uid, entry.pw_gid)
    user = NewUser(name, entry.pw_uid, entry.pw_gid, entry.pw_dir, workdir, f"{entry.pw_dir}/venvs/covalent")
    image = image_for(_python_minor())
    saved = os.path.join(tempfile.mkdtemp(prefix="oci-journey-image-"), "image.tar")
    try:
        # docs/podman.md, section 2: overlay storage before anything else.
        user.run(
            [
                "sh",
                "-c",
                "mkdir -p ~/.config/containers && "
                "printf '[storage]\\ndriver = \"overlay\"\\n' > ~/.config/containers/storage.conf",
            ]
        )
        # No registry here: the image comes from root's store, as a user would `podman load` one.
        subprocess.run(["podman", "save", "-o", saved, image], check=True, capture_output=True)
        os.chmod(os.path.dirname(saved), 0o755)
        os.chmod(saved, 0o644)
        user.run(["podman", "load", "-i", saved], timeout=300)
        # Section 3: a venv, and the project installed from a wheel.
        with _build_wheel() as wheel:
            user.run([USER_PYTHON, "-m", "venv", user.venv], timeout=300)
            user.run(
                [f"{user.venv}/bin/pip", "install", "--disable-pip-version-check", "-q", wheel], timeout=900
            )
        yield user
    finally:
        shutil.rmtree(os.path.dirname(saved), ignore_errors=True)
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        time.sleep(0.5)
        subprocess.run(["userdel", "-r", "-f", name], check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(f"/tmp/podman-run-{entry.pw_uid}", ignore_errors=True)


def _python_minor() -> str:
    out = subprocess.run(
        [USER_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


@contextlib.contextmanager
def _service_started_by_hand(user: NewUser) -> Iterator[str]:
    """`podman system service --time=0 &` in the user's shell, XDG_RUNTIME_DIR unset."""
    socket_path = f"/tmp/podman-run-{user.uid}/podman/podman.sock"
    proc = user.spawn(["podman", "system", "service", "--time=0"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(socket_path):
            assert proc.poll() is None and time.monotonic() < deadline, "the user's service did not start"
            time.sleep(0.1)
        yield socket_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()


def _journey(user: NewUser) -> dict[str, object]:
    image = image_for(_python_minor())
    server: dict[str, object] = {}
    with _covalent_server(user, server, home=user.home) as env:  # their real HOME, as in life
        facts = user.python_json(SEED, env=env, params={"image": image}, timeout=400)
    assert server["left_after_stop"] == [], server
    assert facts["status"] == "COMPLETED", f"{facts['node_error']}\n{facts['stderr']}"
    assert facts["result"] == 15
    return facts


def test_journey_with_a_service_started_by_hand(newcomer: NewUser) -> None:
    with _service_started_by_hand(newcomer) as socket_path:
        facts = _journey(newcomer)
        # The task went through that socket: no transient service was started.
        assert glob.glob(f"/tmp/podman-run-{newcomer.uid}/oci-executor-podman-*") == []
        assert os.path.exists(socket_path)
    assert _ours_of(newcomer, str(facts["dispatch_id"])) == []


def test_journey_with_no_service(newcomer: NewUser) -> None:
    facts = _journey(newcomer)
    # The transient service went with the server: no `podman system service` of the user is left.
    out = subprocess.run(
        ["ps", "-ww", "-u", str(newcomer.uid), "-o", "args="], capture_output=True, text=True
    )
    assert not [line for line in out.stdout.splitlines() if "system service" in line], out.stdout
    assert _ours_of(newcomer, str(facts["dispatch_id"])) == []


def _ours_of(user: NewUser, dispatch_id: str) -> list[str]:
    """Containers of ours left in the user's store (read with the podman CLI, no service needed)."""
    out = user.run(
        [
            "podman",
            "ps",
            "-a",
            "--filter",
            f"label=io.oci-executor.dispatch-id={dispatch_id}",
            "--format",
            "{{.ID}}",
        ]
    )
    return out.stdout.split()
