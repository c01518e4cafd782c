"""Container options proven inside real containers, and their translation for each engine."""

from __future__ import annotations

import time
from typing import Any

import pytest

from oci_executor.backend import ContainerSpec
from oci_executor.backends.docker import DockerBackend, device_request
from oci_executor.backends.podman import PodmanBackend
from oci_executor.backends.shared.intent import container_intent
from oci_executor.backends.shared.runargs import run_args
from oci_executor.errors import ConfigurationError, OutOfMemoryError, TaskTimeoutError
from oci_executor.parsing import parse_gpus
from tests import engines
from tests.conftest import Target

META = {"dispatch_id": "options", "node_id": 0}


def _inside() -> dict[str, Any]:
    """What a task sees of its own limits, identity and network."""
    import os

    def read(*paths: str) -> str:
        for path in paths:
            try:
                with open(path) as handle:
                    return handle.read().strip()
            except OSError:
                continue
        return ""

    shm = os.statvfs("/dev/shm")
    return {
        "env": os.environ.get("OCI_TEST_VAR", ""),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cwd": os.getcwd(),
        "interfaces": sorted(os.listdir("/sys/class/net")),
        "memory": read("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        "cpu_max": read("/sys/fs/cgroup/cpu.max"),
        "cfs_quota": read(
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"
        ),
        "cfs_period": read(
            "/sys/fs/cgroup/cpu/cpu.cfs_period_us", "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us"
        ),
        "shm_bytes": shm.f_blocks * shm.f_frsize,
    }


def _rootless_v1(target: Target) -> bool:
    if target.backend != "podman":
        return False
    from oci_executor.backend import BackendConfig

    backend = PodmanBackend(BackendConfig(address=target.address))
    try:
        return backend.rootless() and backend.info()["host"].get("cgroupVersion") == "v1"
    finally:
        backend.close()


def test_env_reaches_the_task(engine_target: Target) -> None:
    facts = engine_target.executor(env={"OCI_TEST_VAR": "héllo"}).run_sync(_inside, [], {}, META).load_value()
    assert facts["env"] == "héllo"


def test_memory_and_cpu_limits_in_the_cgroup(engine_target: Target) -> None:
    executor = engine_target.executor(memory="256m", cpus=1.5)
    if _rootless_v1(engine_target):
        # Rootless Podman on a cgroup v1 host cannot set limits; we refuse instead of ignoring.
        with pytest.raises(ConfigurationError, match="cgroup v1"):
            executor.run_sync(_inside, [], {}, META)
        return
    facts = executor.run_sync(_inside, [], {}, META).load_value()
    assert facts["memory"] == str(256 * 1024 * 1024)
    if facts["cpu_max"]:
        assert facts["cpu_max"] == "150000 100000"
    else:
        assert (facts["cfs_quota"], facts["cfs_period"]) == ("150000", "100000")


def test_user_and_workdir(engine_target: Target) -> None:
    executor = engine_target.executor(user="1234:2345", workdir="/srv/oci-work")
    facts = executor.run_sync(_inside, [], {}, META).load_value()
    assert (facts["uid"], facts["gid"]) == (1234, 2345)
    assert facts["cwd"] == "/srv/oci-work"


def test_network_none_has_only_loopback(engine_target: Target) -> None:
    default = engine_target.executor().run_sync(_inside, [], {}, META).load_value()
    assert default["interfaces"] != ["lo"]  # the engine's default network has an interface
    isolated = engine_target.executor(network="none").run_sync(_inside, [], {}, META).load_value()
    assert isolated["interfaces"] == ["lo"]


def test_shm_size(engine_target: Target) -> None:
    facts = engine_target.executor(shm_size="96m").run_sync(_inside, [], {}, META).load_value()
    assert facts["shm_bytes"] == 96 * 1024 * 1024


def test_labels_are_added_to_ours(engine_target: Target) -> None:
    seen: dict[str, str] = {}

    def look(container: Any) -> None:
        attrs = engines.container_attrs(engine_target.backend, engine_target.address, container.id)
        seen.update(attrs["Config"]["Labels"])

    executor = engine_target.executor(labels={"team": "chemistry"})
    executor.run_sync(_inside, [], {}, {"dispatch_id": "lbl", "node_id": 7}, on_container=look)
    assert seen["team"] == "chemistry"
    assert seen["io.oci-executor.managed"] == "true"
    assert seen["io.oci-executor.dispatch-id"] == "lbl"
    assert seen["io.oci-executor.node-id"] == "7"


def test_time_limit_kills_the_task(target: Target) -> None:
    def sleepy() -> str:
        import sys
        import time

        print("started", flush=True)
        print("warming up", file=sys.stderr, flush=True)
        time.sleep(60)
        return "woke up"

    start = time.monotonic()
    with pytest.raises(TaskTimeoutError, match="time_limit of 2 s") as info:
        target.executor(time_limit=2).run_sync(sleepy, [], {}, META)
    assert time.monotonic() - start < 20
    # What the task printed before the kill is delivered with the error.
    assert info.value.stdout == "started\n"
    assert info.value.stderr == "warming up\n"


def test_out_of_memory_is_named(rootful_target: Target) -> None:

    def hog() -> int:
        blocks = []
        for _ in range(64):
            blocks.append(bytearray(16 * 1024 * 1024))
        return len(blocks)

    with pytest.raises(OutOfMemoryError, match=r"ran out of memory.*64 MiB"):
        rootful_target.executor(memory="64m").run_sync(hog, [], {}, META)


def test_local_backend_refuses_options_it_cannot_honour() -> None:
    from oci_executor import OCIExecutor

    def noop() -> None:
        return None

    with pytest.raises(ConfigurationError, match="local backend cannot honour.*memory"):
        OCIExecutor(backend="local", memory="1g").run_sync(noop, [], {}, META)


def test_local_backend_env_and_workdir(tmp_path: Any) -> None:
    from oci_executor import OCIExecutor

    workdir = str(tmp_path / "wd")
    outcome = OCIExecutor(backend="local", env={"OCI_TEST_VAR": "x1"}, workdir=workdir).run_sync(
        _inside, [], {}, META
    )
    facts = outcome.load_value()
    assert facts["env"] == "x1"
    assert facts["cwd"] == workdir


@pytest.mark.parametrize(
    ("value", "docker_request", "podman_devices"),
    [
        ("all", {"Count": -1, "DeviceIDs": []}, ["nvidia.com/gpu=all"]),
        (2, {"Count": 2, "DeviceIDs": []}, ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]),
        (
            ["0", "GPU-abc"],
            {"Count": 0, "DeviceIDs": ["0", "GPU-abc"]},
            ["nvidia.com/gpu=0", "nvidia.com/gpu=GPU-abc"],
        ),
        ("1,3", {"Count": 0, "DeviceIDs": ["1", "3"]}, ["nvidia.com/gpu=1", "nvidia.com/gpu=3"]),
    ],
)
def test_gpu_translation(value: Any, docker_request: dict[str, Any], podman_devices: list[str]) -> None:
    spec = ContainerSpec(image="img", gpus=parse_gpus(value))
    assert spec.gpus is not None
    request = device_request(spec.gpus)
    assert request["Count"] == docker_request["Count"]
    assert request["DeviceIDs"] == docker_request["DeviceIDs"]
    assert request["Capabilities"] == [["gpu"]]
    assert list(container_intent(spec, rootless=True).devices) == podman_devices
    assert "device_requests" in DockerBackend().create_kwargs(spec)
    assert _rootful_podman().create_kwargs(spec)["devices"] == podman_devices
    assert [a for a in run_args(container_intent(spec, rootless=True)) if a.startswith("--device=")] == [
        f"--device={device}" for device in podman_devices
    ]


