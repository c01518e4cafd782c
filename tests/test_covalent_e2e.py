"""End to end through a real Covalent server: the seed's workflow and a failing electron."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests import engines
from tests.conftest import Target

pytestmark = pytest.mark.covalent


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from tests.covalent_server import running_server

    with running_server({"executors.oci.image": engines.test_image()}) as url:
        yield url


def seed_workflow(executor):  # type: ignore[no-untyped-def]
    """The seed document's workflow: add, then multiply."""
    import covalent as ct

    @ct.electron(executor=executor)
    def add(x, y):  # type: ignore[no-untyped-def]
        return x + y

    @ct.electron(executor=executor)
    def multiply(x, y):  # type: ignore[no-untyped-def]
        return x * y

    @ct.lattice
    def workflow(x, y):  # type: ignore[no-untyped-def]
        r1 = add(x, y)
        return multiply(y, r1)

    return workflow


def _dispatch(workflow, *args):  # type: ignore[no-untyped-def]
    import covalent as ct

    dispatch_id = ct.dispatch(workflow)(*args)
    return ct.get_result(dispatch_id, wait=True)


def _assert_seed_result(result) -> None:  # type: ignore[no-untyped-def]
    nodes = [result.get_node_result(i) for i in (0, 3, 5)]
    details = [(n["node_name"], n["status"], n["error"], n["stderr"]) for n in nodes]
    assert str(result.status) == "COMPLETED", f"{result.error}: {details}"
    assert result.result == 15
    text = str(result)
    assert "status: COMPLETED" in text
    assert "result: 15" in text
    assert "add(0): 5" in text
    assert "multiply(3): 15" in text


def test_seed_workflow_by_plugin_name(server: str) -> None:
    """executor="oci", configured in covalent.conf with the test image and backend="auto"."""
    if engines.auto_pick() == "local" and (shutil.which("podman") or shutil.which("docker")):
        engines.unusable(
            f"auto picks an installed engine, but none holds {engines.test_image()} for this user"
        )
    _assert_seed_result(_dispatch(seed_workflow("oci"), 2, 3))


def test_seed_workflow_local_instance(server: str) -> None:
    from oci_executor import OCIExecutor

    _assert_seed_result(_dispatch(seed_workflow(OCIExecutor(backend="local")), 2, 3))


def test_seed_workflow_on_engine(server: str, engine_target: Target) -> None:
    result = _dispatch(seed_workflow(engine_target.executor()), 2, 3)
    _assert_seed_result(result)


def test_failing_electron_ends_failed(server: str) -> None:
    import covalent as ct

    from oci_executor import OCIExecutor

    @ct.electron(executor=OCIExecutor(backend="local"))
    def explode(x):  # type: ignore[no-untyped-def]
        print("about to fail")
        raise KeyError(f"missing key {x}")

    @ct.lattice
    def flow(x):  # type: ignore[no-untyped-def]
        return explode(x)

    result = _dispatch(flow, "alpha")
    assert str(result.status) == "FAILED"
    node = result.get_node_result(0)
    assert str(node["status"]) == "FAILED"
    assert "KeyError" in node["stderr"]
    assert "missing key alpha" in node["stderr"]
    assert "about to fail" in node["stdout"]
    assert "explode" in str(result.error)


def test_forged_result_runs_no_code_on_the_server(server: str, server_target: Target) -> None:
    """A task that forges its result (a pickle that would create a file) cannot run code here."""
    import uuid

    import covalent as ct

    from tests import tasks

    marker = f"/tmp/oci-forged-{uuid.uuid4().hex}"
    forge = ct.electron(tasks.forge_result, executor=server_target.executor())

    # The lattice returns none of the node's output: Covalent's own post-processing would
    # deserialize a returned output on the server, by design, whatever the executor.
    @ct.lattice
    def flow(path):  # type: ignore[no-untyped-def]
        forge(path)
        return "done"

    dispatch_id = ct.dispatch(flow)(marker)
    deadline = time.monotonic() + 120
    while (status := str(ct.get_result(dispatch_id, status_only=True)["status"])) not in (
        "COMPLETED",
        "FAILED",
    ):
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert not os.path.exists(marker), "a forged result ran code on the Covalent server"


def _node(result, index: int = 0) -> dict:  # type: ignore[no-untyped-def]
    return result.get_node_result(index)


