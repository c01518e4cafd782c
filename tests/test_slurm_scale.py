"""The slurm backend at scale and under limits, on the test cluster (scripts/setup-slurm.sh:
two nodes of 4 CPUs, Slurm's cgroup plugins on): a 200-electron fan-out through a real
Covalent server over both nodes, and cpus and memory enforced by Slurm."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from oci_executor.errors import OutOfMemoryError
from tests import engines
from tests.conftest import Target, _leaving_nothing

META = {"dispatch_id": "slurm-scale", "node_id": 0}


@pytest.fixture
def slurm() -> Iterator[Target]:
    yield from _leaving_nothing("slurm")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from tests.covalent_server import running_server

    engines.require_engine("slurm")
    with running_server({"executors.oci.image": engines.test_image()}) as url:
        yield url


def claim(i: int) -> tuple[int, str, str]:
    """Create the electron's marker file (exclusive: a second run of it fails), say where it ran."""
    import os

    with open(f"/claims/{i}", "x") as handle:
        handle.write(os.environ["SLURM_JOB_ID"])
    return i, os.environ["SLURMD_NODENAME"], os.environ["SLURM_JOB_ID"]


@pytest.mark.timeout(1200)
def test_fan_out_of_200_over_both_nodes_loses_and_repeats_no_task(server: str, slurm: Target) -> None:
    """Jobs of 2 CPUs, max_containers=6: more than one node (4 CPUs) holds, more than the cluster
    holds: Slurm places them on both nodes, the rest wait in the queue; every electron runs
    exactly once (its marker file is created exclusively) and nothing is left."""
    import covalent as ct

    claims = tempfile.mkdtemp(prefix="oci-executor-claims-", dir="/tmp")  # pytest's tmp_path is root's only
    os.chmod(claims, 0o777)  # the jobs run as the rootless test user
    executor = slurm.executor(cpus=2, max_containers=6, volumes=[f"{claims}:/claims"])
    electron = ct.electron(claim, executor=executor)

    @ct.lattice
    def fan_out(n):  # type: ignore[no-untyped-def]
        return [electron(i) for i in range(n)]

    result = ct.get_result(ct.dispatch(fan_out)(200), wait=True)
    try:
        assert str(result.status) == "COMPLETED", result.error
        names = os.listdir(claims)
    finally:
        shutil.rmtree(claims, ignore_errors=True)
    indices = [i for i, _, _ in result.result]
    assert indices == list(range(200))
    assert sorted(int(name) for name in names) == list(range(200)), "a task was lost"
    assert {node for _, node, _ in result.result} == set(engines.slurm_nodes())
    jobs = {job for _, _, job in result.result}
    assert 2 <= len(jobs) <= 200, "the warm pool reused no job"


def affinity() -> int:
    import os

    return len(os.sched_getaffinity(0))


def test_cpus_caps_the_task(slurm: Target) -> None:
    """Slurm's cpuset (task/cgroup, ConstrainCores) is what the task's process may run on."""
    assert slurm.executor(cpus=1, reuse="never").run_sync(affinity, [], {}, META).load_value() == 1
    assert slurm.executor(cpus=2, reuse="never").run_sync(affinity, [], {}, META).load_value() == 2


def hog(megabytes: int) -> int:
    data = bytearray(megabytes * 1024 * 1024)
    for i in range(0, len(data), 4096):
        data[i] = 1
    return len(data)


def test_a_task_over_its_memory_is_out_of_memory_error(slurm: Target) -> None:
    """The job's memory cgroup (task/cgroup, ConstrainRAMSpace) holds the container: the kernel
    kills the task at --mem, and the task fails with our OutOfMemoryError."""
    executor = slurm.executor(memory="256m", reuse="never")
    assert executor.run_sync(hog, [64], {}, META).load_value() == 64 * 1024 * 1024
    with pytest.raises(OutOfMemoryError, match="256 MiB"):
        executor.run_sync(hog, [600], {}, META)
