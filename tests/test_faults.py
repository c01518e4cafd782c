"""Faults and hostile input: what a hostile or unlucky task cannot do to the host."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from oci_executor.covalent.wrapper import transportable
from oci_executor.errors import ConfigurationError, EngineUnavailableError, RunnerError
from tests import engines, tasks
from tests.conftest import Target

STATE_DIR = "/run/oci-executor"  # where scripts/setup-engines.sh keeps its pid files
SETUP_SCRIPT = str(Path(__file__).resolve().parent.parent / "scripts" / "setup-engines.sh")

META = {"dispatch_id": "faults", "node_id": 0}


@pytest.mark.parametrize("how", ["pickle", "truncated", "oversized", "notjson"])
def test_forged_result_runs_no_code_on_the_host(target: Target, how: str) -> None:
    """The task writes a forged result into its result pipe and into the runner's channel."""
    marker = f"/tmp/oci-forged-{uuid.uuid4().hex}"
    if how == "pickle":
        # A well-formed record may pass (its value then stays raw bytes on the host, for
        # Covalent's client to deserialize: it is the user's own task's output), or clash with
        # the copy the task also wrote into the channel (a RunnerError): never code on the host.
        try:
            outcome = target.executor().run_sync(tasks.forge_result, [marker, how], {}, META)
        except RunnerError as exc:
            assert "result could not be read" in str(exc)
        else:
            assert outcome.ok
            assert isinstance(outcome.value, (bytes, bytearray))
            assert transportable(outcome).get_serialized()
    else:
        with pytest.raises(RunnerError, match="result could not be read"):
            target.executor().run_sync(tasks.forge_result, [marker, how], {}, META)
    assert not os.path.exists(marker), "a forged result ran code on the host"


# -- a silent engine, and an engine that dies mid-task -----------------------------------


@pytest.fixture
def silent_engine() -> Iterator[str]:
    """A listener on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


@pytest.mark.parametrize("backend", ["docker", "podman"])
def test_a_silent_engine_fails_fast_naming_its_address(silent_engine: str, backend: str) -> None:
    from oci_executor import OCIExecutor

    executor = OCIExecutor(backend=backend, address=silent_engine, image=engines.test_image())
    start = time.monotonic()
    with pytest.raises(EngineUnavailableError) as info:
        executor.run_sync(tasks.add, [1, 2], {}, META)
    assert time.monotonic() - start < 30
    assert silent_engine.split("://")[1] in str(info.value)
    assert "does not answer" in str(info.value)


def test_rootful_podman_dying_mid_task_is_named(podman_target: Target) -> None:
    """Kill the rootful Podman service during a task, then restart it as the setup script does."""
    engine_target = podman_target
    pid_file = os.path.join(STATE_DIR, "podman-rootful.pid")
    with open(pid_file, encoding="ascii") as handle:
        service = int(handle.read().strip())

    def kill_soon() -> None:
        time.sleep(3)
        os.kill(service, signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    try:
        with pytest.raises(EngineUnavailableError) as info:
            engine_target.executor().run_sync(tasks.sleep_then, [60, 1], {}, META)
    finally:
        killer.join()
        subprocess.run(["bash", SETUP_SCRIPT], check=True, capture_output=True)
    message = str(info.value)
    assert "went away while the task ran" in message
    assert "the task did not finish" in message
    assert engine_target.address in message
    assert "Start the Podman service" in message


# -- cancel, bad options, big output, daemons, posture -------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image": ""}, "image='' is empty"),
        ({"image": "Bad Image"}, "not a valid image reference"),
        ({"backend": "nope"}, "unknown backend 'nope'"),
        ({"env": {"A": None}}, r"env\['A'\] is None"),
        ({"time_limit": -5}, "time_limit=-5 is negative"),
        ({"labels": {"k": None}}, r"labels\['k'\] is None"),
        ({"keep_warm": -1}, "keep_warm=-1 must be"),
        ({"max_containers": "many"}, "max_containers='many'"),
        ({"reuse": "always"}, "reuse='always'"),
    ],
)
@pytest.mark.parametrize("backend", ["local", "docker", "podman"])
def test_bad_options_fail_at_construction_naming_the_fix(
    options: dict[str, Any], message: str, backend: str
) -> None:
    from oci_executor import OCIExecutor

    # An address nobody listens on: the error must come before any engine is contacted.
    options = {"backend": backend, "address": "unix:///nonexistent/engine.sock", **options}
    with pytest.raises(ConfigurationError, match=message) as info:
        OCIExecutor(**options)
    frames = [frame.filename for frame in traceback.extract_tb(info.value.__traceback__)]
    assert not [f for f in frames if "/docker/" in f or "/podman/" in f], frames


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("image", "Bad Image", "not a valid image reference"),
        ("backend", "nope", "unknown backend 'nope'"),
        ("env", {"A": ""}, None),
        ("keep_warm", -3, "keep_warm=-3"),
    ],
)
def test_bad_values_in_covalent_conf_fail_the_same_way(setting: str, value: Any, message: str | None) -> None:
    import copy

    import covalent as ct
    from covalent._shared_files.config import get_config

    from oci_executor import OCIExecutor

    before = copy.deepcopy(get_config(f"executors.oci.{setting}"))
    ct.set_config({f"executors.oci.{setting}": value})
    try:
        if message is None:
            assert OCIExecutor().env == {"A": ""}
        else:
            with pytest.raises(ConfigurationError, match=message):
                OCIExecutor()
    finally:
        ct.set_config({f"executors.oci.{setting}": before})


def print_a_lot(megabytes: int) -> int:
    line = "x" * 1023 + "\n"
    for _ in range(megabytes * 1024):
        sys.stdout.write(line)
    return megabytes


def test_50_mb_of_stdout_arrives_whole(target: Target) -> None:
    outcome = target.executor().run_sync(print_a_lot, [50], {}, META)
    assert outcome.load_value() == 50
    assert len(outcome.stdout) == 50 * 1024 * 1024
    assert set(outcome.stdout) == {"x", "\n"}


def leave_a_daemon() -> str:
    import subprocess

    subprocess.Popen(["sleep", "1000"], start_new_session=True, stdout=subprocess.DEVNULL)
    if os.fork() == 0:  # a forked child that keeps the task's pipes open
        time.sleep(1000)
        os._exit(0)
    return "left"


def count_sleepers() -> int:
    return sum(
        1
        for pid in os.listdir("/proc")
        if pid.isdigit() and _cmdline(pid).startswith(("sleep", "python")) and "1000" in _cmdline(pid)
    )


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_a_task_that_leaves_a_daemon_behind(engine_target: Target) -> None:
    """The result comes back at once, the next task finds no daemon, the container still goes."""
    executor = engine_target.executor()
    start = time.monotonic()
    outcome = executor.run_sync(leave_a_daemon, [], {}, META)
    assert outcome.load_value() == "left"
    assert time.monotonic() - start < 30
    after = executor.run_sync(count_sleepers, [], {}, META)
    assert after.container_id == outcome.container_id
    assert after.load_value() == 0


def inspect_running(engine_target: Target, seconds: float) -> dict[str, Any]:
    """The engine's inspect data of the container a running task is in."""
    found: dict[str, Any] = {}

    def on_container(container: Any) -> None:
        found.update(engines.container_attrs(engine_target.backend, engine_target.address, container.id))

    engine_target.executor().run_sync(tasks.sleep_then, [seconds, 1], {}, META, on_container=on_container)
    return found


