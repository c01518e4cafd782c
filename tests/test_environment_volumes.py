"""The logic of environments on a remote engine (oci_executor/environments/volumes.py), against
an in-memory engine: publish once, never use a half-copied volume, sweep a dead builder's
leftovers, let the first of two machines win, never remove one in use. The same code against
real engines over ssh: tests/test_environments.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from oci_executor.environments import store, volumes
from oci_executor.environments.build import Environment
from oci_executor.errors import ContainerError, EnvironmentBuildError


class FakeEngine:
    """Volumes and helper containers as an engine keeps them; fills extract the real archive."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.volumes: dict[str, dict[str, str]] = {}
        self.helpers: dict[str, dict[str, str]] = {}
        self.in_use: set[str] = set()
        self.fills = 0
        self.on_fill = None  # type: ignore[var-annotated]
        self.fail_fill = ""

    def where(self) -> str:
        return "docker at ssh://fake"

    def list_volumes(self, label: str) -> list[tuple[str, dict[str, str]]]:
        name, _, value = label.partition("=")
        return [(n, dict(ls)) for n, ls in self.volumes.items() if _matches(ls, name, value)]

    def volume_labels(self, name: str) -> dict[str, str] | None:
        return dict(self.volumes[name]) if name in self.volumes else None

    def create_volume(self, name: str, labels: Mapping[str, str]) -> dict[str, str]:
        self.volumes.setdefault(name, dict(labels))  # Docker: an existing name is returned as it is
        return dict(self.volumes[name])

    def remove_volume(self, name: str) -> bool:
        if name in self.in_use:
            return False
        self.volumes.pop(name, None)
        return True

    def fill_volume(
        self, name: str, image: str, python: str, mount: str, archive: str, labels: Mapping[str, str]
    ) -> None:
        helper = f"helper{len(self.helpers)}"
        self.helpers[helper] = dict(labels)
        try:
            if self.fail_fill:
                raise ContainerError(self.fail_fill)
            with tarfile.open(archive) as tar:
                for member in tar:
                    assert (member.uid, member.gid) == (0, 0) and not member.name.startswith(("/", ".."))
                tar.extractall(self.root / name, filter="data")
            self.fills += 1
            if self.on_fill is not None:
                self.on_fill()
        finally:
            self.helpers.pop(helper)

    def list_helpers(self, label: str) -> list[tuple[str, dict[str, str]]]:
        name, _, value = label.partition("=")
        return [(h, ls) for h, ls in self.helpers.items() if _matches(ls, name, value)]

    def remove_helper(self, container_id: str) -> None:
        self.helpers.pop(container_id, None)


def _matches(labels: Mapping[str, str], name: str, value: str) -> bool:
    return name in labels and (not value or labels[name] == value)


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Environment:
    monkeypatch.setenv("OCI_EXECUTOR_ENV_DIR", str(tmp_path / "store"))
    store.ensure()
    folder = Path(store.env_dir("k1"))
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (folder / store.META_FILE).write_text('{"resolved": ["pkg-1.0-py3-none-any.whl"], "target": "cp311/x"}')
    return Environment("k1", str(folder), ("pkg",))


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_published_once_then_found(local_env: Environment, tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path / "engine")
    assert volumes.find(engine, "k1") is None
    data = volumes.publish(engine, local_env, "img", "python3", "/opt/oci-executor/env")
    assert (tmp_path / "engine" / data / "pkg" / "__init__.py").read_text() == "VALUE = 1\n"
    assert volumes.find(engine, "k1") == data
    assert volumes.publish(engine, local_env, "img", "python3", "/opt/oci-executor/env") == data
    assert engine.fills == 1 and engine.helpers == {}
    assert os.listdir(store.path("tmp")) == []  # the archive is gone
    (entry,) = volumes.entries(engine)
    assert (entry.key, entry.packages, entry.target) == ("k1", ["pkg-1.0-py3-none-any.whl"], "cp311/x")
    assert entry.path == f"volume {data} on docker at ssh://fake" and entry.size > 0


def test_a_killed_builder_leaves_nothing_used_and_its_leftovers_go(
    local_env: Environment, tmp_path: Path
) -> None:
    engine = FakeEngine(tmp_path / "engine")
    dead = f"{socket.gethostname()}:{_dead_pid()}"
    half = "oci-env-k1-deadbeef"
    engine.volumes[half] = {volumes.KEY: "k1", volumes.ROLE: "data", volumes.BUILDER: dead}
    engine.helpers["h-dead"] = {volumes.HELPER: "k1", volumes.BUILDER: dead}
    assert volumes.find(engine, "k1") is None  # no marker: the half-copied volume is never used
    data = volumes.publish(engine, local_env, "img", "python3", "/opt/oci-executor/env")
    assert data != half and half not in engine.volumes and engine.helpers == {}
    # A live builder's volume (this process) is left alone by prune's sweep.
    engine.volumes["oci-env-k2-live"] = {
        volumes.KEY: "k2",
        volumes.ROLE: "data",
        volumes.BUILDER: volumes.builder_id(),
    }
    assert volumes.sweep(engine) == []


