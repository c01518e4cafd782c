"""Progress on long work: image pulls report each layer (log lines and listeners, for the
command line's progress bar), and a task that waits says why. Pulls come from the test
registry that scripts/setup-engines.sh starts, on each real engine."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from oci_executor import progress
from oci_executor.pool import POOL
from tests import engines, tasks
from tests.conftest import Target

META = {"dispatch_id": "progress", "node_id": 0}


@pytest.fixture
def probe_absent(engine_target: Target) -> Iterator[Target]:
    """The engine, with the registry's probe image absent from its store before and after."""
    engines.remove_image(engine_target.backend, engine_target.address, engines.PULL_PROBE)
    yield engine_target
    POOL.drain()
    engines.remove_image(engine_target.backend, engine_target.address, engines.PULL_PROBE)


def test_a_task_that_pulls_reports_every_layer(
    probe_absent: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="oci_executor")
    events: list[progress.PullProgress] = []
    executor = probe_absent.executor(image=engines.PULL_PROBE, pull_policy="missing")
    with progress.listen(events.append):
        outcome = executor.run_sync(tasks.where, [], {}, META)
    assert outcome.ok
    layers = {e.layer for e in events if e.layer}
    assert len(layers) >= 2, events  # the test image's layer and the probe's own
    assert layers == {e.layer for e in events if e.done}, "a layer never finished"
    assert f"pulling image {engines.PULL_PROBE} into the" in caplog.text
    assert f"pulled image {engines.PULL_PROBE} in" in caplog.text
    for layer in layers:
        assert f"layer {layer}" in caplog.text
    if probe_absent.backend == "docker":  # Docker's API counts bytes; Podman's streams text only
        sizes = [e.total for e in events if e.total]
        assert max(sizes) >= 20_000_000, "the probe's 20 MB layer was not reported in bytes"


def test_the_command_line_shows_a_progress_bar(probe_absent: Target) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "oci_executor.cli",
            "pull",
            engines.PULL_PROBE,
            "--backend",
            probe_absent.backend,
            "--address",
            probe_absent.address,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stderr
    assert "pull-probe:latest" in result.stderr
    assert "pull complete" in result.stderr, result.stderr
    if probe_absent.backend == "docker":
        assert "20.0/20.0 MB" in result.stderr, result.stderr
    assert (
        f"pulled {engines.PULL_PROBE} into the {probe_absent.backend} at {probe_absent.address}"
        in result.stdout
    )


def test_a_task_waiting_for_a_free_container_says_why(
    engine_target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="oci_executor")
    executor = engine_target.executor(max_containers=1)
    results: list[bool] = []

    def one(seconds: float) -> None:
        results.append(executor.run_sync(time.sleep, [seconds], {}, META).ok)

    first = threading.Thread(target=one, args=(2.0,))
    first.start()
    deadline = time.monotonic() + 60
    while not POOL.stats().get("live") and time.monotonic() < deadline:
        time.sleep(0.05)
    one(0.0)
    first.join()
    assert results == [True, True]
    assert "waiting for a free container (1 in use, max_containers=1)" in caplog.text