def test_time_limit_fails_the_node_naming_the_limit(server: str, server_target: Target) -> None:
    import covalent as ct

    @ct.electron(executor=server_target.executor(time_limit=2))
    def sleepy():  # type: ignore[no-untyped-def]
        import time

        print("before the limit", flush=True)
        time.sleep(60)

    @ct.lattice
    def flow():  # type: ignore[no-untyped-def]
        return sleepy()

    start = time.monotonic()
    result = _dispatch(flow)
    assert time.monotonic() - start < 30
    assert str(result.status) == "FAILED"
    node = _node(result)
    assert str(node["status"]) == "FAILED"
    # As for a task's own exception, the error ends the node's stderr, after what it printed.
    assert "TaskTimeoutError: the task ran over its time_limit of 2 s" in node["stderr"]
    assert node["stdout"] == "before the limit\n"  # printed before the kill, still delivered


def slow_workflow(executor):  # type: ignore[no-untyped-def]
    """A lattice whose one electron sleeps for two minutes: something to cancel."""
    import covalent as ct

    @ct.electron(executor=executor)
    def slow():  # type: ignore[no-untyped-def]
        import time

        time.sleep(120)
        return 1

    @ct.lattice
    def flow():  # type: ignore[no-untyped-def]
        return slow()

    return flow


def test_cancel_kills_the_container_and_ends_cancelled(server: str, engine_target: Target) -> None:
    import covalent as ct

    dispatch_id = ct.dispatch(slow_workflow(engine_target.executor()))()
    client = engines._client(engine_target.backend, engine_target.address)
    label = f"io.oci-executor.dispatch-id={dispatch_id}"

    def ours() -> list[str]:
        return engines.container_ids(client, label)

    try:
        deadline = time.monotonic() + 60
        while not ours():
            assert time.monotonic() < deadline, "the task's container never appeared"
            time.sleep(0.2)
        time.sleep(1.0)  # the job handle is stored right after the container's Python check
        ct.cancel(dispatch_id)
        cancelled_at = time.monotonic()
        while ours() and time.monotonic() - cancelled_at < 10:
            time.sleep(0.05)
        elapsed = time.monotonic() - cancelled_at
        assert ours() == [], "the container survived the cancel"
        assert elapsed < 2.0, f"the container took {elapsed:.2f} s to go"
    finally:
        client.close()
    result = ct.get_result(dispatch_id, wait=True)
    assert str(_node(result)["status"]) == "CANCELLED"
    assert str(result.status) == "CANCELLED"


