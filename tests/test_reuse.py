"""Warm containers on real engines: who shares a container, who never does, and what survives."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from typing import Any

import pytest

from oci_executor import protocol
from oci_executor.errors import OutOfMemoryError, RunnerError, TaskTimeoutError
from oci_executor.pool import POOL
from tests import engines, tasks
from tests.conftest import Target


def _meta(dispatch: str = "reuse", node: int = 0) -> dict[str, Any]:
    return {"dispatch_id": dispatch, "node_id": node}


def write_then_read(path: str, text: str) -> dict[str, str]:
    """Write ``text`` to ``path`` unless it exists; return what was there and where we ran."""
    import socket

    before = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            before = handle.read()
    else:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    return {"before": before, "hostname": socket.gethostname(), "pid": str(os.getpid())}


def test_tasks_of_one_dispatch_share_a_warm_container(target: Target) -> None:
    executor = target.executor()
    path = f"/tmp/oci-reuse-{uuid.uuid4().hex}" if target.is_engine else f"reuse-{uuid.uuid4().hex}"
    first = executor.run_sync(write_then_read, [path, "from the first task"], {}, _meta(node=1))
    second = executor.run_sync(write_then_read, [path, "from the second task"], {}, _meta(node=2))
    one, two = first.load_value(), second.load_value()
    assert first.container_id == second.container_id
    assert one["hostname"] == two["hostname"]
    assert two["before"] == "from the first task"  # a file the first task wrote is there
    assert one["pid"] != two["pid"]  # but each task ran in a fresh process
    if not target.is_engine:
        os.remove(os.path.join(first.container_id, path))


def test_dispatches_do_not_share_containers(target: Target) -> None:
    executor = target.executor()
    a = executor.run_sync(tasks.add, [1, 2], {}, _meta("dispatch-a"))
    b = executor.run_sync(tasks.add, [1, 2], {}, _meta("dispatch-b"))
    assert a.container_id != b.container_id


def test_reuse_process_shares_across_dispatches(target: Target) -> None:
    executor = target.executor(reuse="process")
    a = executor.run_sync(tasks.add, [1, 2], {}, _meta("dispatch-a"))
    b = executor.run_sync(tasks.add, [1, 2], {}, _meta("dispatch-b"))
    assert a.container_id == b.container_id


def test_reuse_never_gives_a_fresh_container_per_task(target: Target) -> None:
    executor = target.executor(reuse="never")
    ids = {executor.run_sync(tasks.add, [i, 1], {}, _meta(node=i)).container_id for i in range(3)}
    assert len(ids) == 3


def test_different_options_never_share(engine_target: Target) -> None:
    plain = engine_target.executor().run_sync(tasks.add, [1, 2], {}, _meta())
    other_env = engine_target.executor(env={"A": "1"}).run_sync(tasks.add, [1, 2], {}, _meta())
    limited = engine_target.executor(shm_size="32m").run_sync(tasks.add, [1, 2], {}, _meta())
    assert len({plain.container_id, other_env.container_id, limited.container_id}) == 3


def echo_where(data: bytes, index: int) -> tuple[int, int, str]:
    import hashlib
    import socket

    return index, len(data), hashlib.sha256(data).hexdigest() + "@" + socket.gethostname()


def test_concurrent_tasks_share_at_most_max_containers(target: Target) -> None:
    """20 concurrent tasks with 2 MB arguments and max_containers=3: all correct, 3 containers."""
    import hashlib

    executor = target.executor(max_containers=3)
    datas = [os.urandom(2 * 1024 * 1024) for _ in range(20)]
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = executor.run_sync(echo_where, [datas[i], i], {}, _meta("concurrent", i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    containers = set()
    for i in range(20):
        index, size, digest = results[i].load_value()
        assert (index, size) == (i, len(datas[i]))
        assert digest.split("@")[0] == hashlib.sha256(datas[i]).hexdigest()
        containers.add(results[i].container_id)
    assert 1 <= len(containers) <= 3


def test_a_timed_out_container_is_not_reused(target: Target) -> None:
    target.executor().run_sync(tasks.add, [1, 2], {}, _meta())  # a warm container
    timed_out: list[str] = []
    with pytest.raises(TaskTimeoutError):
        target.executor(time_limit=1).run_sync(
            tasks.sleep_then, [30, 1], {}, _meta(), on_container=lambda c: timed_out.append(c.id)
        )
    # Engines run the timed-out task on the warm container; slurm on a job of its own (the
    # time limit bounds the job's --time, so it is another pool key). Neither serves again.
    after = target.executor().run_sync(tasks.add, [1, 2], {}, _meta())
    assert timed_out and after.container_id != timed_out[0]


def test_a_container_that_ran_out_of_memory_is_not_reused(rootful_target: Target) -> None:
    def hog() -> int:
        blocks = [bytearray(16 * 1024 * 1024) for _ in range(64)]
        return len(blocks)

    executor = rootful_target.executor(memory="64m")
    warm = executor.run_sync(tasks.add, [1, 2], {}, _meta())
    with pytest.raises(OutOfMemoryError):
        executor.run_sync(hog, [], {}, _meta())
    assert executor.run_sync(tasks.add, [1, 2], {}, _meta()).container_id != warm.container_id


def test_a_cancelled_task_s_container_is_not_reused(engine_target: Target) -> None:
    """``cancel`` (what ``ct.cancel`` calls) kills the container; the next task gets a new one."""
    import asyncio

    executor = engine_target.executor()
    handles: list[Any] = []

    def on_container(container: Any) -> None:
        handles.append({"container": dataclasses.asdict(container)})  # the job handle Covalent stores

    def cancel_soon() -> None:
        deadline = time.monotonic() + 60
        while not handles and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        assert asyncio.run(executor.cancel(_meta(), handles[0]))

    killer = threading.Thread(target=cancel_soon, daemon=True)
    killer.start()
    with pytest.raises(RunnerError, match=r"container \w+ on .* ended while the task ran"):
        executor.run_sync(tasks.sleep_then, [60, 1], {}, _meta(), on_container=on_container)
    killer.join()
    after = executor.run_sync(tasks.add, [1, 2], {}, _meta())
    assert after.container_id != handles[0]["container"]["id"]


@pytest.mark.parametrize("how", ["removed", "killed"])
def test_a_vanished_warm_container_does_not_fail_the_next_task(engine_target: Target, how: str) -> None:
    executor = engine_target.executor()
    first = executor.run_sync(tasks.add, [1, 2], {}, _meta())
    if how == "removed":
        client = engines._client(engine_target.backend, engine_target.address)
        try:
            client.containers.get(first.container_id).remove(force=True)
        finally:
            client.close()
    else:
        cli = ["docker"] if engine_target.backend == "docker" else ["podman", "--url", engine_target.address]
        subprocess.run([*cli, "kill", first.container_id], check=True, capture_output=True)
        time.sleep(0.5)
    second = executor.run_sync(tasks.add, [2, 3], {}, _meta())
    assert second.load_value() == 5
    assert second.container_id != first.container_id


def test_a_runner_of_another_protocol_version_is_a_clear_error(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = target.executor()
    executor.run_sync(tasks.add, [1, 2], {}, _meta())  # leaves a warm runner speaking VERSION
    monkeypatch.setattr(protocol, "VERSION", protocol.VERSION + 1)
    with pytest.raises(RunnerError, match=r"protocol version \d+ from the host, runner speaks \d+"):
        executor.run_sync(tasks.add, [1, 2], {}, _meta())


DRIVER = textwrap.dedent(
    """
    import sys, threading
    from oci_executor import OCIExecutor
    def add(x, y):
        return x + y
    def slow():
        import time
        time.sleep(600)
    ex = OCIExecutor(image=sys.argv[1], backend=sys.argv[2], address=sys.argv[3], idle_timeout=5,
                     keep_warm=600, max_containers=3)
    meta = {"dispatch_id": sys.argv[4], "node_id": 0}
    # Three warm containers (three concurrent tasks), then a hung task on one of them.
    threads = [threading.Thread(target=ex.run_sync, args=(add, [i, 1], {}, meta)) for i in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print("warm", flush=True)
    ex.run_sync(slow, [], {}, meta)
    """
)


def test_pooled_containers_go_after_the_driver_is_killed(engine_target: Target) -> None:
    """SIGKILL a driver holding warm containers and a hung task: all gone in idle_timeout + 10 s."""
    dispatch = f"pool-kill-{uuid.uuid4().hex[:8]}"
    label = f"io.oci-executor.dispatch-id={dispatch}"
    client = engines._client(engine_target.backend, engine_target.address)

    def ours() -> list[str]:
        return engines.container_ids(client, label)

    args = [engine_target.image, engine_target.backend, engine_target.address, dispatch]
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "warm"
        time.sleep(1.0)
        assert len(ours()) >= 2, "the driver should hold warm containers"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = time.monotonic()
        while ours() and time.monotonic() - killed_at < 5 + 10:
            time.sleep(0.2)
        assert ours() == [], "pooled containers outlived their killed driver"
    finally:
        proc.kill()
        client.close()


def test_pool_drain_leaves_nothing(target: Target) -> None:
    target.executor(keep_warm=600).run_sync(tasks.add, [1, 2], {}, _meta())
    assert POOL.stats()["idle"] >= 1
    POOL.drain()
    assert POOL.stats()["idle"] == 0
    assert POOL.stats()["removing"] == 0
