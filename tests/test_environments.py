"""Environments of declared packages, against a package index this module serves on the loopback.

Everything is real: wheels built with ``pip wheel`` from small local projects, an sdist-only
project, pip on the host resolving from the index over HTTP, the engines mounting the result.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oci_executor.environments import store, volumes
from oci_executor.errors import EnvironmentBuildError
from tests import engines, package_index, tasks
from tests.conftest import Target, _leaving_nothing
from tests.test_contract import covalent_task

META = {"dispatch_id": "environments", "node_id": 0}


class Index:
    """The served index: its URL, the paths asked for, and an optional slow download."""

    def __init__(self, url: str, files: Path) -> None:
        self.url = url
        self.files = files
        self.requests: list[str] = []
        self.slow: str = ""
        self.slow_started = threading.Event()

    def wheel_downloads(self) -> list[str]:
        return [p for p in self.requests if p.endswith(".whl")]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    files = package_index.build_index(tmp_path_factory.mktemp("index"))
    state: dict[str, Index] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(files), **kwargs)

        def do_GET(self) -> None:  # noqa: N802 - the base's name
            idx = state["index"]
            idx.requests.append(self.path)
            if idx.slow and idx.slow in self.path:
                idx.slow_started.set()
                time.sleep(60)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["index"] = Index(f"http://127.0.0.1:{server.server_address[1]}/simple/", files)
    try:
        yield state["index"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def env_store(index: Index, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh store, readable by the rootless test user; pip asks only the test index."""
    root = Path(tempfile.mkdtemp(prefix="oci-envs-", dir="/tmp"))
    root.chmod(0o755)
    monkeypatch.setenv("OCI_EXECUTOR_ENV_DIR", str(root))
    for name, value in package_index.pip_environment(index.url, root / "pip-cache").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")  # every resolution shows on the index
    from oci_executor.environments import attach

    monkeypatch.setattr(attach, "_memo", {})
    index.requests.clear()
    yield root
    _prune_remote_copies(root)
    subprocess.run(["rm", "-rf", str(root)], check=False)


def _prune_remote_copies(root: Path) -> None:
    """Remove what a store copied to remote engines (named volumes), so none stays on them."""
    if (root / "engines").is_dir() and os.listdir(root / "engines"):
        _cli("env", "prune", env={**os.environ, "OCI_EXECUTOR_ENV_DIR": str(root)})


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "oci_executor.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


@pytest.fixture(params=engines.CONTRACT_TARGETS)
def any_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from _leaving_nothing(request.param)


