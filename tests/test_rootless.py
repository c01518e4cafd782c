"""Rootless end to end: everything as the unprivileged test user, with no root and no Docker.

The test process runs as root; each check runs as ``tests.engines.ROOTLESS_USER`` through
``runuser`` with an empty environment and the user's own venv (see ``tests/rootless_user.py``),
and the user's Python prints its findings as JSON for the assertions here.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests import engines
from tests.rootless_user import RootlessUser, prepared_user

pytestmark = pytest.mark.engine("podman-rootless")

DOCKER_SOCKET = "/var/run/docker.sock"


@pytest.fixture(scope="module")
def rootless() -> Iterator[tuple[RootlessUser, str]]:
    """The user with its venv holding this checkout, and the test image for its Python."""
    with prepared_user() as prepared:
        yield prepared


@pytest.fixture
def user(rootless: tuple[RootlessUser, str]) -> RootlessUser:
    return rootless[0]


@pytest.fixture
def image(rootless: tuple[RootlessUser, str]) -> str:
    return rootless[1]


def _ours(user: RootlessUser, dispatch_id: str) -> list[str]:
    """Containers of the user's rootless Podman left with our labels for ``dispatch_id``."""
    return [
        c["id"]
        for c in user.managed_containers()
        if c["labels"].get("io.oci-executor.dispatch-id") == dispatch_id
    ]


def test_user_has_no_root_and_no_docker(user: RootlessUser, image: str) -> None:
    engines.require_engine("docker")  # Docker runs (for root): the user must still be kept out
    facts = user.python_json(
        """
        import grp
        import os
        import socket

        import oci_executor
        from oci_executor import OCIExecutor
        from oci_executor.backends.docker import DockerBackend
        from oci_executor.errors import EnginePermissionError, EngineUnavailableError

        facts = {"uid": os.getuid(), "euid": os.geteuid(), "module": oci_executor.__file__}
        try:
            facts["in_docker_group"] = grp.getgrnam("docker").gr_gid in os.getgroups()
        except KeyError:
            facts["in_docker_group"] = False
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.connect(PARAMS["socket"])
            facts["connect"] = "connected"
        except OSError as exc:
            facts["connect"] = type(exc).__name__
            facts["errno"] = exc.errno
        finally:
            sock.close()

        backend = DockerBackend()
        try:
            facts["available"] = backend.available()
        finally:
            backend.close()


        def add(x, y):
            return x + y


        try:
            OCIExecutor(backend="docker", image=PARAMS["image"]).run_sync(add, [1, 2], {}, {})
            facts["error"] = None
        except Exception as exc:
            facts["error"] = type(exc).__name__
            facts["permission_error"] = isinstance(exc, EnginePermissionError)
            facts["unavailable_error"] = isinstance(exc, EngineUnavailableError)
            facts["message"] = str(exc)
        emit(facts)
        """,
        params={"socket": DOCKER_SOCKET, "image": image},
    )
    assert facts["uid"] == user.uid != 0 and facts["euid"] != 0, facts
    assert facts["module"].startswith(user.venv + "/"), f"not the user's install: {facts['module']}"
    assert not facts["in_docker_group"], facts
    assert facts["connect"] == "PermissionError" and facts["errno"] == 13, facts
    assert facts["available"] is False, facts
    assert facts["error"] == "EnginePermissionError", (
        f"a denied Docker socket should raise EnginePermissionError, got {facts['error']}: "
        f"{facts.get('message')}"
    )
    assert facts["permission_error"] and facts["unavailable_error"], facts
    message = facts["message"]
    assert DOCKER_SOCKET in message, message
    assert "permission denied" in message.lower(), message
    assert "Add your user to the group that owns the socket" in message, message
    assert "'address' option" in message, message


def test_auto_picks_the_users_rootless_podman(user: RootlessUser) -> None:
    facts = user.python_json(
        """
        from oci_executor.registry import select_backend

        backend = select_backend("auto")
        try:
            emit({
                "name": backend.name,
                "address": backend.address(),
                "transient": getattr(backend, "transient_service", None),
                "rootless": backend.rootless(),
            })
        finally:
            backend.close()
        """
    )
    assert facts == {"name": "podman", "address": user.socket_url, "transient": False, "rootless": True}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/dispatches?count=1", timeout=2):
            return True
    except Exception:  # noqa: BLE001 - not (or no longer) serving
        return False