def test_security_posture(engine_target: Target) -> None:
    """Not privileged, no added capabilities, no engine socket, our labels, auto-remove, no-new-privileges."""
    attrs = inspect_running(engine_target, 0.5)
    host = attrs["HostConfig"]
    assert host.get("Privileged") is False
    assert not host.get("CapAdd")
    mounts = " ".join(str(m.get("Source", "")) for m in attrs.get("Mounts") or [])
    assert "docker.sock" not in mounts and "podman.sock" not in mounts
    assert attrs["Config"]["Labels"]["io.oci-executor.managed"] == "true"
    assert host.get("AutoRemove") is True
    assert any("no-new-privileges" in opt for opt in host.get("SecurityOpt") or []), host.get("SecurityOpt")


def write_outside_tmp() -> dict[str, str]:
    results = {}
    for path in ("/oci-test-file", "/tmp/oci-test-file"):
        try:
            with open(path, "w") as handle:
                handle.write("x")
            results[path] = "written"
        except OSError as exc:
            results[path] = type(exc).__name__
    return results


def test_read_only_root_filesystem(engine_target: Target) -> None:
    outcome = engine_target.executor(read_only=True).run_sync(write_outside_tmp, [], {}, META)
    assert outcome.load_value() == {"/oci-test-file": "OSError", "/tmp/oci-test-file": "written"}


def test_a_container_left_unstarted_is_swept(engine_target: Target) -> None:
    """A driver killed between create and start leaves a container no runner will end: swept."""
    from oci_executor.backend import BackendConfig
    from oci_executor.registry import select_backend

    client = engines._client(engine_target.backend, engine_target.address)
    try:
        orphan = client.containers.create(
            engine_target.image,
            ["true"],
            labels={"io.oci-executor.managed": "true", "io.oci-executor.node-id": "x"},
        )
        backend = select_backend(engine_target.backend, BackendConfig(address=engine_target.address))
        try:
            time.sleep(1.1)
            assert backend.sweep_unstarted(3600) == []  # too young: its driver may be starting it
            assert orphan.id in backend.sweep_unstarted(1.0)
        finally:
            backend.close()
        assert orphan.id not in engines.container_ids(client, "io.oci-executor.managed=true")
    finally:
        client.close()