def _rootful_podman() -> PodmanBackend:
    podman = PodmanBackend()
    podman._info = {"host": {"security": {"rootless": False}}}
    return podman


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("memory", "lots", "not a size"),
        ("cpus", -1, "must be positive"),
        ("volumes", ["relative:/data"], "absolute"),
        ("volumes", ["/a"], "HOST:CONTAINER"),
        ("gpus", True, "gpus=True"),
    ],
)
def test_bad_option_values_fail_at_construction(option: str, value: Any, message: str) -> None:
    from oci_executor import OCIExecutor

    with pytest.raises(ConfigurationError, match=message):
        OCIExecutor(**{option: value})


def test_options_come_from_covalent_conf() -> None:
    import covalent as ct

    from oci_executor import OCIExecutor

    ct.set_config(
        {"executors.oci.memory": "300m", "executors.oci.env": {"A": "1"}, "executors.oci.network": "none"}
    )
    try:
        executor = OCIExecutor()
        assert executor.memory == "300m"
        assert executor.env == {"A": "1"}
        assert executor.network == "none"
        assert executor.container_spec({}).memory == 300 * 1024 * 1024
    finally:
        ct.set_config({"executors.oci.memory": "", "executors.oci.env": {}, "executors.oci.network": ""})


def _write_and_read(folder: str) -> dict[str, Any]:
    import os

    with open(os.path.join(folder, "input.txt"), encoding="utf-8") as handle:
        text = handle.read()
    with open(os.path.join(folder, "output.txt"), "w", encoding="utf-8") as handle:
        handle.write(text.upper())
    return {"read": text, "uid": os.getuid()}