def _server_processes(user: RootlessUser, port: int) -> list[int]:
    """Pids of the user's processes serving Covalent on ``port``."""
    out = subprocess.run(
        ["ps", "-ww", "-u", str(user.uid), "-o", "pid=,args="], capture_output=True, text=True, check=False
    ).stdout
    return [int(line.split()[0]) for line in out.splitlines() if f"--port {port} " in line + " "]


@contextlib.contextmanager
def _covalent_server(
    user: RootlessUser, state: dict[str, object], home: str | None = None
) -> Iterator[dict[str, str | None]]:
    """The user's own Covalent server (a fresh HOME unless ``home`` is given, no Dask); stopped
    afterwards in any case.

    ``state["left_after_stop"]``: pids still serving after ``covalent stop`` (then ended by id).
    """
    home = home or user.mkdtemp("covalent-home-")
    env: dict[str, str | None] = {"HOME": home, "COVALENT_DISABLE_DASK": "1"}
    port = _free_port()
    state["url"] = url = f"http://localhost:{port}"
    user.python_json(
        """
        import covalent as ct

        port = PARAMS["port"]
        # sdk.no_cluster: lattices default to the "local" workflow executor, as --no-cluster expects.
        ct.set_config({"dispatcher.port": port, "user_interface.port": port, "sdk.no_cluster": "true"})
        emit(ct.get_config("dispatcher.port"))
        """,
        env=env,
        params={"port": port},
    )
    log = os.path.join(home, "covalent.log")
    try:
        user.run(
            ["sh", "-c", f'exec covalent start --no-cluster -p {port} >>"$HOME/covalent.log" 2>&1'],
            env=env,
            timeout=180,
        )
        deadline = time.monotonic() + 90
        while not _answers(url):
            if time.monotonic() > deadline:
                with open(log, errors="replace") as handle:
                    raise AssertionError(
                        f"the user's Covalent server did not start on {url}:\n{handle.read()}"
                    )
            time.sleep(0.5)
        state["server_pids"] = _server_processes(user, port)
        yield env
    finally:
        user.run(
            ["sh", "-c", 'exec covalent stop >>"$HOME/covalent.log" 2>&1'], env=env, timeout=120, check=False
        )
        deadline = time.monotonic() + 15
        while (left := _server_processes(user, port)) and time.monotonic() < deadline:
            time.sleep(0.3)
        state["left_after_stop"] = left
        for pid in left:  # never leave the server behind, even when `covalent stop` failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.covalent
def test_seed_workflow_on_the_users_own_covalent_server(user: RootlessUser, image: str) -> None:
    server: dict[str, object] = {}
    with _covalent_server(user, server) as env:
        facts = user.python_json(
            """
            import covalent as ct

            from oci_executor import OCIExecutor

            executor = OCIExecutor(backend="podman", image=PARAMS["image"])


            @ct.electron(executor=executor)
            def add(x, y):
                return x + y


            @ct.electron(executor=executor)
            def multiply(x, y):
                return x * y


            @ct.lattice
            def workflow(x, y):
                r1 = add(x, y)
                return multiply(y, r1)


            dispatch_id = ct.dispatch(workflow)(2, 3)
            result = ct.get_result(dispatch_id, wait=True)
            nodes = []
            for node_id in range(6):
                try:
                    node = result.get_node_result(node_id)
                except Exception:
                    continue
                nodes.append([node["node_name"], str(node["status"]), str(node["error"]), node["stderr"]])
            emit({
                "dispatch_id": dispatch_id,
                "status": str(result.status),
                "result": result.result,
                "error": str(result.error),
                "text": str(result),
                "nodes": nodes,
            })
            """,
            env=env,
            params={"image": image},
            timeout=400,
        )
    assert server["server_pids"], "no Covalent server process of the user was found"
    assert server["left_after_stop"] == [], f"`covalent stop` left the user's server running: {server}"
    assert not _answers(str(server["url"])), f"a Covalent server still answers on {server['url']}"
    assert facts["status"] == "COMPLETED", f"{facts['error']}: {facts['nodes']}"
    assert facts["result"] == 15, facts
    assert "add(0): 5" in facts["text"] and "multiply(3): 15" in facts["text"], facts["text"]
    assert _ours(user, facts["dispatch_id"]) == [], "containers left in the user's rootless Podman"


