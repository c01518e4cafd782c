"""The slurm backend on a real cluster (scripts/setup-slurm.sh: two nodes, jobs run as the
rootless test user): Covalent workflows, placement, cancel, a killed driver, and each error."""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator

import pytest

from oci_executor.backend import BackendConfig
from oci_executor.backends.slurm import SlurmBackend
from oci_executor.backends.slurm import cli as _slurm
from oci_executor.errors import BackendError, ConfigurationError, EngineUnavailableError
from tests import engines
from tests.conftest import Target, _leaving_nothing

META = {"dispatch_id": "slurm-tests", "node_id": 0}


@pytest.fixture
def slurm() -> Iterator[Target]:
    """The test cluster; asserts that no job or container of ours is left afterwards."""
    yield from _leaving_nothing("slurm")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from tests.covalent_server import running_server

    engines.require_engine("slurm")
    with running_server({"executors.oci.image": engines.test_image()}) as url:
        yield url


def node_name() -> str:
    """The Slurm node a task runs on (the backend passes SLURMD_NODENAME into the container)."""
    import os
    import time

    time.sleep(0.5)  # long enough that the fan-out's tasks overlap
    return os.environ["SLURMD_NODENAME"]


def _dispatch(workflow, *args):  # type: ignore[no-untyped-def]
    import covalent as ct

    return ct.get_result(ct.dispatch(workflow)(*args), wait=True)


# -- through a real Covalent server -----------------------------------------------------


def test_seed_workflow_on_slurm(server: str, slurm: Target) -> None:
    from tests.test_covalent_e2e import _assert_seed_result, seed_workflow

    _assert_seed_result(_dispatch(seed_workflow(slurm.executor()), 2, 3))


def test_fan_out_of_20_uses_both_nodes(server: str, slurm: Target) -> None:
    """Each job asks for a whole node (4 CPUs), two at once: Slurm must place them on n1 and n2."""
    import covalent as ct

    @ct.electron(executor=slurm.executor(cpus=4, max_containers=2))
    def where(i):  # type: ignore[no-untyped-def]
        return node_name()

    @ct.lattice
    def fan_out(n):  # type: ignore[no-untyped-def]
        return [where(i) for i in range(n)]

    result = _dispatch(fan_out, 20)
    assert str(result.status) == "COMPLETED", result.error
    assert len(result.result) == 20
    assert set(result.result) == set(engines.slurm_nodes())


def test_cancel_ends_cancelled_with_job_and_container_gone(server: str, slurm: Target) -> None:
    import covalent as ct

    from tests.test_covalent_e2e import _node, slow_workflow

    dispatch_id = ct.dispatch(slow_workflow(slurm.executor()))()
    deadline = time.monotonic() + 60
    while not any(x.startswith("container:") for x in engines.slurm_leftovers()):
        assert time.monotonic() < deadline, "the task's container never appeared"
        time.sleep(0.2)
    time.sleep(1.0)  # the job handle is stored right after the container's Python check
    ct.cancel(dispatch_id)
    cancelled_at = time.monotonic()
    while engines.slurm_leftovers() and time.monotonic() - cancelled_at < 15:
        time.sleep(0.1)
    elapsed = time.monotonic() - cancelled_at
    assert engines.slurm_leftovers() == [], "the job or the container survived the cancel"
    assert elapsed < 5.0, f"the job and container took {elapsed:.2f} s to go"
    result = ct.get_result(dispatch_id, wait=True)
    assert str(_node(result)["status"]) == "CANCELLED"
    assert str(result.status) == "CANCELLED"


# -- the driver dies ------------------------------------------------------------------------

DRIVER = textwrap.dedent(
    """\
    import sys, time
    from oci_executor import OCIExecutor

    def slow():
        print("started", flush=True)
        time.sleep(300)

    ex = OCIExecutor(image=sys.argv[1], backend="slurm", address=sys.argv[2], idle_timeout=10)
    ex.run_sync(slow, [], {}, {"dispatch_id": "killed-driver", "node_id": 0})
    """
)