def test_packages_option_builds_once_then_hits_the_cache(
    env_store: Path, index: Index, any_target: Target
) -> None:
    from oci_executor.pool import POOL

    executor = any_target.executor(packages=["ocitest-alpha"])
    first = executor.run_sync(tasks.uses_packages, [], {}, META)
    assert first.ok, first.traceback
    value = first.load_value()
    assert value.startswith("ocitest-alpha 1.0|ocitest-beta 2.0|")  # the dependency, newest version
    folder = value.split("|")[2]
    if any_target.is_engine:
        assert folder == "/opt/oci-executor/env"
    else:
        assert folder.startswith(str(env_store / "envs"))
    assert sorted(os.path.basename(p) for p in index.wheel_downloads()) == [
        "ocitest_alpha-1.0-py3-none-any.whl",
        "ocitest_beta-2.0-py3-none-any.whl",
    ]

    # A plain task never lands in the environment's warm container, and vice versa.
    other = any_target.executor().run_sync(tasks.plain, [], {}, META)
    if any_target.is_engine:
        assert other.container_id != first.container_id
    assert other.load_value() == "plain"

    # Another process: no resolver, no download; the same folder. (A backend the test session
    # registers itself, such as the podman-cli template, is not there in a fresh process.)
    from oci_executor.registry import builtin_registry

    if any_target.backend not in builtin_registry().names():
        return
    POOL.drain()
    index.requests.clear()
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from tests import tasks
from tests.conftest import Target
target = Target(*{(any_target.id, any_target.backend, any_target.address, any_target.image)!r})
outcome = target.executor(packages=["ocitest-alpha"], keep_warm=0).run_sync(tasks.uses_packages, [], {{}}, {META!r})
print(outcome.load_value() if outcome.ok else outcome.traceback)
"""
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert again.stdout.strip().splitlines()[-1:] == [value], again.stderr[-2000:]
    assert index.requests == []
    listed = _cli("env", "ls").stdout
    assert "ocitest_alpha==1.0, ocitest_beta==2.0" in listed and "ago" in listed


def test_deps_pip_becomes_the_environment_with_no_network_in_the_container(
    env_store: Path, target: Target
) -> None:
    from covalent import DepsPip

    before = [DepsPip(packages=["ocitest-beta==1.0"]).apply()]

    def needs_beta() -> str:
        import ocitest_beta

        return ocitest_beta.VALUE

    # No network in the container, and a pip there would find no index: the host did the work.
    offline = {"network": "none"} if target.is_engine else {}
    executor = target.executor(env={"PIP_NO_INDEX": "1"}, **offline)
    outcome = executor.run_sync(*covalent_task(needs_beta, call_before=before), META)
    assert outcome.ok, outcome.traceback
    assert outcome.load_value() == "ocitest-beta 1.0"


def test_two_processes_racing_for_one_key_build_it_once(env_store: Path, index: Index) -> None:
    argv = [sys.executable, "-m", "oci_executor.cli", "env", "build", "--backend", "local", "ocitest-alpha"]
    racers = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [r.communicate(timeout=300) for r in racers]
    assert [r.returncode for r in racers] == [0, 0], outputs
    keys = {out.strip().splitlines()[-1].split()[1] for out, _ in outputs}
    assert len(keys) == 1
    assert os.listdir(env_store / "envs") == list(keys)
    # One resolution: each wheel came off the index once.
    assert len(index.wheel_downloads()) == 2, index.requests
    assert [n for n in os.listdir(env_store / "tmp")] == []


def test_a_killed_builder_leaves_nothing_and_the_next_takes_over(env_store: Path, index: Index) -> None:
    argv = [sys.executable, "-m", "oci_executor.cli", "env", "build", "--backend", "local", "ocitest-alpha"]
    index.slow, index.slow_started = "ocitest_beta-2.0", threading.Event()
    builder = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert index.slow_started.wait(120), "the first builder never reached the download"
    finally:
        os.killpg(builder.pid, signal.SIGKILL)
        builder.wait()
        index.slow = ""
    assert not os.listdir(env_store / "envs")
    started = time.monotonic()
    second = _cli("env", "build", "--backend", "local", "ocitest-alpha")
    assert second.returncode == 0, second.stderr
    assert time.monotonic() - started < 55  # it did not wait for the dead builder's download
    (key,) = os.listdir(env_store / "envs")
    assert (env_store / "envs" / key / store.META_FILE).is_file()
    assert _cli("env", "prune", "--key", "none").returncode == 0  # sweeps the dead builder's folder
    assert os.listdir(env_store / "tmp") == []


def test_prune_keeps_what_a_running_process_uses(env_store: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from oci_executor.environments import environment_for\n"
            "from oci_executor.registry import select_backend\n"
            "from oci_executor import settings\n"
            "values = settings.parse({**settings.defaults(), 'backend': 'local'})\n"
            "b = select_backend('local', settings.backend_config(values))\n"
            "env = environment_for(b, settings.container_spec(values, {}), ('ocitest-beta==1.0',))\n"
            "print(env.key, flush=True); time.sleep(300)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        key = holder.stdout.readline().strip()
        assert key
        pruned = _cli("env", "prune")
        assert f"kept {key}: in use" in pruned.stdout
        assert (env_store / "envs" / key).is_dir()
    finally:
        holder.kill()
        holder.wait()
    pruned = _cli("env", "prune")
    assert f"removed {key}" in pruned.stdout
    assert not (env_store / "envs" / key).exists()
    assert "no environments" in _cli("env", "ls").stdout


def test_an_sdist_only_package_is_named_with_the_fix(env_store: Path, index: Index) -> None:
    from oci_executor import settings
    from oci_executor.environments import environment_for
    from oci_executor.registry import select_backend

    values = settings.parse({**settings.defaults(), "backend": "local"})
    backend = select_backend("local", settings.backend_config(values))
    spec = settings.container_spec(values, {})
    with pytest.raises(EnvironmentBuildError) as caught:
        environment_for(backend, spec, ("ocitest-alpha", "ocitest-gamma"))
    message = str(caught.value)
    assert "'ocitest-gamma' has no wheel for cp3" in message and "only a source distribution" in message
    assert "pip wheel --no-deps ocitest-gamma" in message and "wheels_only=False" in message
    assert index.url in message
    assert os.listdir(env_store / "envs") == [] and os.listdir(env_store / "tmp") == []
    # wheels_only=False: pip builds the wheel here, and the task gets it.
    env = environment_for(backend, spec, ("ocitest-gamma",), wheels_only=False)
    assert (Path(env.path) / "ocitest_gamma" / "__init__.py").is_file()


def test_a_bad_requirement_names_it_and_the_index(env_store: Path, index: Index, target: Target) -> None:
    from oci_executor.errors import ConfigurationError

    with pytest.raises(EnvironmentBuildError, match=r"no release of 'ocitest-nosuch>=3'.*" + index.url):
        target.executor(packages=["ocitest-nosuch>=3"]).run_sync(tasks.plain, [], {}, META)
    with pytest.raises(ConfigurationError, match="is not a valid requirement"):
        target.executor(packages=["ocitest alpha ==="]).run_sync(tasks.plain, [], {}, META)
    assert os.listdir(env_store / "envs") == []


# -- through a real Covalent server ---------------------------------------------------------


@pytest.fixture(scope="module")
def server_store(index: Index) -> Iterator[Path]:
    """A Covalent server whose environment (store, pip configuration) points at the test index."""
    from tests.covalent_server import running_server

    root = Path(tempfile.mkdtemp(prefix="oci-envs-server-", dir="/tmp"))
    root.chmod(0o755)
    saved = dict(os.environ)
    os.environ.update(package_index.pip_environment(index.url, root / "pip-cache"))
    os.environ.update({"OCI_EXECUTOR_ENV_DIR": str(root), "PIP_NO_CACHE_DIR": "1"})
    try:
        with running_server({"executors.oci.image": engines.test_image()}):
            yield root
        _prune_remote_copies(root)  # the server is gone: nothing holds them now
    finally:
        os.environ.clear()
        os.environ.update(saved)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def package_workflow(executor, packaged):  # type: ignore[no-untyped-def]
    """Two electrons: one declares DepsPip, the other runs on an executor with ``packages``."""
    import covalent as ct

    @ct.electron(executor=executor, deps_pip=ct.DepsPip(packages=["ocitest-beta==1.0"]))
    def with_deps_pip():  # type: ignore[no-untyped-def]
        import ocitest_beta  # type: ignore[import-not-found]

        return ocitest_beta.VALUE

    @ct.electron(executor=packaged)
    def with_option(first):  # type: ignore[no-untyped-def]
        import ocitest_alpha  # type: ignore[import-not-found]
        import ocitest_beta  # type: ignore[import-not-found]

        return [first, ocitest_alpha.VALUE, ocitest_beta.VALUE]

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return with_option(with_deps_pip())

    return workflow


def test_a_workflow_with_packages_through_covalent_then_from_the_cache(
    server_store: Path, index: Index, server_target: Target
) -> None:
    import covalent as ct
    from covalent._shared_files.config import get_config

    workflow = package_workflow(server_target.executor(), server_target.executor(packages=["ocitest-alpha"]))
    expected = ["ocitest-beta 1.0", "ocitest-alpha 1.0", "ocitest-beta 2.0"]
    for attempt in ("first", "cached"):
        index.requests.clear()
        result = ct.get_result(ct.dispatch(workflow)(), wait=True)
        nodes = [result.get_node_result(i) for i in range(2)]
        details = [(n["node_name"], n["status"], n["error"], n["stderr"]) for n in nodes]
        assert str(result.status) == "COMPLETED", f"{attempt}: {result.error} {details}"
        assert result.result == expected
    assert index.requests == []  # the second dispatch took both environments from the store
    # (The first may already find them: an image with the same ID on another engine shares them.)
    listed = json.loads(
        _cli("env", "ls", "--json", env={**os.environ, "OCI_EXECUTOR_ENV_DIR": str(server_store)}).stdout
    )
    engines_used = [engine for entry in listed for engine in entry["engines"]]
    where = server_target.address.rsplit("@", 1)[-1] or "local"
    assert any(where in engine for engine in engines_used), engines_used
    logfile = os.path.join(get_config("user_interface.log_dir"), "covalent_ui.log")
    with open(logfile, errors="replace") as handle:
        text = handle.read()
    assert "oci_executor.environments: environment: resolving ocitest-beta==1.0 for" in text
    assert "installing 1 wheels" in text


# -- remote engines over ssh: built here, copied there once, mounted from there --------------


def _engine_volumes(target: Target) -> dict[str, dict[str, str]]:
    """Our environment volumes on a remote target's engine, listed through its local socket."""
    client = engines._client(target.backend, target.local_address)
    try:
        found = client.volumes.list(filters={"label": volumes.KEY})
        return {str(v.name): dict(v.attrs.get("Labels") or {}) for v in found}
    finally:
        client.close()


