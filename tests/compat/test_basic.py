"""Workflow shapes (after basic_dispatcher_test, electron_return_value_test, workflow_stack_test,
qa_basic_workflow_test, qa_heterogenous_workflows_test, workflow_failure_test)."""

from __future__ import annotations

import covalent as ct

from tests.compat._util import completed, run


@ct.electron
def join(a, b):  # type: ignore[no-untyped-def]
    return f"{a}{b}"


@ct.electron
def pair(x):  # type: ignore[no-untyped-def]
    return {"left": x, "right": x * 2}


class Point:
    def __init__(self, x: int) -> None:
        self.x = x


@ct.electron
def point(x):  # type: ignore[no-untyped-def]
    return Point(x)


def test_chain_of_electrons_defined_at_module_level() -> None:
    @ct.lattice
    def workflow(name):  # type: ignore[no-untyped-def]
        return join(join("a", name), join("b", name))

    assert completed(run(workflow, "x")) == "axbx"


def test_return_value_kinds_and_their_parts() -> None:
    @ct.electron
    def three():  # type: ignore[no-untyped-def]
        return [1, 2, 3]

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return {"sub": pair(5)["right"], "attr": point(4).x, "first": three()[0]}

    assert completed(run(workflow)) == {"sub": 10, "attr": 4, "first": 1}


def test_lists_and_dicts_of_electrons_as_arguments() -> None:
    @ct.electron
    def total(values, weights):  # type: ignore[no-untyped-def]
        return sum(values) + sum(weights.values())

    @ct.electron
    def ident(x):  # type: ignore[no-untyped-def]
        return x

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return total([ident(1), ident(2)], {"a": ident(3)})

    assert completed(run(workflow)) == 6


def test_wait_orders_electrons_without_data() -> None:
    @ct.electron
    def first():  # type: ignore[no-untyped-def]
        return 1

    @ct.electron
    def second():  # type: ignore[no-untyped-def]
        return 2

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        a = first()
        b = second()
        ct.wait(child=b, parents=[a])
        return b

    assert completed(run(workflow)) == 2


def test_sublattice() -> None:
    @ct.electron
    def square(x):  # type: ignore[no-untyped-def]
        return x * x

    @ct.lattice
    def inner(x):  # type: ignore[no-untyped-def]
        return square(x)

    @ct.lattice
    def outer(x):  # type: ignore[no-untyped-def]
        return ct.electron(inner)(x) + square(x)

    assert completed(run(outer, 3)) == 18


def test_electrons_in_a_loop_and_a_large_result() -> None:
    @ct.electron
    def blob(i):  # type: ignore[no-untyped-def]
        return bytes([i]) * (4 * 1024 * 1024)

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return [blob(i) for i in range(3)]

    values = completed(run(workflow))
    assert [len(v) for v in values] == [4 * 1024 * 1024] * 3 and values[2][0] == 2


def test_a_failing_electron_fails_the_workflow_with_its_message() -> None:
    @ct.electron
    def boom():  # type: ignore[no-untyped-def]
        raise ValueError("boom in the electron")

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return boom()

    result = run(workflow)
    assert str(result.status) == "FAILED"
    node = result.get_node_result(0)
    assert "boom in the electron" in f"{node['error']} {node['stderr']}"


def test_heterogeneous_executors_in_one_workflow() -> None:
    @ct.electron(executor="local")
    def here(x):  # type: ignore[no-untyped-def]
        return x + 1

    @ct.electron
    def default(x):  # type: ignore[no-untyped-def]
        return x * 10

    @ct.lattice
    def workflow(x):  # type: ignore[no-untyped-def]
        return default(here(x))

    assert completed(run(workflow, 1)) == 20
