"""Chaos during a 50-electron fan-out, through a real Covalent server, on engines of our own.

For each fault (the engine restarted or its service killed and started again, the engine
paused with SIGSTOP for 30 s, the Covalent server killed with SIGKILL and started again):
every electron completes with its value or ends FAILED with a message naming the engine and
what happened, within BOUND seconds of the fault; nothing of ours is left on the engine; the
next dispatch works without anything restarted by hand. The engines are the tests' own
(tests/own_engines.py), never the shared ones.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests import engines, own_engines, tasks
from tests.own_engines import OwnEngine

pytestmark = [pytest.mark.covalent, pytest.mark.chaos, pytest.mark.timeout(600)]

FAN_OUT = 50
TASK_SECONDS = 1.0
PAUSE = 30.0
BOUND = 180.0
"""Seconds from the fault to the dispatch's end: the engine API timeout (120 s) and a margin."""
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
HAPPENED = (
    "went away while the task ran",
    "does not answer",
    "ended while the task ran",
    "ended before it took the task",
)


@pytest.fixture(scope="module")
def own() -> Iterator[dict[str, OwnEngine]]:
    import os

    if os.geteuid() != 0:
        engines.unusable("the chaos tests start engines of their own: run them as root")
    started: dict[str, OwnEngine] = {}
    try:
        yield started
    finally:
        own_engines.stop_all()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from tests.covalent_server import running_server

    with running_server({"executors.oci.image": engines.test_image()}) as url:
        yield url


def _engine(own: dict[str, OwnEngine], target_id: str) -> OwnEngine:
    if target_id not in own:
        own[target_id] = own_engines.own_engine(target_id)
    engine = own[target_id]
    if not engine.pids():
        engine.start()
    return engine


def _executor(engine: OwnEngine):  # type: ignore[no-untyped-def]
    from oci_executor import OCIExecutor

    return OCIExecutor(
        backend=engine.backend,
        address=engine.address,
        image=engines.test_image(),
        network="none",
        max_containers=4,
        keep_warm=2.0,
    )


def _fan_out(executor):  # type: ignore[no-untyped-def]
    import covalent as ct

    work = ct.electron(tasks.sleep_then, executor=executor)

    @ct.lattice
    def fan_out(n):  # type: ignore[no-untyped-def]
        return [work(TASK_SECONDS, i) for i in range(n)]

    return fan_out


def _status(dispatch_id: str) -> str:
    import covalent as ct

    return str(ct.get_result(dispatch_id, status_only=True)["status"])


def _wait_end(dispatch_id: str, bound: float) -> tuple[str, float]:
    start = time.monotonic()
    while (status := _status(dispatch_id)) not in TERMINAL:
        assert time.monotonic() - start < bound, f"the dispatch still {status} {bound:g} s after the fault"
        time.sleep(1)
    return status, time.monotonic() - start


def _electrons(dispatch_id: str) -> list[dict[str, Any]]:
    import covalent as ct

    result = ct.get_result(dispatch_id)
    nodes = [result.get_node_result(i) for i in range(len(result.lattice.transport_graph._graph.nodes))]
    return [n for n in nodes if n["node_name"] == "sleep_then"]


def _running_on(engine: OwnEngine, timeout: float = 120.0) -> None:
    """Wait until the fan-out has containers on the engine and a few tasks done."""
    deadline = time.monotonic() + timeout
    while not engine.ours():
        assert time.monotonic() < deadline, "the fan-out never started a container"
        time.sleep(0.2)
    time.sleep(3 * TASK_SECONDS)


def _left(engine: OwnEngine, wait: float = 30.0) -> list[str]:
    deadline = time.monotonic() + wait
    while (left := engine.ours()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _check_electrons(dispatch_id: str, engine: OwnEngine) -> dict[str, int]:
    electrons = _electrons(dispatch_id)
    assert len(electrons) == FAN_OUT
    counts = {"COMPLETED": 0, "FAILED": 0}
    where = engine.address.split("://", 1)[1]
    for node in electrons:
        status = str(node["status"])
        assert status in counts, f"electron {node['node_id']} ended {status}"
        counts[status] += 1
        if status == "COMPLETED":
            value = node["output"].get_deserialized()
            assert isinstance(value, int) and 0 <= value < FAN_OUT
            continue
        message = f"{node['error']}\n{node['stderr']}"
        assert where in message, f"a FAILED electron does not name the engine at {where}: {message}"
        assert any(words in message for words in HAPPENED), (
            f"a FAILED electron does not say what happened: {message}"
        )
    return counts


def _next_dispatch_works(engine: OwnEngine) -> None:
    import covalent as ct

    work = ct.electron(tasks.add, executor=_executor(engine))

    @ct.lattice
    def small(x):  # type: ignore[no-untyped-def]
        return [work(x, i) for i in range(3)]

    result = ct.get_result(ct.dispatch(small)(10), wait=True)
    assert str(result.status) == "COMPLETED", result.error
    assert result.result == [10, 11, 12]


def _restart(engine: OwnEngine) -> None:
    # dockerd is restarted as an init script would (SIGTERM); a Podman service is killed.
    engine.stop(signal.SIGTERM if engine.backend == "docker" else signal.SIGKILL)
    engine.start()


def _pause(engine: OwnEngine) -> None:
    engine.send(signal.SIGSTOP)
    try:
        time.sleep(PAUSE)
    finally:
        engine.send(signal.SIGCONT)


FAULTS = {"restart": _restart, "pause": _pause}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("target_id", ["docker", "podman", "podman-rootless"])
def test_a_fault_during_a_fan_out(server: str, own: dict[str, OwnEngine], target_id: str, fault: str) -> None:
    import covalent as ct

    engine = _engine(own, target_id)
    dispatch_id = ct.dispatch(_fan_out(_executor(engine)))(FAN_OUT)
    _running_on(engine)
    FAULTS[fault](engine)
    status, took = _wait_end(dispatch_id, BOUND)
    counts = _check_electrons(dispatch_id, engine)
    print(f"{target_id} {fault}: dispatch {status} {took:.0f} s after the fault; electrons {counts}")
    assert not _left(engine), "containers of ours left on the engine"
    _next_dispatch_works(engine)
    assert not _left(engine)


def test_the_server_killed_during_a_fan_out(server: str, own: dict[str, OwnEngine]) -> None:
    """SIGKILL the Covalent server mid fan-out and start it again: the containers go, the
    interrupted dispatch shows what Covalent stored, and the next dispatch works."""
    import covalent as ct

    from tests.covalent_server import kill_and_start_again

    engine = _engine(own, "docker")
    dispatch_id = ct.dispatch(_fan_out(_executor(engine)))(FAN_OUT)
    _running_on(engine)
    killed = time.monotonic()
    kill_and_start_again(server)
    assert not _left(engine, wait=30.0), "containers of the killed server left on the engine"
    print(f"containers gone {time.monotonic() - killed:.1f} s after the kill (server restart included)")
    time.sleep(5)
    status = _status(dispatch_id)
    electrons = _electrons(dispatch_id)
    shown: dict[str, int] = {}
    for node in electrons:
        shown[str(node["status"])] = shown.get(str(node["status"]), 0) + 1
    print(f"after the restart Covalent shows the interrupted dispatch {status}, electrons {shown}")
    completed = [n for n in electrons if str(n["status"]) == "COMPLETED"]
    assert all(0 <= n["output"].get_deserialized() < FAN_OUT for n in completed)
    _next_dispatch_works(engine)
    assert not _left(engine)
