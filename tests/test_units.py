"""Unit tests of our own logic: registry, task protocol, archives, options."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from oci_executor import OCIExecutor
from oci_executor.backend import Backend, BackendConfig
from oci_executor.backends.local import LocalBackend
from oci_executor.backends.shared.archive import make_tar, read_tar
from oci_executor.covalent.wrapper import build_task
from oci_executor.errors import (
    ConfigurationError,
    ContainerError,
    EngineUnavailableError,
    RunnerError,
    TaskSerializationError,
    UnknownBackendError,
)
from oci_executor.protocol import ProtocolError, decode_record
from oci_executor.registry import BackendRegistry, build_registry, select_backend
from oci_executor.task import outcome_from_record
from tests import tasks


class _Down(LocalBackend):
    """An engine backend whose engine is not installed here."""

    name = "down"
    isolated = True
    priority = 30

    def check(self) -> None:
        raise EngineUnavailableError(f"{self.describe()} is not available")

    def installed(self) -> bool:
        return False


class _Broken(_Down):
    """An engine backend whose engine is installed but does not work."""

    def check(self) -> None:
        raise EngineUnavailableError("XDG_RUNTIME_DIR=/run/user/0 belongs to uid 0, not to you")

    def installed(self) -> bool:
        return True


def test_builtin_backends_are_registered() -> None:
    assert {"local", "docker", "podman"} <= set(build_registry().names())


def test_unknown_backend_lists_available_names() -> None:
    with pytest.raises(UnknownBackendError) as info:
        select_backend("nosuch", registry=build_registry())
    message = str(info.value)
    assert "'nosuch'" in message
    for name in ("auto", "local", "docker", "podman"):
        assert name in message


def test_registry_rejects_a_name_taken_by_another_class() -> None:
    registry = BackendRegistry()
    registry.add(LocalBackend)
    registry.add(LocalBackend)  # the same class again is harmless

    class Other(LocalBackend):
        name = "local"

    with pytest.raises(ConfigurationError, match="registered twice"):
        registry.add(Other)


def test_auto_falls_back_to_local_only_without_any_engine(caplog: pytest.LogCaptureFixture) -> None:
    registry = BackendRegistry()
    registry.add(LocalBackend)

    class Podman(_Down):
        name = "podman"

    registry.add(Podman)
    assert select_backend("auto", registry=registry).name == "local"
    assert "tasks run on the HOST" in caplog.text  # never silently


def test_auto_never_drops_isolation_when_an_engine_is_installed_but_broken() -> None:
    registry = BackendRegistry()
    registry.add(LocalBackend)

    class Podman(_Broken):
        name = "podman"

    registry.add(Podman)
    with pytest.raises(
        EngineUnavailableError,
        match=r"^XDG_RUNTIME_DIR.*\(backend='auto' chose podman, the first engine installed here",
    ):
        select_backend("auto", registry=registry)


def test_auto_logs_what_it_picked_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    registry = BackendRegistry()
    registry.add(LocalBackend)

    class Docker(LocalBackend):
        name = "docker"
        isolated = True
        priority = 20

    class Podman(_Down):
        name = "podman"

    registry.add(Docker)
    registry.add(Podman)
    with caplog.at_level(logging.INFO, logger="oci_executor.registry"):
        assert select_backend("auto", registry=registry).name == "docker"
    assert "picked" in caplog.text and "skipped: podman" in caplog.text


def test_auto_with_nothing_available_names_what_it_tried() -> None:
    registry = BackendRegistry()

    class Docker(_Down):
        name = "docker"

    registry.add(Docker)
    with pytest.raises(EngineUnavailableError, match="found no backend.*skipped: docker"):
        select_backend("auto", registry=registry)


def test_a_named_backend_is_the_class_registered_under_that_name() -> None:
    backend = select_backend("local", BackendConfig(), registry=build_registry())
    assert isinstance(backend, LocalBackend)
    assert isinstance(backend, Backend)


def test_executor_attributes_are_json_serializable() -> None:
    executor = OCIExecutor(image="img:1", backend="docker", address="unix:///x.sock", time_limit=30)
    data = json.loads(json.dumps(executor.to_dict()))
    rebuilt = OCIExecutor().from_dict(data)
    assert rebuilt.image == "img:1"
    assert rebuilt.backend == "docker"
    assert rebuilt.address == "unix:///x.sock"
    assert rebuilt.time_limit == 30


def test_bad_pull_policy_is_rejected_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="pull_policy='sometimes'"):
        OCIExecutor(pull_policy="sometimes")


def test_build_task_unwraps_covalent_steps() -> None:
    import functools

    from covalent import DepsBash, DepsCall, DepsPip
    from covalent._workflow.transport import TransportableObject
    from covalent.executor.utils.wrappers import wrapper_fn

    before = [
        DepsBash(["echo a", "echo b"]).apply(),
        DepsPip(packages=["six"]).apply(),
        DepsCall(tasks.prepare, retval_keyword="injected").apply(),
    ]
    function = functools.partial(wrapper_fn, TransportableObject(tasks.add), before, [])
    payload = build_task(function, [TransportableObject(1)], {"y": TransportableObject(2)})
    assert [s.kind for s in payload.before] == ["bash", "pip", "call"]
    assert payload.before[0].data["commands"] == ["echo a", "echo b"]
    assert payload.before[1].data["packages"] == ["six"]
    assert payload.before[2].data["retval_key"] == "injected"
    blobs, layout = payload.encode("/work")
    assert all(isinstance(b, bytes) for b in blobs)
    assert json.loads(json.dumps(layout)) == layout  # the layout travels as JSON
    assert layout["workdir"] == "/work"
    assert layout["before"][2]["kind"] == "call"
    assert isinstance(blobs[layout["before"][2]["function"]], bytes)


def test_unpicklable_function_is_a_clear_error() -> None:
    lock = threading.Lock()

    def holds_a_lock() -> bool:
        return lock.locked()

    with pytest.raises(TaskSerializationError, match="cannot pickle the task's function"):
        build_task(holds_a_lock, [], {})


def test_unpicklable_argument_is_a_clear_error() -> None:
    with pytest.raises(TaskSerializationError, match="arguments"):
        build_task(tasks.add, [(i for i in range(3)), 1], {})


@pytest.mark.parametrize(
    "record, problem",
    [
        (b'{"ok": true, "size": 1', "not JSON"),
        (b"\x80\x04K\x01.", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"ok": "yes"}', "boolean 'ok'"),
        (b'{"ok": true}', "no value size"),
        (b'{"ok": false, "type": 7}', "wrong type"),
        (b'{"ok": false, "evil": 1}', "unknown field"),
        (b'{"ok": false, "message": "' + b"x" * (5 * 1024 * 1024) + b'"}', "over the"),
    ],
)
def test_a_bad_result_record_is_refused_without_loading_it(record: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode_record(record)


def test_a_result_shorter_than_its_record_says_is_refused() -> None:
    with pytest.raises(RunnerError, match="incomplete: 1 of 5 bytes"):
        outcome_from_record({"ok": True, "size": 5}, b"x", "", "")


def test_tar_round_trip_and_escape_refused() -> None:
    files = {"a.txt": b"alpha", "sub/b.bin": bytes(range(256))}
    data = make_tar("/tmp/oci-executor/task-1", files)
    import io
    import tarfile

    # get_archive of a folder yields entries under the folder's base name
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src:
            if member.name.startswith("tmp/oci-executor/task-1/"):
                content = src.extractfile(member) if member.isfile() else None
                member.name = "task-1/" + member.name[len("tmp/oci-executor/task-1/") :]
                dst.addfile(member, content)
    assert read_tar([out.getvalue()], "/tmp/oci-executor/task-1") == files
    with pytest.raises(ContainerError, match="outside"):
        make_tar("/tmp/x", {"../../etc/passwd": b""})


@pytest.mark.parametrize("escape", ["../xy/f", "../x/../../f", "/etc/passwd", "."])
def test_tar_refuses_paths_that_leave_the_folder_by_components(escape: str) -> None:
    # "../xy/f" under tmp/x is tmp/xy/f: a string-prefix check would let it through.
    with pytest.raises(ContainerError, match="outside"):
        make_tar("/tmp/x", {escape: b""})


def test_tar_leaves_the_folders_above_the_destination_alone() -> None:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(make_tar("/tmp/a/b", {"f": b"1"}))) as tar:
        names = {m.name: m.mode for m in tar}
    assert "tmp" not in names and "tmp/a" not in names  # /tmp keeps its mode (sticky bit)
    assert names == {"tmp/a/b": 0o755, "tmp/a/b/f": 0o644}


def test_a_misspelt_hook_implementation_fails_loudly() -> None:
    import pluggy

    from oci_executor import hookimpl, hookspecs

    class Plugin:
        @hookimpl
        def oci_executor_register_backend(self, registry):  # type: ignore[no-untyped-def]  # missing "s"
            pass

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(Plugin())
    with pytest.raises(pluggy.PluginValidationError, match="oci_executor_register_backend"):
        pm.check_pending()


def test_auto_order_comes_from_the_backends_priorities() -> None:
    assert build_registry().auto_order()[:3] == ["podman", "docker", "local"]


def test_local_backend_refuses_paths_outside_its_folder() -> None:
    backend = LocalBackend()
    from oci_executor.backend import ContainerSpec

    container = backend.create(ContainerSpec(image="ignored"))
    try:
        with pytest.raises(ContainerError, match="outside"):
            backend.copy_in(container, "/etc", {"x": b"y"})
    finally:
        backend.remove(container)
    assert not Path(container.scratch_dir).exists()


def test_third_party_backend_installs_through_entry_point(tmp_path: Path) -> None:
    """Install a backend plugin package with pip, as a third party would, and use it by name."""
    package = Path(__file__).parent / "thirdparty_backend"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", str(package)], check=True)
    try:
        code = (
            "from oci_executor import OCIExecutor\n"
            "from oci_executor.registry import default_registry\n"
            "from oci_executor.backends.local import LocalBackend\n"
            "assert 'thirdparty' in default_registry().names(), default_registry().names()\n"
            "def mul(a, b): return a * b\n"
            "out = OCIExecutor(image='img', backend='thirdparty').run_sync(mul, [6, 7], {}, {})\n"
            "print(out.load_value(), out.container_id)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        value, container_id = proc.stdout.split()
        assert value == "42"
        assert "oci-executor-local-" in container_id
    finally:
        subprocess.run([*pip, "uninstall", "-y", "oci-executor-thirdparty-example"], check=True)


def test_plugin_defaults_are_written_to_covalent_conf(tmp_path: Path) -> None:
    """A new user's first import of covalent writes [executors.oci] with our defaults."""
    import os
    import platform

    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVALENT_", "XDG_"))}
    env["HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", "import covalent"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    conf = (tmp_path / ".config" / "covalent" / "covalent.conf").read_text(encoding="utf-8")
    section = conf.split("[executors.oci]", 1)[1].split("\n[", 1)[0]
    minor = ".".join(platform.python_version_tuple()[:2])
    assert f'image = "python:{minor}-slim"' in section
    assert 'backend = "auto"' in section
    assert 'pull_policy = "missing"' in section