def _helpers(target: Target) -> list[str]:
    client = engines._client(target.backend, target.local_address)
    try:
        return engines.container_ids(client, volumes.HELPER)
    finally:
        client.close()


def _in_another_process(target: Target, **options: object) -> str:
    """Run ``tasks.uses_packages`` on ``target`` in a fresh process; its value (or traceback)."""
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from tests import tasks
from tests.conftest import Target
target = Target(*{(target.id, target.backend, target.address, target.image, target.identity, target.local_address)!r})
outcome = target.executor(keep_warm=0, **{options!r}).run_sync(tasks.uses_packages, [], {{}}, {META!r})
print(outcome.load_value() if outcome.ok else outcome.traceback)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return (done.stdout.strip().splitlines() or [done.stderr[-2000:]])[-1]


def test_a_remote_engine_gets_one_copy_then_takes_it_from_there_then_prune(
    env_store: Path, index: Index, remote_target: Target
) -> None:
    before = set(_engine_volumes(remote_target))
    expected = "ocitest-alpha 1.0|ocitest-beta 2.0|/opt/oci-executor/env"
    assert _in_another_process(remote_target, packages=["ocitest-alpha"]) == expected
    assert len(index.wheel_downloads()) == 2  # resolved and downloaded on this host
    made = {name: labels for name, labels in _engine_volumes(remote_target).items() if name not in before}
    (marker,) = [name for name, labels in made.items() if labels[volumes.ROLE] == "ready"]
    key = made[marker][volumes.KEY]
    data = made[marker][volumes.DATA]
    assert sorted(made) == sorted([marker, data]) and made[data][volumes.ROLE] == "data"
    assert _helpers(remote_target) == []

    # Another process, without this host's copy: no pip, no copy; the engine's volume serves it.
    subprocess.run(["rm", "-rf", str(env_store / "envs" / key)], check=True)
    index.requests.clear()
    assert _in_another_process(remote_target, packages=["ocitest-alpha"]) == expected
    assert index.requests == []
    assert set(_engine_volumes(remote_target)) - before == {marker, data}  # no second build

    listed = _cli("env", "ls")
    row = next(line for line in listed.stdout.splitlines() if line.startswith(key))
    assert (
        "ocitest_alpha==1.0, ocitest_beta==2.0" in row
        and f"volume on {remote_target.backend} at ssh://" in row
    )

    # Never one in use: a container (not even started) that mounts it keeps it.
    client = engines._client(remote_target.backend, remote_target.local_address)
    try:
        holder = client.containers.create(
            remote_target.image, command=["python3", "-c", ""], volumes={data: {"bind": "/env", "mode": "ro"}}
        )
        try:
            pruned = _cli("env", "prune")
            assert f"kept {key} on {remote_target.backend} at ssh://" in pruned.stdout, pruned
            assert "in use by a container" in pruned.stdout
        finally:
            holder.remove(force=True)
    finally:
        client.close()
    pruned = _cli("env", "prune")
    assert f"removed {key} from {remote_target.backend} at ssh://" in pruned.stdout, pruned
    assert set(_engine_volumes(remote_target)) - before == set()