def test_a_killed_driver_leaves_no_job_and_no_container(slurm: Target, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(script), slurm.image, slurm.address])
    try:
        deadline = time.monotonic() + 60
        while not any(x.startswith("container:") for x in engines.slurm_leftovers()):
            assert driver.poll() is None, "the driver ended before its task started"
            assert time.monotonic() < deadline, "the task's container never appeared"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    # The runner sees its channel close and ends; Podman removes the container; the job ends
    # with its start step. idle_timeout (10 s) bounds it otherwise.
    deadline = time.monotonic() + 10 + 20
    while engines.slurm_leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert engines.slurm_leftovers() == []
    # The start step's stderr file was unlinked at once: the driver's death leaves no file.
    assert not glob.glob(os.path.join(tempfile.gettempdir(), f"oci-executor-{_slurm.CONTAINER_PREFIX}*"))


def test_a_new_backend_cancels_the_jobs_of_dead_drivers(slurm: Target) -> None:
    """A job whose driver (a process on this host) is dead is cancelled by the next backend."""
    import socket

    dead = subprocess.Popen(["true"])
    dead.wait()
    backend = SlurmBackend(BackendConfig(address=slurm.address))
    argv = [
        "sbatch",
        "--parsable",
        f"--job-name={_slurm.JOB_NAME}",
        f"--comment=oci-executor owner={socket.gethostname()}:{dead.pid}:1",
        "--output=/dev/null",
        "--chdir=/tmp",
        "--time=5",
        *backend.cli.as_user(),
        "--wrap=sleep 300",
    ]
    job_id = backend.cli.run(argv).stdout.decode().strip()
    assert job_id.isdigit()
    assert f"job:{job_id}" in engines.slurm_leftovers()
    assert job_id in backend.sweep_unstarted(0)
    assert f"job:{job_id}" not in engines.slurm_leftovers()


# -- errors, each with its fix -----------------------------------------------------------------


def test_unknown_partition_names_the_fix(slurm: Target) -> None:
    with pytest.raises(ConfigurationError, match=r"no partition 'nosuch'.*sinfo -s"):
        slurm.executor(partition="nosuch").run_sync(node_name, [], {}, META)


def test_a_request_no_node_can_meet_names_the_fix(slurm: Target) -> None:
    with pytest.raises(
        ConfigurationError, match=r"(can never start|no node of the partition can meet).*cpus=64.*sinfo -N"
    ):
        slurm.executor(cpus=64).run_sync(node_name, [], {}, META)


def test_a_job_stuck_pending_fails_after_queue_timeout_with_the_reason(slurm: Target) -> None:
    with pytest.raises(
        BackendError, match=r"still pending after queue_timeout=2 s \(squeue's reason: JobHeldUser"
    ):
        slurm.executor(slurm_args=["--hold"], queue_timeout=2).run_sync(node_name, [], {}, META)


