"""Leptons (after lepton_test)."""

from __future__ import annotations

import covalent as ct

from tests.compat._util import completed, run


def test_bash_lepton_with_named_outputs() -> None:
    task = ct.Lepton(
        language="bash",
        command="SUM=$(( {a} + {b} )) && TEXT=sum",
        argtypes=[(int, ct.Lepton.INPUT_OUTPUT), (str, ct.Lepton.INPUT_OUTPUT)],
        named_outputs=["SUM", "TEXT"],
    )

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return task(a=2, b=3)

    assert completed(run(workflow)) == (5, "sum")


def test_bash_lepton_decorator() -> None:
    """Fails on Covalent 0.240.0's local executor with a current pip: the decorator adds an empty
    DepsPip, and `pip install` with nothing to install exits 1. oci skips an empty pip step."""

    @ct.leptons.bash(display_name="shout")
    def shout(word):  # type: ignore[no-untyped-def]
        return f"echo {word} | tr a-z A-Z"

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return shout("quiet")

    completed(run(workflow))


def test_python_lepton() -> None:
    task = ct.Lepton(language="python", library_name="math", function_name="factorial")

    @ct.lattice
    def workflow(n):  # type: ignore[no-untyped-def]
        return task(n)

    assert completed(run(workflow, 5)) == 120
