"""Dependencies and hooks (after qa_deps_workflow_test, qa_call_deps_retval_test)."""

from __future__ import annotations

import covalent as ct

from tests.compat._util import completed, run


def test_deps_bash_prepares_what_the_electron_reads() -> None:
    @ct.electron(
        deps_bash=ct.DepsBash(["mkdir -p /tmp/oci-compat", "echo prepared > /tmp/oci-compat/deps.txt"])
    )
    def read():  # type: ignore[no-untyped-def]
        with open("/tmp/oci-compat/deps.txt") as handle:
            return handle.read().strip()

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return read()

    assert completed(run(workflow)) == "prepared"


def test_call_before_return_values_become_keyword_arguments() -> None:
    def settings():  # type: ignore[no-untyped-def]
        return {"scale": 3}

    def offset(n):  # type: ignore[no-untyped-def]
        return n

    @ct.electron(
        call_before=[
            ct.DepsCall(settings, retval_keyword="config"),
            ct.DepsCall(offset, args=[4], retval_keyword="shift"),
        ]
    )
    def compute(x, config=None, shift=None):  # type: ignore[no-untyped-def]
        return x * config["scale"] + shift

    @ct.lattice
    def workflow(x):  # type: ignore[no-untyped-def]
        return compute(x)

    assert completed(run(workflow, 2)) == 10


def test_call_after_runs_after_the_electron() -> None:
    def mark(path):  # type: ignore[no-untyped-def]
        with open(path, "a") as handle:
            handle.write("after\n")

    @ct.electron(call_after=[ct.DepsCall(mark, args=["/tmp/oci-compat-after.txt"])])
    def work():  # type: ignore[no-untyped-def]
        with open("/tmp/oci-compat-after.txt", "w") as handle:
            handle.write("work\n")
        return "done"

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return work()

    assert completed(run(workflow)) == "done"