def test_a_failed_copy_removes_its_volume_and_says_where_the_space_went(
    local_env: Environment, tmp_path: Path
) -> None:
    engine = FakeEngine(tmp_path / "engine")
    engine.fail_fill = "Docker failed to copy: write /x: no space left on device"
    with pytest.raises(
        EnvironmentBuildError, match="no space left on the disk of the engine docker at ssh://fake"
    ):
        volumes.publish(engine, local_env, "img", "python3", "/opt/oci-executor/env")
    assert engine.volumes == {} and engine.helpers == {}
    assert os.listdir(store.path("tmp")) == []


def test_when_another_machine_publishes_first_its_copy_is_used(
    local_env: Environment, tmp_path: Path
) -> None:
    engine = FakeEngine(tmp_path / "engine")
    theirs = "oci-env-k1-0therhost"

    def other_machine_wins() -> None:
        engine.volumes[theirs] = {volumes.KEY: "k1", volumes.ROLE: "data", volumes.BUILDER: "elsewhere:1"}
        engine.volumes["oci-env-k1"] = {volumes.KEY: "k1", volumes.ROLE: "ready", volumes.DATA: theirs}

    engine.on_fill = other_machine_wins
    assert volumes.publish(engine, local_env, "img", "python3", "/opt/oci-executor/env") == theirs
    assert sorted(engine.volumes) == ["oci-env-k1", theirs]  # ours removed


def test_prune_never_removes_one_in_use(local_env: Environment, tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path / "engine")
    data = volumes.publish(engine, local_env, "img", "python3", "/opt/oci-executor/env")
    engine.in_use.add(data)
    assert volumes.remove(engine, "k1") == "in use by a container"
    assert volumes.find(engine, "k1") == data
    engine.in_use.clear()
    with store.locked("k1", "use", shared=True):
        held = subprocess.run(
            [
                sys.executable,
                "-c",
                "from oci_executor.environments import store, volumes; print(volumes.remove(None, 'k1'))",
            ],
            capture_output=True,
            text=True,
            env={**os.environ},
        )
    assert held.stdout.strip() == "in use by a running process", held.stderr
    assert volumes.remove(engine, "k1") == "removed"
    assert engine.volumes == {}


def test_a_marker_whose_data_is_gone_is_swept(local_env: Environment, tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path / "engine")
    engine.volumes["oci-env-k1"] = {volumes.KEY: "k1", volumes.ROLE: "ready", volumes.DATA: "oci-env-k1-gone"}
    assert volumes.find(engine, "k1") is None
    data = volumes.publish(engine, local_env, "img", "python3", "/opt/oci-executor/env")
    assert volumes.find(engine, "k1") == data


def test_remote_engines_are_remembered_once(local_env: Environment) -> None:
    volumes.remember("docker", "ssh://root@h", "/k", "docker at ssh://root@h")
    volumes.remember("docker", "ssh://root@h", "/k", "docker at ssh://root@h")
    assert volumes.remembered() == [
        {
            "backend": "docker",
            "address": "ssh://root@h",
            "ssh_identity": "/k",
            "where": "docker at ssh://root@h",
        }
    ]


def test_the_archive_holds_the_folder_relative_and_owned_by_root(local_env: Environment) -> None:
    path = volumes._archive(local_env.path, "k1")
    try:
        with tarfile.open(path) as tar:
            names = sorted(m.name for m in tar)
            owners = {(m.uid, m.gid, m.uname) for m in tar}
            content = tar.extractfile("pkg/__init__.py")
            assert content is not None and content.read() == b"VALUE = 1\n"
    finally:
        os.remove(path)
    assert names == ["oci-environment.json", "pkg", "pkg/__init__.py"]
    assert owners == {(0, 0, "root")}


def test_a_dead_copiers_archive_is_swept_from_the_store(local_env: Environment) -> None:
    from oci_executor.environments import command

    dead = Path(store.path("tmp", f"k1.{_dead_pid()}.abc.tar"))
    live = Path(store.path("tmp", f"k1.{os.getpid()}.def.tar"))
    dead.write_bytes(b"x")
    live.write_bytes(b"x")
    command._sweep_tmp()
    assert not dead.exists() and live.exists()