def test_two_processes_racing_for_a_remote_engine_copy_it_once(
    env_store: Path, index: Index, remote_target: Target
) -> None:
    before = set(_engine_volumes(remote_target))
    argv = [sys.executable, "-m", "oci_executor.cli", "env", "build", "--backend", remote_target.backend]
    argv += ["--address", remote_target.address, "--ssh-identity", remote_target.identity]
    argv += ["--image", remote_target.image, "ocitest-alpha"]
    racers = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [r.communicate(timeout=300) for r in racers]
    assert [r.returncode for r in racers] == [0, 0], outputs
    said = {out.strip().splitlines()[-1].rsplit(" ", 1)[-1] for out, _ in outputs}
    made = set(_engine_volumes(remote_target)) - before
    assert len(said) == 1 and len(made) == 2 and said <= made, (said, made)  # one marker, one copy
    assert len(index.wheel_downloads()) == 2, index.requests
    assert _helpers(remote_target) == []


def test_a_workflow_with_packages_on_a_remote_engine_through_covalent_then_from_the_cache(
    server_store: Path, index: Index, remote_target: Target
) -> None:
    import covalent as ct

    before = set(_engine_volumes(remote_target))
    workflow = package_workflow(remote_target.executor(), remote_target.executor(packages=["ocitest-alpha"]))
    expected = ["ocitest-beta 1.0", "ocitest-alpha 1.0", "ocitest-beta 2.0"]
    made: dict[str, set[str]] = {}
    for attempt in ("first", "cached"):
        index.requests.clear()
        result = ct.get_result(ct.dispatch(workflow)(), wait=True)
        nodes = [result.get_node_result(i) for i in range(2)]
        details = [(n["node_name"], n["status"], n["error"], n["stderr"]) for n in nodes]
        assert str(result.status) == "COMPLETED", f"{attempt}: {result.error} {details}"
        assert result.result == expected
        made[attempt] = set(_engine_volumes(remote_target)) - before
    assert index.requests == []  # the second dispatch resolved nothing
    # Two environments (DepsPip's, the option's): a marker and a copy each, made once.
    assert len(made["first"]) == 4 and made["cached"] == made["first"], made
    assert _helpers(remote_target) == []


