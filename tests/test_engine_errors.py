"""Clear errors on real engines, and nothing left behind afterwards (checked by the fixture)."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator

import pytest

from oci_executor.errors import (
    EngineUnavailableError,
    ImageHasNoPythonError,
    ImageNotFoundError,
    ImagePullError,
    PythonVersionMismatchError,
)
from tests import engines, tasks
from tests.conftest import Target

META = {"dispatch_id": "errors", "node_id": 0}
TEMP_PREFIXES = ("oci-executor-local-", "oci-executor-podman-")  # every temp name our code uses


@pytest.fixture(autouse=True)
def no_temp_files_left() -> Iterator[None]:
    def ours() -> set[str]:
        tmp = tempfile.gettempdir()
        return {p for prefix in TEMP_PREFIXES for p in glob.glob(os.path.join(tmp, prefix + "*"))}

    before = ours()
    yield
    assert ours() - before == set()


def test_engine_not_running_names_the_socket_and_the_fix(engine_target: Target) -> None:
    socket_path = f"/tmp/no-engine-{uuid.uuid4().hex[:8]}.sock"
    executor = engine_target.executor()
    executor.address = f"unix://{socket_path}"
    with pytest.raises(EngineUnavailableError) as info:
        executor.run_sync(tasks.add, [1, 2], {}, META)
    message = str(info.value)
    assert socket_path in message
    assert "Start the" in message


def test_missing_image_with_pull_never(engine_target: Target) -> None:
    executor = engine_target.executor(pull_policy="never")
    executor.image = "oci-executor-test/does-not-exist:1"
    with pytest.raises(ImageNotFoundError) as info:
        executor.run_sync(tasks.add, [1, 2], {}, META)
    assert "oci-executor-test/does-not-exist:1" in str(info.value)
    assert "pull_policy='missing'" in str(info.value)


def test_failed_pull_names_the_image(engine_target: Target) -> None:
    executor = engine_target.executor()
    executor.image = "oci-executor-test/does-not-exist:1"
    with pytest.raises(ImagePullError, match="could not pull image 'oci-executor-test/does-not-exist:1'"):
        executor.run_sync(tasks.add, [1, 2], {}, META)


def test_pull_always_never_uses_a_stale_local_image(engine_target: Target) -> None:
    # The test image exists only locally and no registry is reachable: "always" must fail.
    executor = engine_target.executor(pull_policy="always")
    with pytest.raises(ImagePullError, match=engine_target.image):
        executor.run_sync(tasks.add, [1, 2], {}, META)


def test_image_without_python(engine_target: Target) -> None:
    executor = engine_target.executor()
    executor.image = engines.test_image("nopython")
    with pytest.raises(ImageHasNoPythonError) as info:
        executor.run_sync(tasks.add, [1, 2], {}, META)
    assert executor.image in str(info.value)
    assert "'python' option" in str(info.value)


def test_python_version_mismatch_names_both_versions(engine_target: Target) -> None:
    executor = engine_target.executor()
    executor.image = engines.test_image("3.9")
    with pytest.raises(PythonVersionMismatchError) as info:
        executor.run_sync(tasks.add, [1, 2], {}, META)
    host = ".".join(map(str, sys.version_info[:2]))
    assert "Python 3.9" in str(info.value)
    assert f"Python {host}" in str(info.value)


DRIVER = textwrap.dedent(
    """
    import sys
    from oci_executor import OCIExecutor
    def slow():
        import time
        time.sleep(60)
        return 1
    ex = OCIExecutor(image=sys.argv[1], backend=sys.argv[2], address=sys.argv[3], idle_timeout=5)
    ex.run_sync(slow, [], {}, {"dispatch_id": sys.argv[4], "node_id": 0})
    """
)


def test_no_orphan_after_sigkill(engine_target: Target) -> None:
    """SIGKILL the process driving a 60 s task: its container goes within idle_timeout + 10 s."""
    dispatch = f"sigkill-{uuid.uuid4().hex[:8]}"
    label = f"io.oci-executor.dispatch-id={dispatch}"
    client = engines._client(engine_target.backend, engine_target.address)

    def ours() -> list[str]:
        return engines.container_ids(client, label)

    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            DRIVER,
            engine_target.image,
            engine_target.backend,
            engine_target.address,
            dispatch,
        ]
    )
    try:
        deadline = time.monotonic() + 60
        while not ours():
            assert proc.poll() is None, "the driver ended before its container appeared"
            assert time.monotonic() < deadline, "no container appeared"
            time.sleep(0.1)
        time.sleep(1.5)  # let the task start
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 5 + 10
        while ours() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ours() == [], "the container outlived its killed driver by more than idle_timeout + 10 s"
    finally:
        proc.kill()
        client.close()
