"""Which real engines the tests use, and what to do when one is missing.

On a developer's machine a missing engine skips its tests with a message saying how to
enable them; in CI (``CI`` set) it fails the run, so skipped engine tests never pass as green.
"""

from __future__ import annotations

import os
import platform
import pwd
import subprocess
import time

import pytest


def _default_rootless_user() -> str:
    """Root drives the test user ``ocitest``; a user without root is their own rootless user."""
    if os.geteuid() == 0:
        return "ocitest"
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


ROOTLESS_USER = os.environ.get("OCI_TEST_ROOTLESS_USER") or _default_rootless_user()
ENGINE_TARGETS = ["docker", "podman", "podman-rootless"]
CONTRACT_TARGETS = ["local", *ENGINE_TARGETS, "slurm", "podman-cli"]
"""Every backend, and ``podman-cli``: docs/backends.md's template (tests/cli_backend/) over the
rootful Podman command line, registered by the test that uses it."""
CLI_TEMPLATE = "podman-cli"
SERVER_TARGETS = [t for t in CONTRACT_TARGETS if t != CLI_TEMPLATE]
"""What a Covalent server's tasks run on: the template backend is registered in the test
process only (tests/cli_backend is not installed into the server's environment)."""
SLURM_CONF = os.environ.get("OCI_TEST_SLURM_CONF", "/run/oci-executor/slurm/slurm.conf")
"""The test cluster's config, written by scripts/setup-slurm.sh."""
REMOTE_TARGETS = ["docker-ssh", "podman-rootless-ssh"]
"""The same engines reached over ssh (scripts/setup-sshd.sh: a real sshd on 127.0.0.1)."""
LOCAL_OF = {"docker-ssh": "docker", "podman-rootless-ssh": "podman-rootless"}
"""The local target of each remote one: the same engine, through its socket on this machine."""
SSH_PORT = int(os.environ.get("OCI_TEST_SSH_PORT", "22422"))
SSH_KEYS = os.environ.get("OCI_TEST_SSH_KEYS", "/etc/oci-executor/ssh")
LABEL = "io.oci-executor.managed=true"
PULL_PROBE = "127.0.0.1:5000/oci-executor-test/pull-probe:latest"
"""An image only the test registry holds (scripts/setup-engines.sh pushes it): pulls for real."""
SETUP_HINT = "run `sudo bash scripts/setup-engines.sh` to install and start the test engines (and the test Slurm cluster)"
ROOT_HINT = "needs root"
"""Start of the reason of a test skipped because it drives other users or root's engines."""


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
    if (
        target_id == "podman-rootless"
        and os.geteuid() != 0
        and "OCI_TEST_PODMAN_ROOTLESS_HOST" not in os.environ
    ):
        from oci_executor.backends.podman import default_address

        return default_address()  # this user's own rootless Podman, where Podman itself puts it
    if target_id == "podman-rootless":
        try:
            uid = pwd.getpwnam(ROOTLESS_USER).pw_uid
        except KeyError:
            return f"unix:///run/user/<no user {ROOTLESS_USER}>/podman/podman.sock"
        return os.environ.get("OCI_TEST_PODMAN_ROOTLESS_HOST", f"unix:///run/user/{uid}/podman/podman.sock")
    if target_id == CLI_TEMPLATE:
        return ""  # the podman command's own default (rootful as root)
    if target_id == "slurm":
        # The tests run as root: jobs run as the rootless test user (sbatch/srun --uid).
        return f"{ROOTLESS_USER}@{SLURM_CONF}" if os.geteuid() == 0 else SLURM_CONF
    raise ValueError(target_id)


def as_test_user(*argv: str) -> list[str]:
    """``argv`` run as the rootless test user with its own runtime folder (from root)."""
    if os.geteuid() != 0:
        return list(argv)
    uid = pwd.getpwnam(ROOTLESS_USER).pw_uid
    return ["runuser", "-u", ROOTLESS_USER, "--", "env", f"XDG_RUNTIME_DIR=/run/user/{uid}", *argv]


def slurm_node_command(node: str, *argv: str) -> list[str]:
    """``argv`` run as the rootless test user on a node of the test cluster: in that node's
    slurmd's mount namespace, where its own rootless store is (scripts/setup-slurm.sh)."""
    pid = _slurmd_pid(node)
    if os.geteuid() != 0 or pid is None:
        return as_test_user(*argv)
    return ["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", *as_test_user(*argv)]


def _slurmd_pid(node: str) -> str | None:
    """The pid of ``node``'s slurmd (its ``SlurmdPidFile`` in the test cluster's slurm.conf)."""
    try:
        with open(SLURM_CONF) as conf:
            lines = [x.split("=", 1)[1].strip() for x in conf if x.startswith("SlurmdPidFile=")]
        with open(lines[0].replace("%n", node)) as pidfile:
            pid = pidfile.read().strip()
    except (OSError, IndexError):
        return None
    return pid if pid.isdigit() and os.path.exists(f"/proc/{pid}") else None


