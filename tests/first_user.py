"""A brand-new unprivileged user with a copy of this checkout, as a newcomer has after a clone.

The test session (root) creates the account with ``useradd -m`` (no login session, so no
``XDG_RUNTIME_DIR``, no systemd), copies the checkout's files into ``~/oci-executor`` and
removes the account, its processes and its files afterwards. Everything else happens as the
user through :class:`FreshUser` (``runuser ... env -i``).

pip installs from a wheelhouse of the project's dependencies (built once per machine into
``/var/cache/oci-executor-test/wheels``), so a run needs no package index and the install
time is not the network's: the wheelhouse stands in for pip's own cache on a workstation.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import engines
from tests.rootless_user import RootlessUser

REPO_ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = os.environ.get("OCI_TEST_WHEELHOUSE", "/var/cache/oci-executor-test/wheels")


@dataclass(frozen=True)
class FreshUser(RootlessUser):
    """A user with no login session: no ``XDG_RUNTIME_DIR`` unless a step sets one."""

    @property
    def checkout(self) -> str:
        return f"{self.home}/oci-executor"

    def env(self, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
        env = super().env(overrides)
        if not overrides or "XDG_RUNTIME_DIR" not in overrides:
            env.pop("XDG_RUNTIME_DIR", None)
        if os.path.isdir(WHEELHOUSE):
            env.setdefault("PIP_FIND_LINKS", WHEELHOUSE)
            env.setdefault("PIP_NO_INDEX", "1")
        return env

    def bash(
        self,
        script: str,
        *,
        env: Mapping[str, str | None] | None = None,
        stdin: str = "",
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """``script`` in a login-less bash as the user, from their HOME; never raises on failure."""
        path = os.path.join(self.workdir, f"step-{uuid.uuid4().hex[:8]}.sh")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(script)
        self.chown(path)
        proc = subprocess.Popen(
            self.command(["bash", path], env),
            cwd=self.home,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            out, err = proc.communicate()
            err += f"\n(timed out after {timeout} s)"
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _requirements_key() -> str:
    return hashlib.sha256((REPO_ROOT / "pyproject.toml").read_bytes() + b"[test] tox").hexdigest()[:16]


def ensure_wheelhouse() -> None:
    """Wheels of the project's dependencies and its build backend, for an index-free install."""
    stamp = os.path.join(WHEELHOUSE, f".built-{_requirements_key()}")
    if os.path.exists(stamp):
        return
    os.makedirs(WHEELHOUSE, exist_ok=True)
    python = "/usr/bin/python3"
    for args in (["wheel", f"{REPO_ROOT}[test]", "tox>=4.11"], ["download", "hatchling"]):
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "--disable-pip-version-check",
                "-q",
                *args,
                "-d" if args[0] == "download" else "-w",
                WHEELHOUSE,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    for name in os.listdir(WHEELHOUSE):  # the project itself is installed from the checkout
        if name.startswith("oci_executor-"):
            os.unlink(os.path.join(WHEELHOUSE, name))
    subprocess.run(["chmod", "-R", "a+rX", WHEELHOUSE], check=True)
    Path(stamp).touch()


def copy_checkout(dest: str) -> None:
    """The checkout's tracked and new files (what a clone of this branch holds), without caches."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = REPO_ROOT / name
        if source.is_file():
            target = os.path.join(dest, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)


def _require_root() -> None:
    if os.geteuid() != 0 or not shutil.which("runuser") or not shutil.which("podman"):
        if engines.in_ci():
            pytest.fail("CI runs as root with Podman: these tests create users", pytrace=False)
        pytest.skip(f"creating a user needs root, runuser and Podman; {engines.SETUP_HINT}")


@contextlib.contextmanager
def fresh_user(prefix: str = "ocif", install: bool = True) -> Iterator[FreshUser]:
    """A new account holding a copy of the checkout (and, with ``install``, its ``.venv``)."""
    _require_root()
    if install:
        ensure_wheelhouse()
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    deadline = time.monotonic() + 120
    while subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, f"useradd {name} kept failing (/etc/passwd locked?)"
        time.sleep(1)  # another test's userdel holds the lock
    entry = pwd.getpwnam(name)
    workdir = tempfile.mkdtemp(prefix="oci-executor-first-hour-")
    os.chown(workdir, entry.pw_uid, entry.pw_gid)
    checkout = f"{entry.pw_dir}/oci-executor"
    user = FreshUser(name, entry.pw_uid, entry.pw_gid, entry.pw_dir, workdir, f"{checkout}/.venv")
    try:
        copy_checkout(checkout)
        subprocess.run(["chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", checkout], check=True)
        if install:
            done = user.bash(
                "cd oci-executor && python3 -m venv .venv && .venv/bin/pip install -q .", timeout=1200
            )
            assert done.returncode == 0, done.stderr
        yield user
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        time.sleep(0.5)
        shutil.rmtree(entry.pw_dir, ignore_errors=True)  # the big part, outside userdel's lock
        subprocess.run(["userdel", "-f", name], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            os.unlink(f"/var/mail/{name}")
        shutil.rmtree(workdir, ignore_errors=True)
        for leftover in (f"/tmp/podman-run-{entry.pw_uid}", f"/tmp/containers-user-{entry.pw_uid}"):
            shutil.rmtree(leftover, ignore_errors=True)
