"""Drive the unprivileged test user (``tests.engines.ROOTLESS_USER``) from a test running as root.

Everything the rootless tests check runs as that user: ``runuser -u USER -- env -i ...`` with a
minimal environment (no ``DOCKER_HOST``, no root's HOME), and the user's own virtualenv, made
with Debian's ``/usr/bin/python3`` and holding a wheel of this checkout. Scripts are written to
a folder the user owns and print their result as one JSON line after :data:`RESULT_MARKER`.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests import engines

USER_PYTHON = os.environ.get("OCI_TEST_ROOTLESS_PYTHON", "/usr/bin/python3")
"""The interpreter the user's venv is made from (root's pyenv is not readable by the user)."""
COVALENT_PIN = "covalent==0.240.0"
EXTRA_PINS = ("fastapi<0.132",)
REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_MARKER = "@@OCI-TEST-RESULT@@ "
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
_PRELUDE = textwrap.dedent(
    f"""\
    import json as _json


    def emit(obj):
        print({RESULT_MARKER!r} + _json.dumps(obj), flush=True)


    """
)
_PASSED_TO_PIP = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def unusable(problem: str) -> NoReturn:
    """Skip (developer machine) or fail (CI) because the rootless setup is missing."""
    message = f"rootless user {engines.ROOTLESS_USER!r} not usable: {problem}"
    if engines.in_ci():
        pytest.fail(f"CI requires the rootless test user: {message}", pytrace=False)
    pytest.skip(f"{message}; {engines.SETUP_HINT}")


@dataclass(frozen=True)
class RootlessUser:
    """The unprivileged user, its rootless Podman socket, and a folder it owns for our files."""

    name: str
    uid: int
    gid: int
    home: str
    workdir: str
    venv: str

    @property
    def is_self(self) -> bool:
        """Whether the tests run as this user (a user without root testing their own Podman)."""
        return self.uid == os.geteuid() != 0

    @property
    def runtime_dir(self) -> str:
        """``/run/user/UID``; for :attr:`is_self`, the session's own ``XDG_RUNTIME_DIR`` ("" if unset)."""
        if self.is_self:
            return os.environ.get("XDG_RUNTIME_DIR", "")
        return f"/run/user/{self.uid}"

    @property
    def socket_path(self) -> str:
        if self.is_self:
            return engines.address("podman-rootless").removeprefix("unix://")
        return f"{self.runtime_dir}/podman/podman.sock"

    @property
    def socket_url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def python(self) -> str:
        return f"{self.venv}/bin/python"

    # -- processes as the user -----------------------------------------------------------

    def env(self, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """The user's minimal environment; an override of ``None`` removes the variable."""
        env = {
            "HOME": self.home,
            "USER": self.name,
            "LOGNAME": self.name,
            "XDG_RUNTIME_DIR": self.runtime_dir,
            "PATH": f"{self.venv}/bin:{SYSTEM_PATH}",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }
        if not env["XDG_RUNTIME_DIR"]:
            env.pop("XDG_RUNTIME_DIR")
        for key, value in (overrides or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def command(self, argv: Sequence[str], env: Mapping[str, str | None] | None = None) -> list[str]:
        """``argv`` as the user, with only the user's minimal environment (:meth:`env`)."""
        assignments = [f"{k}={v}" for k, v in self.env(env).items()]
        as_user = [] if self.is_self else ["runuser", "-u", self.name, "--"]
        return [*as_user, "env", "-i", *assignments, *argv]

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str | None] | None = None,
        stdout: Any = subprocess.PIPE,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` as the user in the background, in a session of its own (end it with
        ``os.killpg(proc.pid, ...)``)."""
        return subprocess.Popen(
            self.command(argv, env),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.DEVNULL if stdout is subprocess.DEVNULL else None,
            text=True,
            start_new_session=True,
        )

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str | None] | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the user (``runuser ... env -i ...``) in :attr:`workdir`."""
        command = self.command(argv, env)
        # A session of its own, so a timeout can end the user's whole process group.
        proc = subprocess.Popen(
            command,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise AssertionError(
                f"as {self.name}: {' '.join(argv)} timed out after {timeout}s\n"
                f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            ) from None
        result = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
        if check and result.returncode != 0:
            raise AssertionError(
                f"as {self.name}: {' '.join(argv)} exited {result.returncode}\n"
                f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            )
        return result

    def python_json(
        self,
        script: str,
        *,
        env: Mapping[str, str | None] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float = 300,
    ) -> Any:
        """Run ``script`` with the user's Python; return the object it passed to ``emit(obj)``.

        The script sees ``PARAMS``, a JSON copy of ``params``.
        """
        prelude = _PRELUDE + f"PARAMS = _json.loads({json.dumps(dict(params or {}))!r})\n\n\n"
        with tempfile.NamedTemporaryFile(
            "w", dir=self.workdir, prefix="script-", suffix=".py", delete=False
        ) as handle:
            handle.write(prelude + textwrap.dedent(script))
        path = handle.name
        try:
            self.chown(path)
            result = self.run([self.python, path], env=env, timeout=timeout)
        finally:
            os.unlink(path)
        emitted = [
            line[len(RESULT_MARKER) :]
            for line in result.stdout.splitlines()
            if line.startswith(RESULT_MARKER)
        ]
        assert len(emitted) == 1, (
            f"the user's script emitted {len(emitted)} results, expected 1\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
        return json.loads(emitted[0])

    # -- files ---------------------------------------------------------------------------

    def chown(self, path: str) -> None:
        os.chown(path, self.uid, self.gid)

    def mkdtemp(self, prefix: str, mode: int = 0o700, parent: str | None = None) -> str:
        """A new folder owned by the user (removed with :attr:`workdir` unless elsewhere)."""
        path = tempfile.mkdtemp(prefix=prefix, dir=parent or self.workdir)
        self.chown(path)
        os.chmod(path, mode)
        return path

    # -- the user's rootless Podman ------------------------------------------------------

    def podman(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``podman --remote`` as the user against its rootless service."""
        return self.run(["podman", "--remote", "--url", self.socket_url, *args], timeout=timeout, check=check)

    def managed_containers(self) -> list[dict[str, Any]]:
        """``podman ps -a`` entries (id and labels) carrying our managed label."""
        out = self.podman("ps", "-a", "--filter", f"label={engines.LABEL}", "--format", "json").stdout
        return [{"id": c.get("Id", ""), "labels": c.get("Labels") or {}} for c in json.loads(out or "[]")]

    def service_processes(self) -> list[str]:
        """``pid args`` of the user's ``podman system service`` processes (seen by root's ps)."""
        out = subprocess.run(
            ["ps", "-ww", "-u", str(self.uid), "-o", "pid=,args="],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [line.strip() for line in out.splitlines() if "podman system service" in line]


# -- preparing the user and its venv ---------------------------------------------------------


def _probe(name: str) -> tuple[pwd.struct_passwd, str]:
    """The user's passwd entry and its Python's ``major.minor``; skip/fail if anything is missing."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        unusable(f"no such user {name!r}")
    if entry.pw_uid == 0:
        unusable(f"user {name!r} is root")
    myself = entry.pw_uid == os.geteuid()
    if os.geteuid() != 0 and not myself:
        unusable(f"driving another user ({name}) needs root; run as {name}, or as root")
    if not myself and not shutil.which("runuser"):
        unusable("runuser is not installed")
    if not os.access(USER_PYTHON, os.X_OK):
        unusable(f"{USER_PYTHON} is missing")
    sock = (
        engines.address("podman-rootless").removeprefix("unix://")
        if myself
        else f"/run/user/{entry.pw_uid}/podman/podman.sock"
    )
    if not os.path.exists(sock) or not stat.S_ISSOCK(os.stat(sock).st_mode):
        unusable(f"no rootless Podman socket at {sock}")
    as_user = [] if myself else ["runuser", "-u", name, "--"]
    version = subprocess.run(
        [*as_user, USER_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
    )
    if version.returncode != 0:
        unusable(f"{USER_PYTHON} does not run as {name}: {version.stderr.strip()}")
    return entry, version.stdout.strip()


def _pip(user: RootlessUser, *args: str, timeout: float = 540) -> None:
    passed: dict[str, str | None] = {
        k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in _PASSED_TO_PIP
    }
    user.run(
        [user.python, "-m", "pip", "--disable-pip-version-check", "-q", *args], env=passed, timeout=timeout
    )


def _installed_version(user: RootlessUser, dist: str) -> str:
    code = f"import importlib.metadata as m\ntry: print(m.version({dist!r}))\nexcept Exception: print('')"
    result = user.run([user.python, "-c", code], check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


@contextlib.contextmanager
def _build_wheel() -> Iterator[str]:
    """A wheel of this checkout in a folder the user can read; removed afterwards."""
    folder = tempfile.mkdtemp(prefix="oci-executor-rootless-wheel-")
    try:
        os.chmod(folder, 0o755)
        subprocess.run(
            [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "wheel", "--no-deps"]
            + ["-w", folder, str(REPO_ROOT)],
            check=True,
            capture_output=True,
            text=True,
        )
        (wheel,) = glob.glob(os.path.join(folder, "oci_executor-*.whl"))
        os.chmod(wheel, 0o644)
        yield wheel
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _prepare_venv(user: RootlessUser, minor: str) -> None:
    """Create (or reuse) the user's venv and install this checkout's wheel into it, as the user."""
    parent = os.path.dirname(user.venv)
    user.run(["mkdir", "-p", parent])
    with open(os.path.join(parent, "venv.lock"), "a") as lock:  # two sessions at once wait here
        user.chown(lock.name)
        fcntl.flock(lock, fcntl.LOCK_EX)
        probe = user.run(
            [user.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], check=False
        )
        if probe.returncode != 0 or probe.stdout.strip() != minor:
            shutil.rmtree(user.venv, ignore_errors=True)
            user.run([USER_PYTHON, "-m", "venv", user.venv], timeout=300)
        with _build_wheel() as wheel:
            fresh = _installed_version(user, "covalent") != COVALENT_PIN.split("==")[1]
            if fresh:  # dependencies on first use; cached in the venv afterwards
                _pip(user, "install", wheel, COVALENT_PIN, *EXTRA_PINS)
            # Always the checkout's code, even when the version number did not change.
            _pip(user, "install", "--no-deps", "--force-reinstall", wheel)
            if not fresh:  # no-op unless the project's dependencies changed
                _pip(user, "install", wheel, COVALENT_PIN, *EXTRA_PINS)


def image_for(minor: str) -> str:
    return os.environ.get("OCI_TEST_ROOTLESS_IMAGE", f"oci-executor-test/python:{minor}")


@contextlib.contextmanager
def prepared_user() -> Iterator[tuple[RootlessUser, str]]:
    """The user with its venv ready, and the test image for its Python; cleans up our folder."""
    entry, minor = _probe(engines.ROOTLESS_USER)
    workdir = tempfile.mkdtemp(prefix="oci-executor-rootless-")
    try:
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
        user = RootlessUser(
            name=entry.pw_name,
            uid=entry.pw_uid,
            gid=entry.pw_gid,
            home=entry.pw_dir,
            workdir=workdir,
            venv=os.environ.get(
                "OCI_TEST_ROOTLESS_VENV", os.path.join(entry.pw_dir, ".cache", "oci-executor-tests", "venv")
            ),
        )
        image = image_for(minor)
        exists = user.podman("image", "exists", image, check=False)
        if exists.returncode != 0:
            unusable(
                f"image {image} (for the user's Python {minor}) is not in its rootless store at "
                f"{user.socket_url}: {exists.stderr.strip() or 'podman image exists: ' + str(exists.returncode)}"
            )
        _prepare_venv(user, minor)
        yield user, image
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
