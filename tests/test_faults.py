"""Faults and hostile input: what a hostile or unlucky task cannot do to the host."""

from __future__ import annotations

import os
import uuid

import pytest

from oci_executor.errors import RunnerError
from tests import tasks
from tests.conftest import Target

META = {"dispatch_id": "faults", "node_id": 0}


@pytest.mark.parametrize("how", ["pickle", "truncated", "oversized", "notjson"])
def test_forged_result_runs_no_code_on_the_host(target: Target, how: str) -> None:
    """The task writes a forged result into its result pipe and into the runner's channel."""
    marker = f"/tmp/oci-forged-{uuid.uuid4().hex}"
    if how == "pickle":
        # A well-formed record passes, and its value stays raw bytes on the host, for
        # Covalent's client to deserialize (it is the user's own task's output).
        outcome = target.executor().run_sync(tasks.forge_result, [marker, how], {}, META)
        assert outcome.ok
        assert isinstance(outcome.value, (bytes, bytearray))
        assert outcome.transportable().get_serialized()
    else:
        with pytest.raises(RunnerError, match="result could not be read"):
            target.executor().run_sync(tasks.forge_result, [marker, how], {}, META)
    assert not os.path.exists(marker), "a forged result ran code on the host"
