"""The behaviours every backend must have, run on each real backend."""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from oci_executor.covalent.wrapper import transportable
from oci_executor.errors import ResultSerializationError
from tests import engines, tasks
from tests.conftest import Target, _leaving_nothing

META = {"dispatch_id": "contract", "node_id": 0}


@pytest.fixture(params=[*engines.CONTRACT_TARGETS, *engines.REMOTE_TARGETS])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Every backend, and the engines over ssh (``-k ssh`` selects those)."""
    yield from _leaving_nothing(request.param)


def covalent_task(fn, *args, call_before=(), call_after=(), **kwargs):  # type: ignore[no-untyped-def]
    """What Covalent hands an executor: its wrapper partial and TransportableObject inputs."""
    from covalent._workflow.transport import TransportableObject
    from covalent.executor.utils.wrappers import wrapper_fn

    function = functools.partial(wrapper_fn, TransportableObject(fn), list(call_before), list(call_after))
    return (
        function,
        [TransportableObject(a) for a in args],
        {k: TransportableObject(v) for k, v in kwargs.items()},
    )


def test_value_round_trip(target: Target) -> None:
    outcome = target.executor().run_sync(*covalent_task(tasks.add, 2, 3), META)
    assert outcome.ok
    assert outcome.load_value() == 5
    assert transportable(outcome).get_deserialized() == 5


def test_runs_inside_a_container(target: Target) -> None:
    outcome = target.executor().run_sync(tasks.where, [], {}, META)
    facts = outcome.load_value()
    if target.is_engine:
        assert facts["hostname"] != socket.gethostname()
        assert outcome.container_id.startswith(facts["hostname"])
        assert "oci_runner.serve" in facts["pid1"]  # our resident runner is the container's PID 1
    else:
        assert facts["hostname"] == socket.gethostname()


def test_exception_type_message_traceback(target: Target) -> None:
    outcome = target.executor().run_sync(*covalent_task(tasks.fail, "bad input 42"), META)
    assert not outcome.ok
    assert outcome.error_type == "builtins.ValueError"
    assert outcome.error_message == "bad input 42"
    # Code pickled by value has no source file (cloudpickle names it <dynamic-code>), but the
    # remote traceback still names the failing function and ends with the exception.
    assert ", in fail" in outcome.traceback
    assert outcome.traceback.rstrip().endswith("ValueError: bad input 42")


def test_stdout_and_stderr_captured(target: Target) -> None:
    outcome = target.executor().run_sync(tasks.chatty, [], {}, META)
    assert outcome.load_value() == "done"
    assert "to stdout" in outcome.stdout
    assert "from a subprocess" in outcome.stdout
    assert outcome.stderr.strip() == "to stderr"


def test_50_mb_bytes_round_trip(target: Target) -> None:
    data = os.urandom(50 * 1024 * 1024)
    outcome = target.executor().run_sync(*covalent_task(tasks.reverse_bytes, data), META)
    result = outcome.load_value()
    assert len(result) == len(data)
    assert result == data[::-1]


def test_non_ascii_output(target: Target) -> None:
    outcome = target.executor().run_sync(tasks.unicode_talk, [], {}, META)
    assert outcome.load_value() == "résumé ✓ 日本"
    assert "héllo wörld ✓ 日本語 🚀" in outcome.stdout
    assert "ünïcödé ✗" in outcome.stderr


def test_function_defined_in_test_module(target: Target) -> None:
    def local_square(x: int) -> int:
        return x * x + offset

    offset = 1
    outcome = target.executor().run_sync(local_square, [7], {}, META)
    assert outcome.load_value() == 50


def test_call_before_and_call_after(target: Target) -> None:
    from covalent import DepsBash, DepsCall

    marker = "/tmp/oci-contract-marker.txt" if target.is_engine else "oci-contract-marker.txt"
    before = [
        DepsBash([f"echo written-by-deps-bash > {marker}"]).apply(),
        DepsCall(tasks.prepare, retval_keyword="injected").apply(),
    ]
    after = [DepsCall(tasks.after).apply()]
    outcome = target.executor().run_sync(
        *covalent_task(tasks.read_marker, marker, call_before=before, call_after=after), META
    )
    assert outcome.ok, outcome.traceback
    assert outcome.load_value() == "written-by-deps-bash|from-deps-call"
    assert "call_before ran" in outcome.stdout
    assert "call_after ran" in outcome.stdout


def test_call_before_runs_before_the_function_is_unpickled(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As Covalent's wrapper_fn: a DepsCall can create a module the function imports at load."""
    import importlib
    import sys

    from covalent import DepsCall

    name = f"oci_made_by_deps_call_{os.getpid()}"
    source = "ANSWER = 42\n"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)  # forgotten again after the test
    made = importlib.import_module(name)  # on the host only, so that the function can be pickled

    def uses_module() -> int:
        return made.ANSWER + 1  # cloudpickle ships ``made`` as "import it by name"

    before = [DepsCall(tasks.write_module, args=[name, source]).apply()]
    outcome = target.executor().run_sync(*covalent_task(uses_module, call_before=before), META)
    assert outcome.ok, outcome.traceback
    assert outcome.load_value() == 43


def test_a_failing_step_names_itself_its_command_and_its_last_lines(target: Target) -> None:
    from covalent import DepsBash, DepsCall

    before = [
        DepsCall(tasks.prepare).apply(),
        DepsBash(["echo fine", "echo first-line; echo the-real-cause >&2; exit 3"]).apply(),
    ]
    outcome = target.executor().run_sync(*covalent_task(tasks.add, 1, 2, call_before=before), META)
    assert not outcome.ok
    assert outcome.phase == "call_before"
    message = outcome.error_message
    assert "call_before step 2 of 2 (DepsBash)" in message
    assert "echo the-real-cause >&2; exit 3" in message and "status 3" in message
    assert "the-real-cause" in message.split("last lines:")[1]
    assert "first-line" in outcome.stdout  # the step's output still reaches the task's stdout


def test_unpicklable_result_is_a_clear_error(target: Target) -> None:
    with pytest.raises(ResultSerializationError, match="cannot be pickled"):
        target.executor().run_sync(tasks.return_lock, [], {}, META)
