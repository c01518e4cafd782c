"""``oci-executor ls``, ``gc`` and ``doctor`` on the test cluster (scripts/setup-slurm.sh): our
jobs are listed with their node, state, age and owner; gc cancels those whose driver is gone;
the doctor checks the controller, the job's request and a node."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from oci_executor import cli
from oci_executor.doctor import diagnose
from tests import engines
from tests.conftest import Target, _leaving_nothing
from tests.test_slurm import DRIVER


@pytest.fixture
def slurm() -> Iterator[Target]:
    yield from _leaving_nothing("slurm")


def _run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


def _ours(address: str) -> list[dict[str, object]]:
    code, out = _run_cli("ls", "--json", "--backend", "slurm", "--engine", f"slurm={address}")
    assert code == 0
    return [e for e in json.loads(out) if str(e["engine"]).startswith("slurm")]


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (the driver's srun runs in a session of its own)."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found += [int(entry), *_children(int(entry))]
    return found


def test_ls_lists_our_job_and_gc_cancels_it_once_its_driver_is_gone(slurm: Target, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.replace("idle_timeout=10", "idle_timeout=600"))
    before = {e["id"] for e in _ours(slurm.address)}
    driver = subprocess.Popen([sys.executable, str(script), slurm.image, slurm.address])
    try:
        deadline = time.monotonic() + 60
        while not (listed := [e for e in _ours(slurm.address) if e["id"] not in before]):
            assert driver.poll() is None, "the driver ended before its task started"
            assert time.monotonic() < deadline, "the task's job never appeared"
            time.sleep(0.2)
        (entry,) = listed
        assert entry["state"] == "running"
        assert entry["owner_state"] == "alive"
        assert entry["dispatch"] == "killed-driver"
        assert str(entry["id"]).startswith("oci-slurm-")
        assert str(entry["id"]).rsplit("-", 1)[1] in engines.slurm_nodes()
        code, out = _run_cli("ls", "--backend", "slurm", "--engine", f"slurm={slurm.address}")
        assert str(entry["id"]) in out and "alive" in out
    finally:  # the driver and its srun die at once: the job outlives them
        for pid in [*_children(driver.pid), driver.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        driver.wait()
    (entry,) = [e for e in _ours(slurm.address) if e["id"] == entry["id"]]
    assert entry["owner_state"] == "gone"
    gc = ["gc", "--backend", "slurm", "--engine", f"slurm={slurm.address}"]  # other engines are shared
    code, out = _run_cli(*gc, "--dry-run")
    assert code == 0 and f"would remove slurm ({engines.SLURM_CONF}" in out and str(entry["id"]) in out, out
    code, out = _run_cli(*gc)
    assert code == 0 and "removed 1 orphaned" in out, out
    assert entry["id"] not in {e["id"] for e in _ours(slurm.address)}


def _checks(findings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {f.check: f.status for f in findings if f.backend == "slurm"}


def test_doctor_checks_the_controller_the_request_and_a_node(slurm: Target) -> None:
    findings = diagnose("slurm", slurm.image, slurm.address, config={})
    checks = _checks(findings)
    assert checks == {
        "engine": "ok",
        "overlap": "ok",
        "request": "ok",
        "node": "ok",
        "image": "ok",
        "python": "ok",
    }, [f.line() for f in findings]
    node = next(f for f in findings if f.check == "node")
    assert "rootless Podman" in node.message


def test_doctor_names_a_bad_partition_and_its_fix(slurm: Target) -> None:
    findings = diagnose("slurm", slurm.image, slurm.address, config={"partition": "nosuch"})
    request = next(f for f in findings if f.check == "request")
    assert request.status == "fail"
    assert "nosuch" in request.message
    assert "sinfo -s" in request.fix
    assert _checks(findings)["node"] == "skip"


def test_doctor_says_when_a_node_lacks_the_image(slurm: Target) -> None:
    findings = diagnose("slurm", "localhost/oci-executor-test/absent:1", slurm.address, config={})
    image = next(f for f in findings if f.check == "image")
    assert image.status == "warn"
    assert "absent:1" in image.message and "podman pull" in image.fix


def test_doctor_says_when_the_controller_does_not_answer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import re

    engines.require_engine("slurm")
    conf = tmp_path / "slurm.conf"
    conf.write_text(re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=6999", open(engines.SLURM_CONF).read()))
    with open(conf, "a") as handle:
        handle.write("MessageTimeout=2\n")
    findings = diagnose("slurm", engines.test_image(), str(conf), config={})
    engine = next(f for f in findings if f.check == "engine")
    assert engine.status == "fail"
    assert "scontrol ping" in engine.fix