def test_volumes_keep_the_users_ownership(user: RootlessUser, image: str) -> None:
    folder = user.mkdtemp("volume-")
    secret_path = os.path.join(folder, "secret.txt")
    secret = f"s3cret-{uuid.uuid4().hex}"
    with open(secret_path, "w") as handle:
        handle.write(secret)
    user.chown(secret_path)
    os.chmod(secret_path, 0o600)
    dispatch_id = f"rootless-volumes-{uuid.uuid4().hex[:8]}"

    facts = user.python_json(
        """
        from oci_executor import OCIExecutor


        def task():
            import os

            with open("/data/secret.txt") as handle:
                secret = handle.read()
            with open("/data/out.txt", "w") as handle:
                handle.write(secret[::-1])
            return {"secret": secret, "uid": os.getuid()}


        executor = OCIExecutor(backend="podman", image=PARAMS["image"], volumes=[PARAMS["folder"] + ":/data"])
        outcome = executor.run_sync(task, [], {}, {"dispatch_id": PARAMS["dispatch_id"], "node_id": 0})
        emit({
            "ok": outcome.ok,
            "value": outcome.load_value() if outcome.ok else None,
            "error": outcome.summary(),
            "traceback": outcome.traceback,
            "stderr": outcome.stderr,
        })
        """,
        params={"image": image, "folder": folder, "dispatch_id": dispatch_id},
    )
    assert facts["ok"], f"{facts['error']}\n{facts['traceback']}\n{facts['stderr']}"
    assert facts["value"]["secret"] == secret, facts
    out = os.path.join(folder, "out.txt")
    info = os.stat(out)
    assert info.st_uid == user.uid, f"out.txt belongs to uid {info.st_uid}, not {user.name} ({user.uid})"
    with open(out) as handle:
        assert handle.read() == secret[::-1]
    assert os.stat(secret_path).st_mode & 0o777 == 0o600
    user.run(["rm", out])
    assert not os.path.exists(out)
    assert _ours(user, dispatch_id) == []


