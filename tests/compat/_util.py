"""Dispatch and wait, as Covalent's functional tests do."""

from __future__ import annotations

from typing import Any


def run(workflow: Any, *args: Any, **kwargs: Any) -> Any:
    import covalent as ct

    return ct.get_result(ct.dispatch(workflow)(*args, **kwargs), wait=True)


def completed(result: Any) -> Any:
    assert str(result.status) == "COMPLETED", result.error
    return result.result
