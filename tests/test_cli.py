"""The ``oci-executor`` command line on the real engines: ``ls`` and ``gc``.

``gc`` must remove only containers of ours whose driver process is gone, and never touch a
container without our labels, on every engine (rootless Podman included).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from oci_executor.labels import DISPATCH_LABEL, NODE_LABEL, OWNER_LABEL
from oci_executor.owner import this_owner
from tests import engines
from tests.conftest import Target


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oci_executor.cli", *args], capture_output=True, text=True, timeout=120
    )


def dead_owner() -> str:
    """The owner value of a process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}:1"


@pytest.fixture
def planted(engine_target: Target) -> Iterator[dict[str, str]]:
    """Four created (never started) containers: without our labels, and of ours whose owner
    is gone, alive (this process) or on another host. Removes what is left afterwards."""
    tag = uuid.uuid4().hex[:8]
    owners = {"orphan": dead_owner(), "alive": this_owner(), "elsewhere": "some-other-host:4242:17"}
    client = engines._client(engine_target.backend, engine_target.address)
    ids: dict[str, str] = {}
    try:
        ids["unlabelled"] = client.containers.create(
            engine_target.image,
            ["sleep", "600"],
            name=f"oci-test-unlabelled-{tag}",
            labels={"purpose": "gc-test"},
        ).id
        for kind, owner in owners.items():
            labels = {
                "io.oci-executor.managed": "true",
                DISPATCH_LABEL: f"dispatch-{tag}",
                NODE_LABEL: kind,
                OWNER_LABEL: owner,
            }
            ids[kind] = client.containers.create(
                engine_target.image, ["sleep", "600"], name=f"oci-test-{kind}-{tag}", labels=labels
            ).id
        yield ids
    finally:
        for cid in ids.values():
            try:
                client.containers.get(cid).remove(force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        client.close()


def present(target: Target, ids: dict[str, str]) -> set[str]:
    client = engines._client(target.backend, target.address)
    try:
        live = set(engines.container_ids(client, "purpose=gc-test")) | set(
            engines.container_ids(client, engines.LABEL)
        )
    finally:
        client.close()
    return {kind for kind, cid in ids.items() if cid in live}


def test_ls_shows_our_containers_with_dispatch_node_and_owner(
    engine_target: Target, planted: dict[str, str]
) -> None:
    result = cli("ls", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert planted["unlabelled"] not in rows
    for kind in ("orphan", "alive", "elsewhere"):
        row = rows[planted[kind]]
        assert row["engine"].endswith(engine_target.address), row
        assert row["dispatch"].startswith("dispatch-") and row["node"] == kind
        assert row["state"] in ("created", "configured"), row
    assert rows[planted["orphan"]]["owner_state"] == "gone"
    assert rows[planted["alive"]]["owner_state"] == "alive"
    assert rows[planted["elsewhere"]]["owner_state"] == "unknown"

    table = cli("ls").stdout
    assert planted["orphan"][:12] in table and planted["unlabelled"][:12] not in table


def test_gc_removes_only_orphans_of_ours(engine_target: Target, planted: dict[str, str]) -> None:
    dry = cli("gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert (
        f"would remove {engine_target.backend} at {engine_target.address}: {planted['orphan'][:12]}"
        in dry.stdout
    )
    for kind in ("unlabelled", "alive", "elsewhere"):
        assert planted[kind][:12] not in dry.stdout
    assert present(engine_target, planted) == set(planted), "a dry run removed something"

    young = cli("gc", "--older-than", "1h")
    assert young.returncode == 0, young.stderr
    assert present(engine_target, planted) == set(planted), "--older-than 1h removed a new container"

    real = cli("gc")
    assert real.returncode == 0, real.stderr
    assert planted["orphan"][:12] in real.stdout
    assert present(engine_target, planted) == {"unlabelled", "alive", "elsewhere"}


def test_gc_rejects_a_bad_duration() -> None:
    result = cli("gc", "--older-than", "soon")
    assert result.returncode == 2
    assert "'soon' is not a duration: use e.g. 90s, 15m, 2h or 1d" in result.stderr