def test_main_job_prints_the_seed_result(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's main job against the running server, on the backend auto would pick."""
    from oci_executor import cli

    expected = engines.auto_pick()  # the demo probes the same way
    if engines.in_ci():
        assert expected == "podman"
    assert cli.main(["demo"]) == 0  # the default image cannot be pulled here: it falls back to the test image
    out = capsys.readouterr()
    assert "Lattice Result" in out.out
    assert "status: COMPLETED" in out.out
    assert "result: 15" in out.out
    assert f"Backend: {expected}," in out.err


@pytest.mark.parametrize("delay", [0.0, 0.5, 2.0])
def test_cancel_soon_after_dispatch_ends_cancelled(server: str, engine_target: Target, delay: float) -> None:
    """Cancelled before, while or after its container starts: CANCELLED, and nothing left."""
    import covalent as ct

    dispatch_id = ct.dispatch(slow_workflow(engine_target.executor()))()
    time.sleep(delay)
    ct.cancel(dispatch_id)
    result = ct.get_result(dispatch_id, wait=True)
    node = _node(result)
    assert str(node["status"]) == "CANCELLED", (node["status"], node["error"])
    assert str(result.status) == "CANCELLED"


def test_a_silent_engine_fails_the_node_within_30_s(server: str) -> None:
    import covalent as ct

    from oci_executor import OCIExecutor

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # accepts (the kernel does) and never answers
    address = f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    try:

        @ct.electron(executor=OCIExecutor(backend="docker", address=address, image=engines.test_image()))
        def add(x, y):  # type: ignore[no-untyped-def]
            return x + y

        @ct.lattice
        def flow():  # type: ignore[no-untyped-def]
            return add(1, 2)

        start = time.monotonic()
        result = _dispatch(flow)
        assert time.monotonic() - start < 30
        node = _node(result)
        assert str(node["status"]) == "FAILED"
        assert address.split("://")[1] in str(node["error"])
        assert str(node["error"]).startswith("EngineUnavailableError: ")  # the class, as the docs show
    finally:
        listener.close()


def test_20_concurrent_electrons_with_2_mb_arguments(server: str, engine_target: Target) -> None:
    """A fan-out of 20 electrons, each with its own 2 MB argument: all correct, nothing left."""
    import hashlib

    import covalent as ct

    blobs = [os.urandom(2 * 1024 * 1024) for _ in range(20)]

    @ct.electron(executor=engine_target.executor(max_containers=3))
    def digest(data):  # type: ignore[no-untyped-def]
        import hashlib

        return hashlib.sha256(data).hexdigest()

    @ct.lattice
    def fan_out(items):  # type: ignore[no-untyped-def]
        return [digest(item) for item in items]

    result = _dispatch(fan_out, blobs)
    assert str(result.status) == "COMPLETED", result.error
    assert result.result == [hashlib.sha256(b).hexdigest() for b in blobs]


def test_a_pull_is_logged_in_the_server_log(server: str) -> None:
    """Pulling an image for a task shows in the Covalent server's log, layer by layer."""
    from covalent._shared_files.config import get_config

    from oci_executor import OCIExecutor

    target_id = "docker"
    address = engines.require_engine(target_id)
    engines.remove_image(target_id, address, engines.PULL_PROBE)
    logfile = os.path.join(get_config("user_interface.log_dir"), "covalent_ui.log")
    try:
        executor = OCIExecutor(image=engines.PULL_PROBE, backend=target_id, address=address, keep_warm=2)
        _assert_seed_result(_dispatch(seed_workflow(executor), 2, 3))
    finally:
        engines.remove_image(target_id, address, engines.PULL_PROBE)
    with open(logfile, errors="replace") as f:
        text = f.read()
    assert f"oci_executor.progress: pulling image {engines.PULL_PROBE} into the Docker image store" in text
    assert f"oci_executor.progress: pulled image {engines.PULL_PROBE} in" in text
    assert "pull complete" in text


README_EXECUTOR = 'OCIExecutor(image="python:3.11-slim", '


README_ENVIRONMENTS = os.path.join(tempfile.gettempdir(), f"oci-readme-envs-{os.getpid()}")
"""One store for the example on every engine (an image ID shared by two engines shares it)."""


@pytest.fixture(scope="module", autouse=True)
def _remove_readme_environments() -> Iterator[None]:
    yield
    shutil.rmtree(README_ENVIRONMENTS, ignore_errors=True)


def test_the_readme_example_prints_its_result(server: str, engine_target: Target, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The README's usage example, run as a script against a real server, prints what it says."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import KEEP_WARM

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    example = re.search(r"^```python\n(.*?)^```$", readme, re.M | re.S)
    assert example and README_EXECUTOR in example.group(1), (
        "the README's first example changed: update this test"
    )
    promised = re.search(r"print\(.*\)\s*#\s*(\S+)\s*$", example.group(1), re.M)
    assert promised, "the example's print line says what it prints in a comment"
    # Only the image and the engine change: the test engines have the test image, not python:X.Y-slim.
    executor = (
        f"OCIExecutor(image={engine_target.image!r}, backend={engine_target.backend!r}, "
        f"address={engine_target.address!r}, keep_warm={KEEP_WARM}, "
    )
    script = tmp_path / "readme_example.py"
    script.write_text(example.group(1).replace(README_EXECUTOR, executor), encoding="utf-8")
    # Its packages come from the host's pip configuration, into a store the rootless user can read.
    env = {**os.environ, "OCI_EXECUTOR_ENV_DIR": README_ENVIRONMENTS}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == promised.group(1)


# -- remote engines over ssh (the test sshd) ----------------------------------------------------


def test_seed_workflow_on_remote_engine(server: str, remote_target: Target) -> None:
    _assert_seed_result(_dispatch(seed_workflow(remote_target.executor()), 2, 3))


def _wait_for_dispatch_container(target: Target, dispatch_id: str) -> list[str]:
    client = engines._client(target.backend, target.local_address)
    try:
        deadline = time.monotonic() + 60
        while not (found := engines.container_ids(client, f"io.oci-executor.dispatch-id={dispatch_id}")):
            assert time.monotonic() < deadline, "the task's container never appeared"
            time.sleep(0.2)
        return found
    finally:
        client.close()


def _gone(target: Target, ids: list[str], within: float) -> bool:
    deadline = time.monotonic() + within
    while set(ids) & set(target.our_containers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not set(ids) & set(target.our_containers())


def test_cancel_reaches_the_remote_engine(server: str, remote_target: Target) -> None:
    """The server process cancels through the job handle's ssh address and key."""
    import covalent as ct

    dispatch_id = ct.dispatch(slow_workflow(remote_target.executor()))()
    ids = _wait_for_dispatch_container(remote_target, dispatch_id)
    time.sleep(1.0)  # the job handle is stored right after the container's Python check
    ct.cancel(dispatch_id)
    assert _gone(remote_target, ids, 30), "the container survived the cancel"
    result = ct.get_result(dispatch_id, wait=True)
    assert str(_node(result)["status"]) == "CANCELLED"


def _server_tunnels(login: str) -> list[int]:
    """The ssh processes of the Covalent server's tunnels to ``login`` (its HOME is ours)."""
    import glob

    home = f"HOME={os.environ['HOME']}".encode()
    found = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        pid = int(path.split("/")[2])
        try:
            with open(path, "rb") as handle:
                argv = handle.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as handle:
                env = handle.read().split(b"\0")
        except OSError:
            continue
        if argv[:1] == [b"ssh"] and login.encode() in argv and b"-L" in argv and home in env:
            found.append(pid)
    return found


def test_losing_the_ssh_link_fails_the_node_naming_the_host(server: str, remote_target: Target) -> None:
    import signal

    import covalent as ct

    dispatch_id = ct.dispatch(slow_workflow(remote_target.executor(idle_timeout=10)))()
    ids = _wait_for_dispatch_container(remote_target, dispatch_id)
    time.sleep(1.0)
    login = f"{engines.ssh_user(remote_target.id)}@127.0.0.1"
    tunnels = _server_tunnels(login)
    assert tunnels, "no ssh tunnel of the server's found"
    for pid in tunnels:
        os.kill(pid, signal.SIGKILL)
    result = ct.get_result(dispatch_id, wait=True)
    node = _node(result)
    assert str(node["status"]) == "FAILED"
    assert "SshConnectionError" in str(node["error"]) and "ssh link to" in str(node["error"])
    assert "127.0.0.1" in str(node["error"])
    assert _gone(remote_target, ids, 10 + 30), "the container outlived the link and its idle_timeout"


def test_live_output_is_in_the_server_log_and_logs_f_before_the_task_ends(
    server: str, server_target: Target
) -> None:
    """A task prints, reports progress, sleeps, prints: its first line reaches the server's log
    and ``oci-executor logs -f`` while it sleeps; at the end the node's streams are whole."""
    import queue
    import subprocess
    import sys
    import threading

    import covalent as ct
    from covalent._shared_files.config import get_config

    @ct.electron(executor=server_target.executor())
    def talk():  # type: ignore[no-untyped-def]
        import sys
        import time

        import oci_executor.task

        print("first line")
        oci_executor.task.progress(0.5, "half way")
        time.sleep(6)
        print("a warning", file=sys.stderr)
        print("last line")
        return "done"

    @ct.lattice
    def flow():  # type: ignore[no-untyped-def]
        return talk()

    logfile = os.path.join(get_config("user_interface.log_dir"), "covalent_ui.log")
    dispatch_id = ct.dispatch(flow)()
    follower = subprocess.Popen(
        [sys.executable, "-m", "oci_executor.cli", "logs", dispatch_id, "0", "-f"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout or ()], daemon=True).start()
    tag = f"[dispatch {dispatch_id} node 0 (talk)"
    try:
        deadline = time.monotonic() + 120
        followed: list[str] = []
        while not any("first line" in line for line in followed):
            followed.append(lines.get(timeout=max(deadline - time.monotonic(), 0.1)))
        assert str(ct.get_result(dispatch_id, status_only=True)["status"]) != "COMPLETED"
        assert not any("last line" in line for line in followed), followed
        while f"{tag} stdout] first line" not in (text := open(logfile, errors="replace").read()):  # noqa: SIM115
            assert time.monotonic() < deadline, "the first line never reached the server's log"
            time.sleep(0.1)
        assert f"{tag} progress] 50% half way" in text
        assert f"{tag} stdout] last line" not in text, "the task should still be sleeping"
        assert follower.wait(timeout=120) == 0  # `logs -f` with a node ends with the node's task
    finally:
        follower.kill()
    result = ct.get_result(dispatch_id, wait=True)
    assert result.result == "done"
    node = _node(result)
    assert (node["stdout"], node["stderr"]) == ("first line\nlast line\n", "a warning\n")
    while not lines.empty():
        followed.append(lines.get())
    shown = [line.split("| ", 1)[1].rstrip("\n") for line in followed]
    # Each stream in order (stdout and stderr are two pipes: lines printed on both within the
    # same 50 ms may come in either order).
    assert [line for line in shown if line != "a warning"] == [
        "first line",
        "50% half way",
        "last line",
        "task ended: ok",
    ]
    assert "a warning" in shown
