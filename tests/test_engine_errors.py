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
from typing import Any

import pytest

from oci_executor.errors import (
    EngineUnavailableError,
    ImageHasNoPythonError,
    ImageNotFoundError,
    ImagePullError,
    OCIExecutorError,
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
    with pytest.raises(
        ImagePullError, match="^Image 'oci-executor-test/does-not-exist:1' is not in the"
    ) as info:
        executor.run_sync(tasks.add, [1, 2], {}, META)
    message = str(info.value)
    assert f"`{engine_target.backend} images`" in message  # how to see what the store holds
    assert "use pull_policy='missing'" not in message  # it is already 'missing'
    assert "oci-executor-podman-" not in message  # no throwaway socket path


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


def _stat_tmp() -> dict[str, Any]:
    import os
    import stat

    st = os.stat("/tmp")
    with open("/tmp/oci-copy/a/b/file.txt", encoding="utf-8") as handle:
        return {"mode": stat.S_IMODE(st.st_mode), "content": handle.read()}


def test_copy_in_keeps_tmp_sticky_and_creates_missing_folders(engine_target: Target) -> None:
    """The archive verbs on a live container: missing folders appear, /tmp keeps mode 1777."""
    from oci_executor.registry import shared_backend

    executor = engine_target.executor()
    seen: list[Any] = []

    def copy_first(container: Any) -> None:
        backend = shared_backend(engine_target.backend, executor.backend_config())
        backend.copy_in(container, "/tmp/oci-copy/a/b", {"file.txt": b"hello"})
        seen.append(backend.copy_out(container, "/tmp/oci-copy/a"))

    facts = executor.run_sync(_stat_tmp, [], {}, META, on_container=copy_first).load_value()
    assert facts == {"mode": 0o1777, "content": "hello"}
    assert seen[0] == {"b/file.txt": b"hello"}


def test_a_start_that_fails_with_any_error_removes_the_container(
    engine_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine dropping between create and start (any exception) leaves no container."""
    from oci_executor.backend import BackendConfig, ContainerSpec
    from oci_executor.backends.shared.engine import EngineBackend
    from oci_executor.registry import select_backend

    def drop(self: Any, obj: Any, spec: Any) -> None:
        raise ConnectionResetError("the engine went away")

    backend = select_backend(engine_target.backend, BackendConfig(address=engine_target.address))
    assert isinstance(backend, EngineBackend)
    monkeypatch.setattr(type(backend), "_before_start", drop)
    spec = ContainerSpec(
        image=engine_target.image, labels={"io.oci-executor.managed": "true"}, command=("true",)
    )
    try:
        with pytest.raises(OCIExecutorError) as info:
            backend.create(spec)
    finally:
        backend.close()
    assert info.value.address == engine_target.address  # our errors carry where it happened
    # the fixture checks that no container is left


def test_errors_carry_their_fields(engine_target: Target) -> None:
    executor = engine_target.executor(pull_policy="never")
    executor.image = "oci-executor-test/does-not-exist:1"
    with pytest.raises(ImageNotFoundError) as info:
        executor.run_sync(tasks.add, [1, 2], {}, META)
    assert info.value.address == engine_target.address
    assert info.value.image == "oci-executor-test/does-not-exist:1"


def test_stop_and_remove_of_a_gone_container_are_fine_and_cancel_says_so(engine_target: Target) -> None:
    import asyncio

    from oci_executor.backend import BackendConfig, Container
    from oci_executor.registry import select_backend

    backend = select_backend(engine_target.backend, BackendConfig(address=engine_target.address))
    gone = Container("0" * 64, engine_target.backend, "", "", "", "", engine_target.address)
    try:
        backend.stop(gone)
        backend.remove(gone)
    finally:
        backend.close()
    executor = engine_target.executor()
    handle = {"container": {**gone.__dict__, "address": "unix:///nonexistent/engine.sock"}}
    assert asyncio.run(executor.cancel({}, handle)) is False  # could not reach the engine to kill it