def test_transient_service_when_no_service_answers(user: RootlessUser, image: str) -> None:
    runtime_dir = user.mkdtemp("runtime-", mode=0o700)
    dispatch_id = f"rootless-transient-{uuid.uuid4().hex[:8]}"
    facts = user.python_json(
        """
        import glob
        import os
        import subprocess

        from oci_executor import OCIExecutor
        from oci_executor.backend import BackendConfig
        from oci_executor.backends.podman import PodmanBackend, rootless_socket

        runtime_dir = os.environ["XDG_RUNTIME_DIR"]
        pattern = os.path.join(runtime_dir, "oci-executor-podman-*")
        facts = {"runtime_dir": runtime_dir, "container_host": os.environ.get("CONTAINER_HOST")}
        facts["default_socket_exists"] = os.path.exists(rootless_socket()[len("unix://") :])

        probe = PodmanBackend(BackendConfig())
        try:
            probe.client()
            facts["probe"] = {
                "transient": probe.transient_service,
                "address": probe.address(),
                "rootless": probe.rootless(),
            }
            # What the test looks for afterwards must be visible while the service runs.
            ps = ["ps", "-ww", "-u", str(os.getuid()), "-o", "pid=,args="]
            lines = subprocess.run(ps, capture_output=True, text=True, check=True).stdout.splitlines()
            facts["services_while_open"] = [
                line for line in lines if "podman system service" in line and runtime_dir in line
            ]
        finally:
            probe.close()
        facts["dirs_after_probe"] = glob.glob(pattern)


        def add(x, y):
            return x + y


        for node in range(2):  # two tasks, one transient service for the process
            outcome = OCIExecutor(backend="podman", image=PARAMS["image"], reuse="never").run_sync(
                add, [20, 22], {}, {"dispatch_id": PARAMS["dispatch_id"], "node_id": node}
            )
        facts["ok"] = outcome.ok
        facts["value"] = outcome.load_value() if outcome.ok else None
        facts["error"] = outcome.summary() + "\\n" + outcome.traceback
        facts["dirs_after_run"] = glob.glob(pattern)
        emit(facts)
        """,
        env={"XDG_RUNTIME_DIR": runtime_dir, "CONTAINER_HOST": None},
        params={"image": image, "dispatch_id": dispatch_id},
    )
    assert facts["runtime_dir"] == runtime_dir and facts["container_host"] is None
    assert facts["default_socket_exists"] is False
    probe = facts["probe"]
    assert probe["transient"] is True and probe["rootless"] is True, probe
    assert probe["address"].startswith(f"unix://{runtime_dir}/oci-executor-podman-"), probe
    assert facts["services_while_open"], "the transient service was not visible to ps while it ran"
    assert facts["ok"] and facts["value"] == 42, facts["error"]
    assert facts["dirs_after_probe"] == [], facts
    assert len(facts["dirs_after_run"]) == 1, facts  # shared by the process's tasks
    # ... and stopped, its folder gone, when the process exits.
    assert glob.glob(os.path.join(runtime_dir, "oci-executor-podman-*")) == []
    ps = subprocess.run(["ps", "-ww", "-e", "-o", "args="], capture_output=True, text=True, check=True)
    assert not [line for line in ps.stdout.splitlines() if "system service" in line and runtime_dir in line]

    # The services ended with their backends (not by their own idle timeout, which is 60 s).
    deadline = time.monotonic() + 5
    while (left := [p for p in user.service_processes() if runtime_dir in p]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"transient podman services left running: {left}"
    assert glob.glob(os.path.join(runtime_dir, "oci-executor-podman-*")) == []
    assert _ours(user, dispatch_id) == []


def test_warm_containers_as_the_user(user: RootlessUser, image: str) -> None:
    """The reuse rules hold for an unprivileged user on their own rootless Podman."""
    dispatch_id = f"rootless-reuse-{uuid.uuid4().hex[:8]}"
    facts = user.python_json(
        """
        import socket
        import threading

        from oci_executor import OCIExecutor
        from oci_executor.pool import POOL


        def mark(path):
            import os, socket
            before = open(path).read() if os.path.exists(path) else ""
            open(path, "w").write("first")
            return before, socket.gethostname()


        image, dispatch = PARAMS["image"], PARAMS["dispatch_id"]
        meta = {"dispatch_id": dispatch, "node_id": 0}
        ex = OCIExecutor(backend="podman", image=image)
        a = ex.run_sync(mark, ["/tmp/reuse-mark"], {}, meta)
        b = ex.run_sync(mark, ["/tmp/reuse-mark"], {}, meta)
        other = ex.run_sync(mark, ["/tmp/reuse-mark"], {}, {"dispatch_id": dispatch + "-b", "node_id": 0})
        never = OCIExecutor(backend="podman", image=image, reuse="never")
        fresh = {never.run_sync(mark, ["/tmp/x"], {}, meta).container_id for _ in range(2)}
        limited = OCIExecutor(backend="podman", image=image, max_containers=2)
        ids = []
        threads = [
            threading.Thread(target=lambda: ids.append(limited.run_sync(mark, ["/tmp/y"], {}, meta).container_id))
            for _ in range(6)
        ]
        [t.start() for t in threads]
        [t.join() for t in threads]
        POOL.drain()
        emit({
            "same": a.container_id == b.container_id,
            "second_saw_first": b.load_value()[0] == "first",
            "hostnames": [a.load_value()[1], b.load_value()[1]],
            "other_dispatch_shares": other.container_id in (a.container_id,),
            "never_distinct": len(fresh),
            "limited": len(set(ids)),
            "tasks": len(ids),
        })
        """,
        params={"image": image, "dispatch_id": dispatch_id},
    )
    assert facts["same"] and facts["second_saw_first"], facts
    assert facts["hostnames"][0] == facts["hostnames"][1]
    assert facts["other_dispatch_shares"] is False
    assert facts["never_distinct"] == 2
    assert facts["tasks"] == 6 and 1 <= facts["limited"] <= 2, facts
    assert _ours(user, dispatch_id) == []
    assert _ours(user, dispatch_id + "-b") == []


USER_DRIVER = """
import sys, threading
from oci_executor import OCIExecutor
def add(x, y):
    return x + y
def slow():
    import time
    time.sleep(600)
ex = OCIExecutor(backend="podman", image=sys.argv[1], idle_timeout=5, keep_warm=600, max_containers=2)
meta = {"dispatch_id": sys.argv[2], "node_id": 0}
threads = [threading.Thread(target=ex.run_sync, args=(add, [i, 1], {}, meta)) for i in range(2)]
[t.start() for t in threads]
[t.join() for t in threads]
print("warm", flush=True)
ex.run_sync(slow, [], {}, meta)
"""


def test_the_users_pool_goes_when_the_driver_is_killed(user: RootlessUser, image: str) -> None:
    """SIGKILL the user's driving process: every container it held is gone in idle_timeout + 10 s."""
    dispatch_id = f"rootless-kill-{uuid.uuid4().hex[:8]}"
    script = os.path.join(user.workdir, f"driver-{dispatch_id}.py")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(USER_DRIVER)
    user.chown(script)
    proc = user.spawn([user.python, script, image, dispatch_id])
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "warm"
        time.sleep(1.0)
        assert len(_ours(user, dispatch_id)) == 2
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        while _ours(user, dispatch_id) and time.monotonic() - killed < 5 + 10:
            time.sleep(0.3)
        assert _ours(user, dispatch_id) == [], "the user's pooled containers outlived the driver"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        os.unlink(script)


def test_an_inherited_runtime_dir_never_runs_a_task_on_the_host(user: RootlessUser, image: str) -> None:
    """XDG_RUNTIME_DIR of another user (as after `su`): auto keeps isolation or says what is wrong."""
    foreign = tempfile.mkdtemp(prefix="oci-foreign-runtime-")  # root's, mode 0700
    try:
        facts = user.python_json(
            """
            import os
            from oci_executor import OCIExecutor
            from oci_executor.backends.podman import runtime_dir_problem

            def where():
                import os
                return os.path.exists("/run/.containerenv")

            facts = {"problem": runtime_dir_problem()}
            try:
                out = OCIExecutor(backend="auto", image=PARAMS["image"], reuse="never").run_sync(where, [], {}, {})
                facts["in_container"] = out.load_value()
            except Exception as exc:
                facts["error"] = f"{type(exc).__name__}: {exc}"
            emit(facts)
            """,
            env={"XDG_RUNTIME_DIR": foreign},
            params={"image": image},
        )
    finally:
        os.rmdir(foreign)
    assert "belongs to root (uid 0), not to you" in facts["problem"]
    if "error" in facts:  # the cause first, then what auto did
        assert facts["error"].startswith(
            f"EngineUnavailableError: XDG_RUNTIME_DIR={foreign} belongs to root"
        ), facts
        assert "(backend='auto' chose podman" in facts["error"]
    else:
        assert facts["in_container"] is True, "auto ran the task on the host"


def test_without_runtime_dir_the_users_own_socket_is_found(user: RootlessUser, image: str) -> None:
    facts = user.python_json(
        """
        from oci_executor import OCIExecutor
        from oci_executor.backends.podman import default_address, runtime_dir_problem

        def where():
            import os
            return os.path.exists("/run/.containerenv")

        out = OCIExecutor(backend="auto", image=PARAMS["image"], reuse="never").run_sync(where, [], {}, {})
        emit({"address": default_address(), "problem": runtime_dir_problem(), "in_container": out.load_value()})
        """,
        env={"XDG_RUNTIME_DIR": None},
        params={"image": image},
    )
    assert facts["address"] == user.socket_url  # /run/user/UID/podman/podman.sock, as Podman uses it
    assert facts["in_container"] is True
    assert "XDG_RUNTIME_DIR is not set" in facts["problem"]


def test_vfs_storage_is_detected_with_the_fix(user: RootlessUser) -> None:
    """A store on the vfs driver (as a fresh Debian user gets) logs one warning with the fix."""
    # A scratch store for this process alone: its own config (vfs) and data folders.
    folder = user.mkdtemp("vfs-")
    user.run(["mkdir", "-p", f"{folder}/config/containers", f"{folder}/data"])
    conf = f"{folder}/config/containers/storage.conf"
    with open(conf, "w", encoding="utf-8") as handle:
        handle.write('[storage]\ndriver = "vfs"\n')
    user.chown(conf)
    runtime_dir = user.mkdtemp("runtime-", mode=0o700)
    facts = user.python_json(
        """
        import logging
        from oci_executor.backend import BackendConfig
        from oci_executor.backends.podman import PodmanBackend

        records = []
        handler = logging.Handler()
        handler.emit = lambda record: records.append(record.getMessage())
        logging.getLogger("oci_executor").addHandler(handler)
        backend = PodmanBackend(BackendConfig())
        try:
            backend.client()
            backend.client()
            emit({"transient": backend.transient_service, "warnings": records})
        finally:
            backend.close()
        """,
        env={
            "XDG_RUNTIME_DIR": runtime_dir,
            "XDG_CONFIG_HOME": f"{folder}/config",
            "XDG_DATA_HOME": f"{folder}/data",
        },
    )
    assert facts["transient"] is True
    assert len(facts["warnings"]) == 1, facts  # once, not per call
    warning = facts["warnings"][0]
    assert "vfs storage driver" in warning and f"{folder}/data/containers/storage" in warning
    assert 'driver = "overlay"' in warning and "podman system reset" in warning


TRANSIENT_DRIVER = """
import sys
from oci_executor import OCIExecutor
def add(x, y):
    return x + y
ex = OCIExecutor(backend="podman", image=sys.argv[1], keep_warm=600)
ex.run_sync(add, [1, 2], {}, {"dispatch_id": sys.argv[2], "node_id": 0})
print("ran", flush=True)
import time
time.sleep(600)
"""


def test_no_transient_service_outlives_a_killed_driver(user: RootlessUser, image: str) -> None:
    """SIGKILL a driver that started a transient service: the service goes too (idle timeout)."""
    from oci_executor.backends.podman import SERVICE_IDLE_SECONDS

    runtime_dir = user.mkdtemp("runtime-", mode=0o700)  # no socket here: a transient service
    dispatch_id = f"rootless-transient-kill-{uuid.uuid4().hex[:8]}"
    script = os.path.join(user.workdir, f"driver-{dispatch_id}.py")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(TRANSIENT_DRIVER)
    user.chown(script)
    proc = user.spawn([user.python, script, image, dispatch_id], env={"XDG_RUNTIME_DIR": runtime_dir})

    def services() -> set[str]:
        """Sockets of the transient services in our runtime dir (rootless Podman shows two
        processes per service: itself and its re-exec in the user namespace)."""
        return {line.split()[-1] for line in user.service_processes() if runtime_dir in line}

    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ran"
        assert len(services()) == 1  # one transient service, serving the warm container
        os.killpg(proc.pid, signal.SIGKILL)  # the driver; the service is in a session of its own
        proc.wait()
        deadline = time.monotonic() + SERVICE_IDLE_SECONDS + 15
        while services() and time.monotonic() < deadline:
            time.sleep(1)
        assert services() == set(), "the transient service outlived its killed driver"
        assert _ours(user, dispatch_id) == []  # and its warm container went first
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        # A failed run must not leave the service writing into the folder the fixture removes.
        subprocess.run(
            ["pkill", "-KILL", "-u", user.name, "-f", f"system service.*{runtime_dir}"], check=False
        )
        os.unlink(script)
