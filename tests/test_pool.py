"""Unit tests of the lifecycle and the pool, on the shipped test double (no engine)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from oci_executor import pool, settings
from oci_executor.core import run_task
from oci_executor.errors import ContainerError, PythonVersionMismatchError
from oci_executor.pool import POOL
from oci_executor.task import payload_from_callable
from oci_executor.testing import FakeBackend


def add(x: int, y: int) -> int:
    return x + y


def values(**options: Any) -> dict[str, Any]:
    return settings.parse({**settings.defaults(), "backend": "fake", "image": "fake:1", **options})


def run(backend: FakeBackend, x: int = 1, **options: Any) -> Any:
    return run_task(
        values(**options), payload_from_callable(add, [x, 2], {}), backend=backend, dispatch_id="d"
    )


@pytest.fixture(autouse=True)
def empty_pool() -> Any:
    yield
    POOL.drain()
    assert POOL.stats() == {"live": 0, "idle": 0, "removing": 0}


def test_a_warm_container_serves_the_next_task() -> None:
    backend = FakeBackend()
    first, second = run(backend), run(backend, 5)
    assert first.load_value() == 3 and second.load_value() == 7
    assert first.container_id == second.container_id
    assert [verb for verb, _ in backend.calls].count("create") == 1


def test_reuse_never_removes_each_container() -> None:
    backend = FakeBackend()
    ids = {run(backend, reuse="never").container_id for _ in range(2)}
    assert len(ids) == 2
    deadline = time.monotonic() + 5
    while backend.containers and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.containers == {}


def test_a_runner_near_its_lifetime_is_not_handed_a_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "EXPIRY_MARGIN", 0.5)
    backend = FakeBackend()
    first = run(backend, max_lifetime=1.0)
    time.sleep(0.6)  # now within the margin of its lifetime
    second = run(backend, max_lifetime=1.0)
    assert first.container_id != second.container_id


def test_a_vanished_warm_container_is_replaced() -> None:
    backend = FakeBackend()
    first = run(backend)
    backend.vanish(first.container_id)
    second = run(backend)
    assert second.load_value() == 3
    assert second.container_id != first.container_id


def test_a_failed_start_leaves_nothing_and_frees_the_slot() -> None:
    backend = FakeBackend()
    backend.fail_next("start", ContainerError("the engine dropped"))
    with pytest.raises(ContainerError, match="dropped"):
        run(backend, max_containers=1)
    assert backend.containers == {}
    assert run(backend, max_containers=1).load_value() == 3  # the one slot is free again


def test_a_failed_attach_removes_the_container() -> None:
    backend = FakeBackend()
    backend.fail_next("attach", ContainerError("no attach"))
    with pytest.raises(ContainerError):
        run(backend)
    assert backend.containers == {}
    created = next(subject for verb, subject in backend.calls if verb == "start")
    assert ("remove", created) in backend.calls


def test_a_failure_while_removing_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    backend = FakeBackend()
    run(backend, reuse="never")
    backend.fail_next("remove", ContainerError("engine busy"))
    run(backend, reuse="never")
    POOL.drain()
    assert "engine busy" in caplog.text


def test_python_mismatch_is_reported_and_the_container_removed() -> None:
    backend = FakeBackend(python="3.9")
    with pytest.raises(PythonVersionMismatchError, match="Python 3.9"):
        run(backend)
    assert backend.containers == {}


def test_tasks_beyond_max_containers_wait_their_turn() -> None:
    backend = FakeBackend()
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(run(backend, i, max_containers=1)))
        for i in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.load_value() for r in results) == [2, 3, 4, 5, 6]
    assert len({r.container_id for r in results}) == 1


def test_keep_warm_expiry_removes_idle_containers() -> None:
    backend = FakeBackend()
    run(backend, keep_warm=0.2)
    deadline = time.monotonic() + 5
    while backend.containers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.containers == {}
