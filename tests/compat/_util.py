"""Dispatch and wait, as Covalent's functional tests do."""

from __future__ import annotations

from typing import Any


def run(workflow: Any, *args: Any, **kwargs: Any) -> Any:
    import covalent as ct

    return ct.get_result(ct.dispatch(workflow)(*args, **kwargs), wait=True)


def completed(result: Any) -> Any:
    failed = [
        (n["node_name"], n["error"], (n["stderr"] or "")[-1500:])
        for n in result.get_all_node_results()
        if str(n["status"]) != "COMPLETED"
    ]
    assert str(result.status) == "COMPLETED", f"{result.error} {failed}"
    return result.result