def test_what_a_killed_remote_copier_left_is_never_used_and_goes(
    env_store: Path, index: Index, remote_target: Target
) -> None:
    """A copier killed mid-copy leaves an unpublished volume and its helper (made here as it
    would: labelled with this host and a PID that is dead); the next build sweeps both."""
    import socket

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    builder = f"{socket.gethostname()}:{dead.stdout.strip()}"
    first = _cli(*_build_argv(remote_target), "ocitest-beta==1.0")
    assert first.returncode == 0, first.stderr
    data = first.stdout.strip().splitlines()[-1].rsplit(" ", 1)[-1]
    key = _engine_volumes(remote_target)[data][volumes.KEY]
    assert _cli("env", "prune").returncode == 0  # nothing on the engine now; the key is known
    client = engines._client(remote_target.backend, remote_target.local_address)
    half = f"oci-env-{key}-deadbeef"
    try:
        client.volumes.create(
            name=half, labels={volumes.KEY: key, volumes.ROLE: "data", volumes.BUILDER: builder}
        )
        client.containers.create(
            remote_target.image,
            command=["python3", "-c", ""],
            labels={volumes.HELPER: key, volumes.BUILDER: builder},
            volumes={half: {"bind": "/opt/oci-executor/env", "mode": "rw"}},
        )
        again = _cli(*_build_argv(remote_target), "ocitest-beta==1.0")
        assert again.returncode == 0, again.stderr
        published = again.stdout.strip().splitlines()[-1].rsplit(" ", 1)[-1]
        assert published != half
        mine = {name for name, labels in _engine_volumes(remote_target).items() if labels[volumes.KEY] == key}
        assert mine == {f"oci-env-{key}", published}  # the half-copied volume is gone
        assert _helpers(remote_target) == []
    finally:
        for helper in _helpers(remote_target):
            client.containers.get(helper).remove(force=True)
        for name in _engine_volumes(remote_target):
            if name == half:
                client.volumes.get(name).remove(force=True)
        client.close()


def _build_argv(target: Target) -> list[str]:
    return ["env", "build", "--backend", target.backend, "--address", target.address] + [
        "--ssh-identity",
        target.identity,
        "--image",
        target.image,
    ]
