"""pids_limit: a task that forks until refused fails with ProcessLimitError; the host holds.

Fork bombs run here only with a small limit set (64), and the task's ceiling of forks is four
times that, so a limit that does not hold fails the test instead of filling the host's table.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Iterator

import pytest

from oci_executor import settings
from oci_executor.errors import ConfigurationError, ProcessLimitError
from tests import engines, tasks
from tests.conftest import Target

LIMIT = 64
META = {"dispatch_id": "pids", "node_id": 0}


def test_default_and_bad_values() -> None:
    values = settings.parse(settings.defaults())
    assert values["pids_limit"] == settings.DEFAULT_PIDS_LIMIT == 2048
    assert settings.container_spec(values, {}).pids_limit == 2048
    assert settings.container_spec({**values, "pids_limit": -1}, {}).pids_limit is None
    for bad in (0, -2, 1.5, "100", True):
        with pytest.raises(ConfigurationError, match=r"pids_limit=.* or -1 for no limit"):
            settings.parse({"pids_limit": bad})


def _bomb(target: Target) -> ProcessLimitError:
    executor = target.executor(pids_limit=LIMIT, reuse="process")
    with pytest.raises(ProcessLimitError) as info:
        executor.run_sync(tasks.fork_until_refused, [LIMIT * 4], {}, META)
    return info.value


def test_a_fork_bomb_fails_with_a_named_error_and_the_driver_goes_on(target: Target) -> None:
    error = _bomb(target)
    message = str(error)
    assert f"pids_limit of {LIMIT} processes" in message
    assert "Raise the executor's pids_limit (-1: no limit)" in message
    assert "BlockingIOError" in message or "Resource temporarily unavailable" in message
    # The same warm container (its children killed) serves the next task.
    assert (
        target.executor(pids_limit=LIMIT, reuse="process").run_sync(tasks.add, [2, 3], {}, META).value_repr
        == "5"
    )
    if target.backend == "local":
        from oci_executor.pool import POOL

        POOL.drain()
        deadline = time.monotonic() + 10
        while (
            groups := glob.glob("/sys/fs/cgroup/pids/oci-executor-local-*")
        ) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not groups, f"pids cgroups left: {groups}"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from tests.covalent_server import running_server

    with running_server({"executors.oci.image": engines.test_image()}) as url:
        yield url


@pytest.mark.covalent
def test_a_fork_bomb_through_the_server_fails_its_node_and_the_server_answers(
    server: str, engine_target: Target
) -> None:
    import covalent as ct

    executor = engine_target.executor(pids_limit=LIMIT)
    bomb = ct.electron(tasks.fork_until_refused, executor=executor)
    add = ct.electron(tasks.add, executor=executor)

    @ct.lattice
    def flow(ceiling):  # type: ignore[no-untyped-def]
        return bomb(ceiling)

    @ct.lattice
    def after(x, y):  # type: ignore[no-untyped-def]
        return add(x, y)

    result = ct.get_result(ct.dispatch(flow)(LIMIT * 4), wait=True)
    assert str(result.status) == "FAILED"
    node = result.get_node_result(0)
    assert str(node["status"]) == "FAILED"
    # As for a task's own exception, the error ends the node's stderr, after the traceback.
    assert f"ProcessLimitError: the task hit its pids_limit of {LIMIT} processes" in node["stderr"]
    assert "BlockingIOError" in node["stderr"] and "Traceback" in node["stderr"]
    again = ct.get_result(ct.dispatch(after)(2, 3), wait=True)
    assert str(again.status) == "COMPLETED" and again.result == 5
