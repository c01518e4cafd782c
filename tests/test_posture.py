"""The same security posture on every container backend, checked from inside the task and
through the engine's inspect, as a user auditing a cluster would.

The spec is translated into the container's intent once
(:mod:`oci_executor.backends.shared.intent`); this suite proves every backend renders it:
no new privileges, no capability beyond the engines' common default set, not privileged, no
engine socket inside, our labels, a read-only root with a writable ``/tmp``, the volume
mounted, and a file the task writes there owned on the host by the uid the task runs as.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests import engines
from tests.conftest import Target, _leaving_nothing

META = {"dispatch_id": "posture", "node_id": 3}
ALLOWED_CAPABILITIES = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "SETPCAP": 8,
    "NET_BIND_SERVICE": 10,
    "SYS_CHROOT": 18,
    "SETFCAP": 31,
}
"""Podman's default set; Docker's default adds AUDIT_WRITE, MKNOD and NET_RAW, which we drop."""
ALLOWED_MASK = sum(1 << bit for bit in ALLOWED_CAPABILITIES.values())


@pytest.fixture(params=[*engines.ENGINE_TARGETS, "slurm", engines.CLI_TEMPLATE])
def container_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Every backend that runs tasks in containers (local runs them on the host, by design)."""
    yield from _leaving_nothing(request.param)


@pytest.fixture
def shared_dir() -> Iterator[pathlib.Path]:
    """A host folder every engine's user can reach (rootless users too)."""
    folder = pathlib.Path(tempfile.mkdtemp(prefix="oci-tests-posture-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _posture(volume: str) -> dict[str, Any]:
    """What the task sees of its own privileges, sockets, mounts and identity."""
    import glob
    import os
    import stat

    status = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            status[key] = value.strip()

    def writable(folder: str) -> bool:
        path = os.path.join(folder, ".oci-posture-probe")
        try:
            with open(path, "w") as handle:
                handle.write("x")
            os.remove(path)
            return True
        except OSError:
            return False

    mounts = {}
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            point, options = fields[4], fields[5]
            fstype = fields[fields.index("-") + 1]
            if point in ("/", "/tmp", volume):
                mounts[point] = {"fstype": fstype, "options": sorted(options.split(","))}
    with open(os.path.join(volume, "written-by-task.txt"), "w") as handle:
        handle.write("hello")
    sockets = ["/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock"]
    sockets += glob.glob("/run/user/*/podman/podman.sock") + glob.glob("/tmp/podman-run-*/podman/podman.sock")
    return {
        "no_new_privs": status.get("NoNewPrivs"),
        "cap_eff": int(status["CapEff"], 16),
        "cap_bnd": int(status["CapBnd"], 16),
        "sockets": [path for path in sockets if os.path.exists(path)],
        "block_devices": [n for n in os.listdir("/dev") if stat.S_ISBLK(os.lstat(f"/dev/{n}").st_mode)],
        "root_writable": writable("/"),
        "tmp_writable": writable("/tmp"),
        "tmp_mode": oct(os.stat("/tmp").st_mode & 0o7777),
        "mounts": mounts,
        "uid": os.getuid(),
    }


def test_posture_is_the_same_on_every_backend(container_target: Target, shared_dir: pathlib.Path) -> None:
    labels: dict[str, str] = {}

    def inspect(container: Any) -> None:
        where = container_target.local_address or container_target.address
        attrs = engines.container_attrs(container_target.backend, where, container.id)
        labels.update(attrs["Config"]["Labels"])

    executor = container_target.executor(
        read_only=True, volumes=[f"{shared_dir}:/data"], labels={"team": "posture"}
    )
    outcome = executor.run_sync(_posture, ["/data"], {}, META, on_container=inspect)
    assert outcome.ok, outcome.traceback
    seen = outcome.load_value()

    assert seen["no_new_privs"] == "1", "setuid binaries could grant the task privileges"
    extra = seen["cap_eff"] & ~ALLOWED_MASK
    assert extra == 0, f"capabilities beyond the default set in CapEff: {extra:#x}"
    assert seen["cap_bnd"] & ~ALLOWED_MASK == 0, (
        f"bounding set {seen['cap_bnd']:#x}: privileged or caps added"
    )
    assert seen["block_devices"] == [], "the host's block devices are visible: privileged"
    assert seen["sockets"] == [], "an engine socket is reachable from the task"

    assert labels["team"] == "posture"
    assert labels["io.oci-executor.managed"] == "true"
    assert labels["io.oci-executor.dispatch-id"] == "posture"
    assert labels["io.oci-executor.node-id"] == "3"

    assert not seen["root_writable"], "read_only=True, yet the root file system is writable"
    assert seen["tmp_writable"]
    assert seen["mounts"]["/tmp"]["fstype"] == "tmpfs"
    assert {"rw", "nosuid", "nodev"} <= set(seen["mounts"]["/tmp"]["options"])
    assert "noexec" not in seen["mounts"]["/tmp"]["options"]
    assert seen["tmp_mode"] == "0o1777"
    assert "ro" in seen["mounts"]["/"]["options"]
    assert "rw" in seen["mounts"]["/data"]["options"]

    # The user mapping: what the task writes in a volume belongs on the host to the uid the
    # task runs as (root for rootful engines; the engine's user for rootless ones: keep-id).
    owner = os.stat(shared_dir / "written-by-task.txt").st_uid
    assert owner == seen["uid"]
    expected = (
        0 if container_target.id in ("docker", "podman", engines.CLI_TEMPLATE) else engines.rootless_uid()
    )
    if container_target.id == "slurm" and os.geteuid() != 0:
        expected = os.geteuid()
    assert owner == expected