def slurm_env() -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": SLURM_CONF}


def _slurm_problem() -> str | None:
    """Why the test cluster cannot run the tests, or None."""
    import subprocess

    try:
        info = subprocess.run(
            ["sinfo", "--noheader", "--format=%N %t"],
            capture_output=True,
            text=True,
            env=slurm_env(),
            timeout=20,
        )
        if info.returncode != 0:
            return f"sinfo failed: {info.stderr.strip()}"
        image = subprocess.run(
            as_test_user("podman", "image", "exists", test_image()),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if image.returncode != 0:
            return f"image {test_image()} not in {ROOTLESS_USER}'s rootless store"
    except (OSError, subprocess.TimeoutExpired, KeyError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def slurm_nodes() -> list[str]:
    """The test cluster's node names (n1, n2; a private cluster of setup-slurm.sh has others)."""
    import subprocess

    info = subprocess.run(
        ["sinfo", "--noheader", "--Node", "--format=%N"],
        capture_output=True,
        text=True,
        env=slurm_env(),
        timeout=30,
    )
    return sorted(set(info.stdout.split()))


def slurm_leftovers() -> list[str]:
    """Our jobs still in the queue (``job:ID``) and our containers on the nodes (``container:NAME``).

    Containers are counted in each node's own store (see scripts/setup-slurm.sh)."""
    import subprocess

    jobs = subprocess.run(
        ["squeue", "--noheader", "--name=oci-executor", "--format=%i"],
        capture_output=True,
        text=True,
        env=slurm_env(),
        timeout=30,
    )
    found = [f"job:{line.strip()}" for line in jobs.stdout.splitlines() if line.strip()]
    for node in slurm_nodes():
        ps = subprocess.run(
            slurm_node_command(
                node, "podman", "ps", "--all", f"--filter=label={LABEL}", "--format={{.Names}}"
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        found += [
            f"container:{name}"
            for name in ps.stdout.split()
            if name.startswith("oci-slurm-") and name.endswith(f"-{node}")
        ]
    return sorted(set(found))


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


def auto_pick() -> str:
    """The backend ``backend="auto"`` should use with the test image, worked out without our
    code: Podman at this user's default socket, then Docker, else the local backend."""
    from oci_executor.backends.podman import default_address

    candidates = [("podman", default_address()), ("docker", "unix:///var/run/docker.sock")]
    return next((name for name, addr in candidates if has_test_image(name, addr)), "local")


def _engine_problem(backend: str, addr: str) -> str | None:
    """Why the engine cannot run the tests (no answer, no test image), or None."""
    try:
        client = _client(backend, addr)
        client.ping()
        try:
            client.images.get(test_image())
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return f"{type(exc).__name__}: {exc}"
    return None


def has_test_image(backend: str, addr: str) -> bool:
    """Whether the engine at ``addr`` answers and holds the test image."""
    return _engine_problem(backend, addr) is None


def require_engine(target_id: str) -> str:
    """The engine's address, once it answered and has the test image; else skip or fail."""
    addr = address(target_id)
    if target_id in LOCAL_OF:
        require_engine(LOCAL_OF[target_id])
    if target_id not in _status and target_id in LOCAL_OF:
        _status[target_id] = _ssh_problem(target_id)
    if target_id not in _status:
        backend = "podman" if target_id.startswith("podman") else target_id
        if target_id == CLI_TEMPLATE:
            problem = _engine_problem("podman", address("podman")) or _register_cli_template()
        else:
            problem = _slurm_problem() if target_id == "slurm" else _engine_problem(backend, addr)
        _status[target_id] = problem
    problem = _status[target_id]
    if problem:
        unusable(f"{target_id} engine at {addr} not usable with image {test_image()} ({problem})")
    return addr


def _register_cli_template() -> str | None:
    """Register docs/backends.md's template backend in this process's registry (None: done)."""
    import sys

    from oci_executor.registry import default_registry

    folder = os.path.join(os.path.dirname(__file__), "cli_backend")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    from oci_cli_backend import CliBackend

    registry = default_registry()
    if CLI_TEMPLATE not in registry.names():
        registry.add(CliBackend)
    return None


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
    """The engine's inspect data of one container (slurm: ``podman inspect`` as the jobs' user;
    the test cluster's nodes are this machine)."""
    if backend == "slurm":
        import json

        node = container_id.rsplit("-", 1)[-1]  # oci-slurm-<job>-<node>: in that node's store
        argv = slurm_node_command(node, "podman", "inspect", container_id)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
        return dict(json.loads(done.stdout)[0])
    client = _client(backend, addr)
    try:
        return dict(client.containers.get(container_id).attrs)
    finally:
        client.close()


def labelled_containers(backend: str, addr: str) -> list[str]:
    """IDs of all containers (running or not) that carry our managed label (for slurm, our
    jobs in the queue as well)."""
    if backend == "slurm":
        return slurm_leftovers()
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
