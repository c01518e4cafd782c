"""Images on the nodes (test cluster of scripts/setup-slurm.sh, where each node has its own
rootless store): a node that lacks the image and cannot pull it gets it streamed from the
submit host's store through the job, once per node and image."""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests import engines
from tests.conftest import Target, _leaving_nothing


@pytest.fixture
def slurm() -> Iterator[Target]:
    """The test cluster; asserts that no job or container of ours is left afterwards."""
    yield from _leaving_nothing("slurm")


def where() -> str:
    import os

    return os.environ["SLURMD_NODENAME"]


def _image_id(argv: list[str]) -> str:
    """The image's ID per ``podman image inspect`` (``argv``), or "" when it is not there."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return done.stdout.strip() if done.returncode == 0 else ""


def _remove_from_node(node: str, image: str) -> None:
    """``podman rmi`` on the node (no --force: a container another test left may still use it)."""
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run(
            engines.slurm_node_command(node, "podman", "rmi", image),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode == 0 or "image not known" in done.stderr:
            return
        assert time.monotonic() < deadline, f"could not remove {image} on {node}: {done.stderr}"
        time.sleep(2)


def test_an_image_removed_from_a_node_is_streamed_there_once(
    slurm: Target, caplog: pytest.LogCaptureFixture
) -> None:
    node = engines.slurm_nodes()[-1]
    inspect = ["podman", "image", "inspect", "--format={{.Id}}", slurm.image]
    on_host = _image_id(engines.as_test_user(*inspect))
    assert on_host, f"{slurm.image} is not in the test user's store on this (the submit) host"
    _remove_from_node(node, slurm.image)
    assert _image_id(engines.slurm_node_command(node, *inspect)) == ""
    assert _image_id(engines.as_test_user(*inspect)) == on_host, "the node's store is the host's"

    caplog.set_level(logging.INFO, logger="oci_executor")
    executor = slurm.executor(slurm_args=[f"--nodelist={node}"], reuse="never")

    def task(i: int) -> str:
        return str(executor.run_sync(where, [], {}, {"dispatch_id": "stream", "node_id": i}).load_value())

    # Two tasks at once on that node: one job streams the image, the other waits for it.
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(task, range(2))) == [node, node]
    messages = [r.getMessage() for r in caplog.records]
    streams = [m for m in messages if "streaming it there from this host's store" in m]
    assert len(streams) == 1, messages
    assert "not in the rootless image store of uid" in streams[0] and f"on node {node}" in streams[0]
    assert any(m.startswith(f"streamed image {slurm.image} to node {node}: ") for m in messages), messages
    assert _image_id(engines.slurm_node_command(node, *inspect)) == on_host

    caplog.clear()
    assert task(2) == node
    assert not [r.getMessage() for r in caplog.records if "stream" in r.getMessage()]


# -- the driver's side of the start step's image lines (a bash process stands in for the step) --


def _fake_step(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["bash", "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )


def test_the_driver_waits_while_another_job_loads_the_image(caplog: pytest.LogCaptureFixture) -> None:
    from oci_executor.backends.slurm import cli, images

    caplog.set_level(logging.INFO, logger="oci_executor")
    step = _fake_step(f'echo "{cli.IMAGE_LINE} waiting"; echo "{cli.IMAGE_LINE} ok"; printf FRAMES')
    images.await_image(cli.Cli(), step, "7", "n1", "img:1", "missing", lambda: "")
    assert step.stdout is not None and step.stdout.read() == b"FRAMES", "the runner's bytes were touched"
    assert "image img:1: another job is loading it onto node n1; waiting for it" in caplog.text
    step.wait()


def test_a_node_check_failing_before_the_image_line_is_that_checks_error() -> None:
    from oci_executor.backends.slurm import cli, images
    from oci_executor.errors import EngineUnavailableError

    step = _fake_step(
        f'echo "{cli.NODE_ERROR} no-podman: podman is not on PATH" >&2; exit {cli.NO_PODMAN_EXIT}'
    )
    assert step.stderr is not None
    stderr = step.stderr
    with pytest.raises(EngineUnavailableError, match=r"Podman is missing on node n1.*apt-get install podman"):
        images.await_image(cli.Cli(), step, "7", "n1", "img:1", "missing", lambda: stderr.read().decode())
