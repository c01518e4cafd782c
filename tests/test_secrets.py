"""Secrets through a real Covalent server: the task sees them, nothing else shows them.

Two secrets per run: one from the server's environment, one from a ``secrets_file``. After the
dispatch, while its container is still warm, every place a user (or another user of the host)
could look is searched for both values: the engine's inspect data, the command lines and
environments of every process in the container and on the host, the Slurm job record, the
Covalent server's database, results, logs and config (its whole HOME), and the result object.
"""

from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import engines, tasks
from tests.conftest import Target

pytestmark = pytest.mark.covalent

ENV_SECRET = "OCI_TEST_ENV_SECRET"
FILE_SECRET = "OCI_TEST_FILE_SECRET"
ENV_VALUE = f"env-{uuid.uuid4().hex}"
FILE_VALUE = f"file-{uuid.uuid4().hex}"
VALUES = (ENV_VALUE.encode(), FILE_VALUE.encode())
WARM = (60.0, 15.0)
"""keep_warm for engines (long enough to inspect their containers), and for local."""
SLURM_DIRS = ("/var/spool/oci-executor-slurm", "/var/log/oci-executor-slurm")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A server whose environment holds ENV_SECRET (this process's stays without it)."""
    from tests.covalent_server import running_server

    os.environ[ENV_SECRET] = ENV_VALUE
    try:
        with running_server({"executors.oci.image": engines.test_image()}) as url:
            os.environ.pop(ENV_SECRET, None)
            yield url
    finally:
        os.environ.pop(ENV_SECRET, None)


@pytest.fixture
def secrets_file(tmp_path: Path) -> str:
    path = tmp_path / "secrets.env"
    path.write_text(f"# test secrets\n{FILE_SECRET}={FILE_VALUE}\n", encoding="utf-8")
    return str(path)


def _found(data: bytes, where: str) -> list[str]:
    return [f"{where} holds the {'env' if v == VALUES[0] else 'file'} secret" for v in VALUES if v in data]


def _engine_clis(target: Target) -> list[list[str]]:
    """The Podman or Docker command(s) that see the target's containers (Slurm: each node's)."""
    if target.backend == "docker":
        return [["docker", "-H", target.address]]
    if target.id == "podman":
        return [["podman"]]
    if target.backend == "slurm":
        return [engines.slurm_node_command(node, "podman") for node in engines.slurm_nodes()]
    return [engines.as_test_user("podman")]


def _engine_cli(target: Target, container: str) -> list[str]:
    """The command that sees ``container``."""
    if target.backend == "slurm":  # oci-slurm-<job>-<node>
        return engines.slurm_node_command(container.rsplit("-", 1)[-1], "podman")
    return _engine_clis(target)[0]


def _containers(target: Target, dispatch_id: str) -> list[str]:
    """Names (Slurm) or IDs of the dispatch's containers."""
    label = f"label=io.oci-executor.dispatch-id={dispatch_id}"
    found = []
    for cli in _engine_clis(target):
        ps = subprocess.run(
            [*cli, "ps", "--no-trunc", "--filter", label, "--format", "{{.Names}}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        found += ps.stdout.split()
    return found


def _host_processes(server: str) -> list[str]:
    """Every host process's command line, and its environment unless it is the server (whose
    environment holds ENV_SECRET because the test put it there)."""
    port = server.rsplit(":", 1)[1].encode()
    found = []
    for proc in glob.glob("/proc/[0-9]*"):
        try:
            cmdline = Path(proc, "cmdline").read_bytes()
            environ = Path(proc, "environ").read_bytes()
        except OSError:
            continue
        found += _found(cmdline, f"the command line of host process {proc}")
        is_server = b"app.py" in cmdline and b"--port" in cmdline and port in cmdline
        for value in VALUES[1 if is_server else 0 :]:
            if value in environ:
                found.append(f"the environment of host process {proc} ({cmdline[:80]!r})")
    return found


def _files(roots: list[str]) -> list[str]:
    found = []
    for root in roots:
        for path in Path(root).rglob("*"):
            try:
                if path.is_file():
                    found += _found(path.read_bytes(), str(path))
            except OSError:
                continue
    return found


INSIDE = (
    "import glob\n"
    "for p in glob.glob('/proc/[0-9]*/cmdline') + glob.glob('/proc/[0-9]*/environ'):\n"
    "    try: print(p, open(p, 'rb').read())\n"
    "    except OSError: pass\n"
)


def _inside(target: Target, container: str) -> list[str]:
    cli = _engine_cli(target, container)
    found = []
    inspect = subprocess.run([*cli, "inspect", container], capture_output=True, timeout=60)
    assert inspect.returncode == 0, inspect.stderr
    found += _found(inspect.stdout, f"`inspect` of container {container[:40]}")
    procs = subprocess.run(
        [*cli, "exec", container, "python3", "-c", INSIDE], capture_output=True, timeout=60
    )
    assert procs.returncode == 0, procs.stderr
    found += _found(procs.stdout, f"a process's command line or environment in container {container[:12]}")
    return found


def _slurm_record() -> list[str]:
    jobs = subprocess.run(
        ["squeue", "--noheader", "--name=oci-executor", "--format=%i"],
        capture_output=True,
        text=True,
        env=engines.slurm_env(),
        timeout=30,
    ).stdout.split()
    assert jobs, "no warm Slurm job to look at"
    found = []
    for job in jobs:
        shown = subprocess.run(
            ["scontrol", "show", "job", "-dd", job], capture_output=True, env=engines.slurm_env(), timeout=30
        )
        found += _found(shown.stdout, f"`scontrol show job -dd {job}`")
    return found + _files([d for d in SLURM_DIRS if os.path.isdir(d)])


def test_secrets_reach_the_task_and_nothing_else(
    server: str, server_target: Target, secrets_file: str
) -> None:
    import covalent as ct

    if os.geteuid() != 0:
        pytest.skip("searching every process and the Slurm spool needs root")
    executor = server_target.executor(
        secrets=[ENV_SECRET, FILE_SECRET],
        secrets_file=secrets_file,
        keep_warm=WARM[server_target.backend == "local"],
        pids_limit=256,
    )
    digest = ct.electron(tasks.secret_digest, executor=executor)
    fail = ct.electron(tasks.fail, executor=executor)

    @ct.lattice
    def flow(names):  # type: ignore[no-untyped-def]
        fail("an error message of a task that had secrets")
        return digest(names)

    dispatch_id = ct.dispatch(flow)([ENV_SECRET, FILE_SECRET])
    result = ct.get_result(dispatch_id, wait=True)
    seen = result.get_node_result(2)["output"].get_deserialized()
    assert seen == {
        ENV_SECRET: hashlib.sha256(VALUES[0]).hexdigest(),
        FILE_SECRET: hashlib.sha256(VALUES[1]).hexdigest(),
        "child": "True",
    }, "the task did not see its secrets"

    found: list[str] = []
    if server_target.backend == "local":
        found += _files(glob.glob("/tmp/oci-executor-local-*"))
    else:
        containers = _containers(server_target, dispatch_id)
        assert containers, "the warm container is gone before it could be inspected"
        for container in containers:
            found += _inside(server_target, container)
    if server_target.backend == "slurm":
        found += _slurm_record()
    found += _host_processes(server)
    found += _files([os.environ["HOME"]])  # the server's database, results, logs and config
    nodes = [result.get_node_result(i) for i in range(len(result.lattice.transport_graph._graph.nodes))]
    found += _found(repr(nodes).encode() + str(result).encode(), "the dispatch's result")
    assert not found, found
    _wait_gone(server_target, dispatch_id)


def _wait_gone(target: Target, dispatch_id: str) -> None:
    """Remove the warm containers now rather than after keep_warm (60 s here); a Slurm job
    ends with its container."""
    if target.backend == "local":
        deadline = time.monotonic() + WARM[1] + 10
        while glob.glob("/tmp/oci-executor-local-*") and time.monotonic() < deadline:
            time.sleep(0.5)
        return
    for container in _containers(target, dispatch_id):
        subprocess.run(
            [*_engine_cli(target, container), "rm", "-f", container], capture_output=True, timeout=60
        )
    deadline = time.monotonic() + 30
    while _containers(target, dispatch_id) and time.monotonic() < deadline:
        time.sleep(0.5)


def test_a_missing_secret_fails_the_node_naming_it(server: str) -> None:
    import covalent as ct

    from oci_executor import OCIExecutor

    add = ct.electron(tasks.add, executor=OCIExecutor(backend="local", secrets=["OCI_TEST_NOT_SET"]))

    @ct.lattice
    def flow():  # type: ignore[no-untyped-def]
        return add(1, 2)

    result = ct.get_result(ct.dispatch(flow)(), wait=True)
    assert str(result.status) == "FAILED"
    error = str(result.get_node_result(0)["error"])
    assert "ConfigurationError" in error
    assert "'OCI_TEST_NOT_SET' is not set" in error
    assert "export it in the shell that starts the server" in error


def test_the_file_wins_over_the_environment_and_errors_never_quote_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oci_executor import secrets, settings
    from oci_executor.errors import ConfigurationError

    path = tmp_path / "s.env"
    path.write_text("# comment\n\nexport A=from-file=with-equals\n", encoding="utf-8")
    monkeypatch.setenv("A", "from-env")
    monkeypatch.setenv("B", "b-from-env")
    assert secrets.resolve(["A", "B"], str(path)) == {"A": "from-file=with-equals", "B": "b-from-env"}
    assert "A" not in secrets.scrubbed_environ() and "B" not in secrets.scrubbed_environ()
    path.write_text("A=ok\nthis line holds hunter2\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"line 2: not NAME=VALUE") as info:
        secrets.resolve(["A"], str(path))
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigurationError, match="cannot be read"):
        secrets.resolve(["A"], str(tmp_path / "missing.env"))
    with pytest.raises(ConfigurationError, match=r"in both env and secrets"):
        settings.parse({"env": {"A": "x"}, "secrets": ["A"]})
    for bad in ("A", ["1A"], ["A-B"], [3]):
        with pytest.raises(ConfigurationError, match="secrets"):
            settings.parse({"secrets": bad})
