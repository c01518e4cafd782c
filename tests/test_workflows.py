"""Covalent workflows that need more than the function: modules of the user's project, pytest's
assertion helpers, FileTransfer across the host/container boundary, leptons, and a lattice whose
own executor is oci (post-processing and sublattices). Through a real server, on each engine."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import engines
from tests.conftest import Target

pytestmark = pytest.mark.covalent

PROJECT = str(Path(__file__).parent / "workflow_project")
"""A folder of plain modules, as a user's project: on the path of this process and the server."""
BIG = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from tests.covalent_server import running_server

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (PROJECT, old) if p)
    sys.path.insert(0, PROJECT)
    try:
        with running_server({"executors.oci.image": engines.test_image()}) as url:
            yield url
    finally:
        sys.path.remove(PROJECT)
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _run(workflow, *args):  # type: ignore[no-untyped-def]
    import covalent as ct

    return ct.get_result(ct.dispatch(workflow)(*args), wait=True)


def _error(result) -> str:  # type: ignore[no-untyped-def]
    """The first failed node's error and stderr (a task's own exception ends its stderr)."""
    node = next(n for n in result.get_all_node_results() if str(n["status"]) == "FAILED")
    return f"{node['error']}\n{node['stderr']}"


def _completed(result) -> None:  # type: ignore[no-untyped-def]
    nodes = result.get_all_node_results()
    failed = [(n["node_name"], n["error"], n["stderr"]) for n in nodes if str(n["status"]) != "COMPLETED"]
    assert str(result.status) == "COMPLETED", f"{result.error}: {failed}"


def test_a_module_of_the_users_project_travels_with_the_task(server: str, engine_target: Target) -> None:
    import covalent as ct
    import wf_helper  # type: ignore[import-not-found]

    @ct.electron(executor=engine_target.executor())
    def scale(x):  # type: ignore[no-untyped-def]
        return wf_helper.scaled(x)

    @ct.lattice
    def workflow(x):  # type: ignore[no-untyped-def]
        return scale(x)

    result = _run(workflow, 6)
    _completed(result)
    assert result.result == 42  # wf_helper and the module it imports, wf_helper_math, both arrived


def test_pytest_assertion_rewriting_works_in_the_container(server: str, engine_target: Target) -> None:
    import covalent as ct

    @ct.electron(executor=engine_target.executor())
    def check(x):  # type: ignore[no-untyped-def]
        assert x == 1
        return "checked"

    @ct.lattice
    def workflow(x):  # type: ignore[no-untyped-def]
        return check(x)

    ok = _run(workflow, 1)
    _completed(ok)
    assert ok.result == "checked"
    failed = _run(workflow, 2)
    assert str(failed.status) == "FAILED"
    error = _error(failed)
    assert "assert 2 == 1" in error, error  # pytest's rewritten explanation, made in the container


def test_file_transfers_cross_the_boundary_both_ways_big_file_included(
    server: str, engine_target: Target, tmp_path: Path
) -> None:
    import covalent as ct

    source = tmp_path / "in.bin"
    with open(source, "wb") as handle:  # sparse: fast to make, still 200 MB to move
        handle.truncate(BIG)
        for offset in (0, BIG // 3, BIG - 16):
            handle.seek(offset)
            handle.write(os.urandom(16))
    back = tmp_path / "out" / "back.bin"
    transfers = [
        ct.fs.FileTransfer(str(source), "/tmp/task/in.bin"),
        ct.fs.FileTransfer("file:///tmp/task/in.bin", str(back), order=ct.fs.Order.AFTER),
    ]

    @ct.electron(executor=engine_target.executor(), files=transfers)
    def digest(files=None):  # type: ignore[no-untyped-def]
        import hashlib
        import os

        with open("/tmp/task/in.bin", "rb") as handle:
            value = hashlib.file_digest(handle, "sha256").hexdigest()
        return value, os.path.getsize("/tmp/task/in.bin"), files

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return digest()

    result = _run(workflow)
    _completed(result)
    with open(source, "rb") as handle:
        expected = hashlib.file_digest(handle, "sha256").hexdigest()
    value, size, files = result.result
    assert (value, size) == (expected, BIG)  # read on the host, written in the container
    with open(back, "rb") as handle:  # read in the container, written on the host
        assert hashlib.file_digest(handle, "sha256").hexdigest() == expected
    assert files[0] == (str(source), "/tmp/task/in.bin")


def test_a_transfer_from_a_missing_host_file_names_the_transfer(
    server: str, engine_target: Target, tmp_path: Path
) -> None:
    import covalent as ct

    missing = tmp_path / "nothing-here.txt"

    @ct.electron(executor=engine_target.executor(), files=[ct.fs.FileTransfer(str(missing), "/tmp/x.txt")])
    def read(files=None):  # type: ignore[no-untyped-def]
        return open("/tmp/x.txt").read()

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return read()

    result = _run(workflow)
    assert str(result.status) == "FAILED"
    error = _error(result)
    assert "FileTransferError" in error and str(missing) in error and "No such file" in error, error


def test_leptons_bash_and_python_run(server: str, engine_target: Target) -> None:
    import covalent as ct

    executor = engine_target.executor()

    @ct.leptons.bash(executor=executor, display_name="greet")
    def greet(name):  # type: ignore[no-untyped-def]
        return f"echo hello {name} > /tmp/greeting && cat /tmp/greeting"

    json_dumps = ct.Lepton(language="python", library_name="json", function_name="dumps", executor=executor)

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        greet("oci")
        return json_dumps({"a": 1})

    result = _run(workflow)
    _completed(result)
    assert result.result == '{"a": 1}'


def test_a_lattice_whose_executor_is_oci_postprocesses_and_builds_sublattices(
    server: str, engine_target: Target
) -> None:
    import covalent as ct

    executor = engine_target.executor()

    @ct.electron
    def square(x):  # type: ignore[no-untyped-def]
        import os

        return x * x, os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")

    @ct.lattice(executor=executor, workflow_executor=executor)
    def inner(x):  # type: ignore[no-untyped-def]
        return square(x)

    sub = ct.electron(inner)

    @ct.lattice(executor=executor, workflow_executor=executor)
    def outer(x):  # type: ignore[no-untyped-def]
        return {"direct": square(x), "nested": sub(x + 1)}

    result = _run(outer, 3)
    _completed(result)
    assert result.result == {"direct": (9, True), "nested": (16, True)}  # electrons ran in containers


def test_a_failing_call_before_hook_is_named_in_the_error(server: str, engine_target: Target) -> None:
    import covalent as ct

    def prepare_dataset():  # type: ignore[no-untyped-def]
        raise RuntimeError("the dataset server is down")

    @ct.electron(executor=engine_target.executor(), call_before=[ct.DepsCall(prepare_dataset)])
    def task():  # type: ignore[no-untyped-def]
        return 1

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return task()

    result = _run(workflow)
    assert str(result.status) == "FAILED"
    error = _error(result)
    assert "RuntimeError: the dataset server is down" in error
    assert "(raised by the call_before step 'prepare_dataset')" in error