def test_slurm_not_installed(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATH", str(tmp_path))
    backend = SlurmBackend(BackendConfig(address=engines.SLURM_CONF))
    assert not backend.installed()
    assert "apt-get install slurm-client" in (backend.problem() or "")
    with pytest.raises(EngineUnavailableError, match="not installed"):
        backend.check()


def test_a_controller_that_does_not_answer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engines.require_engine("slurm")
    conf = tmp_path / "slurm.conf"
    text = re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=6999", open(engines.SLURM_CONF).read())
    conf.write_text(text + "MessageTimeout=2\n")
    backend = SlurmBackend(BackendConfig(address=str(conf)))
    with pytest.raises(EngineUnavailableError, match=r"controller does not answer.*scontrol ping"):
        backend.check()


def _node_checks(tmp_path, fake_uid: str | None = None) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """Run the node checks of every step with a PATH that has no podman (and maybe a fake uid)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("hostname", "getent", "cut", "mkdir", "bash"):
        os.symlink(
            subprocess.check_output(["sh", "-c", f"command -v {tool}"], text=True).strip(), bin_dir / tool
        )
    if fake_uid:
        (bin_dir / "id").write_text(f"#!/bin/sh\necho {fake_uid}\n")
        (bin_dir / "id").chmod(0o755)
    else:
        os.symlink("/usr/bin/id", bin_dir / "id")
    return subprocess.run(
        ["/bin/bash", "-c", _slurm.NODE_PRELUDE], env={"PATH": str(bin_dir)}, capture_output=True, text=True
    )


def test_podman_missing_on_the_node_names_the_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = _node_checks(tmp_path)
    error = _slurm.node_error(result.stderr, result.returncode, "img", "n1")
    assert isinstance(error, EngineUnavailableError)
    assert "Podman is missing on node n1" in str(error)
    assert "apt-get install podman" in str(error)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a runtime folder owned by another user")
def test_an_unusable_runtime_dir_on_the_node_names_the_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """/run/user/UID exists but is not the user's (here: root checking the test user's)."""
    import pwd

    uid = pwd.getpwnam(engines.ROOTLESS_USER).pw_uid
    if not os.path.isdir(f"/run/user/{uid}"):
        pytest.skip(f"no /run/user/{uid}; {engines.SETUP_HINT}")
    result = _node_checks(tmp_path, fake_uid=str(uid))
    error = _slurm.node_error(result.stderr, result.returncode, "img", "n1")
    assert isinstance(error, EngineUnavailableError)
    assert f"/run/user/{uid} on node" in str(error)
    assert "install -d -o USER -m 700 /run/user/UID" in str(error)


def test_slurm_options_are_refused_by_other_backends() -> None:
    from oci_executor import OCIExecutor

    with pytest.raises(ConfigurationError, match=r"partition.*backend='slurm' only"):
        OCIExecutor(backend="local", partition="debug").run_sync(node_name, [], {}, META)


def test_auto_never_picks_slurm() -> None:
    from oci_executor.registry import default_registry

    assert "slurm" in default_registry().names()
    assert "slurm" not in default_registry().auto_order()


def test_an_image_missing_on_the_node_names_the_fix(slurm: Target) -> None:
    from oci_executor.errors import ImageNotFoundError

    executor = slurm.executor(pull_policy="never")
    executor.image = "localhost/oci-executor-test/absent:1"
    with pytest.raises(
        ImageNotFoundError,
        match=r"not in the rootless image store of uid \d+ on node \w+.*nor is it in \w+'s image store on "
        r"this host.*podman load",
    ):
        executor.run_sync(node_name, [], {}, META)


def test_a_user_without_root_runs_tasks_on_the_cluster(slurm: Target) -> None:
    """As a user does it: the driver runs as the unprivileged test user (no --uid), the jobs are
    that user's, one warm job serves both tasks, and nothing is left once the driver exits."""
    from tests.rootless_user import prepared_user

    with prepared_user() as (user, image):
        facts = user.python_json(
            """
            import subprocess

            from oci_executor import OCIExecutor


            def where():
                import os

                return os.environ["SLURMD_NODENAME"]


            executor = OCIExecutor(backend="slurm", image=PARAMS["image"], address=PARAMS["conf"], keep_warm=60)
            outcomes = [executor.run_sync(where, [], {}, {"dispatch_id": "user", "node_id": i}) for i in range(2)]
            owners = subprocess.run(
                ["squeue", "--noheader", "--name=oci-executor", "--format=%u"],
                capture_output=True, text=True, env={"SLURM_CONF": PARAMS["conf"], "PATH": "/usr/bin:/bin"},
            ).stdout.split()
            emit({
                "nodes": [o.load_value() for o in outcomes],
                "containers": [o.container_id for o in outcomes],
                "owners": owners,
            })
            """,
            params={"image": image, "conf": engines.SLURM_CONF},
            timeout=300,
        )
    assert set(facts["nodes"]) <= set(engines.slurm_nodes())
    assert facts["containers"][0] == facts["containers"][1], "the warm job did not serve the second task"
    assert user.name in facts["owners"]


def test_the_next_job_on_a_node_removes_a_container_whose_job_is_gone(slurm: Target) -> None:
    """A job SIGKILLed without its trap (a node failure) leaves its container: the next job of
    ours on that node removes it."""
    node = engines.slurm_nodes()[0]
    name = f"{_slurm.CONTAINER_PREFIX}999999-{node}"  # a job id the test cluster never reached
    labels = [engines.LABEL, f"{_slurm.JOB_LABEL}=999999", f"{_slurm.NODE_LABEL}={node}"]
    started = subprocess.run(
        engines.slurm_node_command(  # in the node's own store
            node,
            "podman",
            "run",
            "-d",
            "--rm",
            f"--name={name}",
            *[f"--label={x}" for x in labels],
            slurm.image,
            "sleep",
            "300",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    assert f"container:{name}" in engines.slurm_leftovers()
    outcome = slurm.executor(slurm_args=[f"--nodelist={node}"]).run_sync(node_name, [], {}, META)
    assert outcome.load_value() == node
    deadline = time.monotonic() + 30
    while f"container:{name}" in engines.slurm_leftovers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert f"container:{name}" not in engines.slurm_leftovers()