@pytest.fixture
def shared_dir() -> Any:
    """A folder every engine's user can reach (pytest's tmp_path is private to root)."""
    import pathlib
    import shutil
    import tempfile

    folder = pathlib.Path(tempfile.mkdtemp(prefix="oci-tests-volume-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_volume_read_and_write(engine_target: Target, shared_dir: Any) -> None:
    import os
    import pwd

    folder = shared_dir
    (folder / "input.txt").write_text("from the host", encoding="utf-8")
    executor = engine_target.executor(volumes=[f"{folder}:/data"])
    facts = executor.run_sync(_write_and_read, ["/data"], {}, META).load_value()
    assert facts["read"] == "from the host"
    assert (folder / "output.txt").read_text(encoding="utf-8") == "FROM THE HOST"
    owner = os.stat(folder / "output.txt").st_uid
    if engine_target.id == "podman-rootless":
        # keep-id: the file belongs to the user whose rootless Podman ran the task
        assert owner == pwd.getpwnam(engines.ROOTLESS_USER).pw_uid
    else:
        assert owner == facts["uid"] == 0


def test_read_only_volume(engine_target: Target, shared_dir: Any) -> None:
    folder = shared_dir
    (folder / "input.txt").write_text("x", encoding="utf-8")
    outcome = engine_target.executor(volumes=[f"{folder}:/data:ro"]).run_sync(
        _write_and_read, ["/data"], {}, META
    )
    assert not outcome.ok
    assert "Read-only file system" in outcome.error_message
    assert not (folder / "output.txt").exists()


def test_unreachable_volume_folder_is_explained(tmp_path: Any) -> None:
    """Rootless Podman cannot mount a folder its user cannot reach (pytest's tmp_path is root's)."""
    from oci_executor.errors import ContainerError

    target = Target(
        "podman-rootless", "podman", engines.require_engine("podman-rootless"), engines.test_image()
    )
    with pytest.raises(
        ContainerError, match=r"cannot mount the host folder .*permission denied.*search \(x\)"
    ):
        target.executor(volumes=[f"{tmp_path}:/data"]).run_sync(_write_and_read, ["/data"], {}, META)


def test_selinux_relabel_translation() -> None:
    from oci_executor.backend import Volume

    spec = ContainerSpec(image="img", volumes=(Volume("/h", "/c", True),), selinux_relabel=True)
    assert DockerBackend().create_kwargs(spec)["volumes"] == {"/h": {"bind": "/c", "mode": "ro,z"}}
    assert _rootful_podman().create_kwargs(spec)["volumes"] == {
        "/h": {"bind": "/c", "extended_mode": ["ro", "z"]}
    }
    assert "--volume=/h:/c:ro,z" in run_args(container_intent(spec, rootless=True))
