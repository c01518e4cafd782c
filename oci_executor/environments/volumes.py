"""Environments on a remote engine: one named volume there per content key, filled over the tunnel.

A remote engine (``ssh://``) cannot mount a folder of this machine. The environment is
resolved and installed here as for a local engine (:mod:`.ensure`), then copied once per key
into a named volume on the engine, through its API (so over the backend's ssh tunnel): a
*data* volume ``oci-env-<key>-<random>`` is created, filled by ``put_archive`` into a helper
container that is never started, and only then *published* by creating the empty *marker*
volume ``oci-env-<key>``, whose labels name the data volume and describe the environment.
Engines cannot rename a volume or change its labels; creating a name is their one atomic step,
so a marker exists only for a complete copy, and a killed builder leaves an unpublished data
volume that the next builder (or ``env prune``) removes. Builders on this machine take the
store's ``flock`` lock per key and engine: one copies, the others wait and find it. Builders on
two machines may both copy; the first marker wins, the other removes its copy.

A task mounts the data volume read-only at the same path as a local environment. A volume a
container uses (running or not) cannot be removed: the engine refuses, and prune says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tarfile
import tempfile
import time
from collections.abc import Mapping
from typing import Protocol

from oci_executor.environments import store
from oci_executor.environments.build import Environment
from oci_executor.errors import ContainerError, EnvironmentBuildError, OCIExecutorError

PREFIX = "oci-env-"
KEY = "io.oci-executor.environment"
ROLE = "io.oci-executor.environment.role"
"""``ready`` on a marker, ``data`` on the volume that holds the files."""
DATA = "io.oci-executor.environment.data"
BUILDER = "io.oci-executor.environment.builder"
"""``host:pid`` of the process that filled the volume (its leftovers are swept once it is dead)."""
HELPER = "io.oci-executor.environment.helper"
STARTED = "io.oci-executor.environment.started"
META = ("packages", "target", "image", "built", "size")
ORPHAN_AGE = 24 * 3600.0
"""An unpublished data volume of a builder on another machine is swept after this long."""


class EngineVolumes(Protocol):
    """What a backend offers for environments on its (remote) engine (``Backend.environment_volumes``)."""

    def where(self) -> str: ...

    def list_volumes(self, label: str) -> list[tuple[str, dict[str, str]]]: ...

    def volume_labels(self, name: str) -> dict[str, str] | None: ...

    def create_volume(self, name: str, labels: Mapping[str, str]) -> dict[str, str]: ...

    def remove_volume(self, name: str) -> bool: ...

    def fill_volume(
        self, name: str, image: str, python: str, mount: str, archive: str, labels: Mapping[str, str]
    ) -> None: ...

    def list_helpers(self, label: str) -> list[tuple[str, dict[str, str]]]: ...

    def remove_helper(self, container_id: str) -> None: ...


def marker(key: str) -> str:
    return f"{PREFIX}{key}"


def builder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def engine_id(where: str) -> str:
    return hashlib.sha256(where.encode()).hexdigest()[:12]


def find(volumes: EngineVolumes, key: str) -> str | None:
    """The data volume of ``key``'s published environment on the engine, or None."""
    labels = volumes.volume_labels(marker(key))
    if labels is None or labels.get(ROLE) != "ready":
        return None
    data = labels.get(DATA, "")
    return data if data and volumes.volume_labels(data) is not None else None


def publish(volumes: EngineVolumes, env: Environment, image: str, python: str, mount: str) -> str:
    """The data volume of ``env`` on the engine: found, or copied there once from ``env.path``."""
    with store.locked(f"{env.key}.{engine_id(volumes.where())}", "copy"):
        found = find(volumes, env.key)
        if found is not None:
            return found
        sweep(volumes, env.key)
        name = f"{marker(env.key)}-{os.urandom(4).hex()}"
        me = builder_id()
        volumes.create_volume(name, {KEY: env.key, ROLE: "data", BUILDER: me, STARTED: f"{time.time():.0f}"})
        try:
            archive = _archive(env.path, env.key)
            try:
                volumes.fill_volume(name, image, python, mount, archive, {HELPER: env.key, BUILDER: me})
            finally:
                os.remove(archive)
            labels = {KEY: env.key, ROLE: "ready", DATA: name, BUILDER: me, **_meta(env.path)}
            held = volumes.create_volume(marker(env.key), labels)
        except ContainerError as exc:
            _drop(volumes, name)
            if "no space left" in str(exc).lower():
                raise EnvironmentBuildError(
                    f"no space left on the disk of the engine {volumes.where()} while copying environment "
                    f"{env.key} there (the half-copied volume was removed). See what environments take "
                    "there with `oci-executor env ls`, remove unused ones with `oci-executor env prune`, "
                    "or free space in that engine's storage."
                ) from None
            raise
        except BaseException:
            _drop(volumes, name)
            raise
        if held.get(DATA) != name:  # another machine published first: use its copy
            _drop(volumes, name)
            return held.get(DATA) or name
        return name


def _drop(volumes: EngineVolumes, name: str) -> None:
    with contextlib.suppress(OCIExecutorError):
        volumes.remove_volume(name)


def _archive(folder: str, key: str) -> str:
    """A tar file of ``folder``'s contents in the store's ``tmp/`` (owned by root, modes kept)."""

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    store.ensure()
    handle, path = tempfile.mkstemp(prefix=f"{key}.{os.getpid()}.", suffix=".tar", dir=store.path("tmp"))
    try:
        with os.fdopen(handle, "wb") as raw, tarfile.open(fileobj=raw, mode="w") as tar:
            for name in sorted(os.listdir(folder)):
                tar.add(os.path.join(folder, name), arcname=name, filter=owned_by_root)
    except BaseException:
        os.remove(path)
        raise
    return path


def _meta(folder: str) -> dict[str, str]:
    """The marker's description of the environment (for ``env ls``), from its metadata file."""
    try:
        with open(os.path.join(folder, store.META_FILE), encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError):
        meta = {}
    return {
        f"{KEY}.packages": ",".join(meta.get("resolved", [])),
        f"{KEY}.target": str(meta.get("target", "")),
        f"{KEY}.image": str(meta.get("image", "")),
        f"{KEY}.built": f"{time.time():.0f}",
        f"{KEY}.size": str(store.size_of(folder)),
    }


def _dead(labels: Mapping[str, str], now: float) -> bool:
    """Whether the builder that labelled a volume or helper is gone (or, elsewhere, long gone)."""
    host, _, pid = labels.get(BUILDER, "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return not store.pid_alive(int(pid))
    started = float(labels.get(STARTED, "0") or 0)
    return now - started > ORPHAN_AGE


def sweep(volumes: EngineVolumes, key: str | None = None) -> list[str]:
    """Remove what dead builders left (helpers, unpublished data volumes) and markers whose data
    volume is gone, for ``key`` or every key; the names removed."""
    now = time.time()
    removed = []
    selector = f"{KEY}={key}" if key else KEY
    for helper, labels in volumes.list_helpers(f"{HELPER}={key}" if key else HELPER):
        if _dead(labels, now):
            volumes.remove_helper(helper)
            removed.append(helper[:12])
    listed = volumes.list_volumes(selector)
    names = {name for name, _ in listed}
    published = set()
    for name, labels in listed:
        if labels.get(ROLE) == "ready":
            if labels.get(DATA, "") in names:
                published.add(labels[DATA])
            elif volumes.remove_volume(name):
                removed.append(name)
    for name, labels in listed:
        if labels.get(ROLE) == "data" and name not in published and _dead(labels, now):
            if volumes.remove_volume(name):
                removed.append(name)
    return removed


def entries(volumes: EngineVolumes) -> list[store.Entry]:
    """The environments published on the engine, as ``env ls`` shows them."""
    found = []
    where = volumes.where()
    for name, labels in volumes.list_volumes(f"{ROLE}=ready"):
        key = labels.get(KEY, name.removeprefix(PREFIX))
        use = store.last_use(key)
        found.append(
            store.Entry(
                key=key,
                packages=[p for p in labels.get(f"{KEY}.packages", "").split(",") if p],
                target=labels.get(f"{KEY}.target", ""),
                image=labels.get(f"{KEY}.image", ""),
                size=int(labels.get(f"{KEY}.size", "0") or 0),
                built=float(labels.get(f"{KEY}.built", "0") or 0),
                last_use=use.get("last_use"),
                engines=[where],
                path=f"volume {labels.get(DATA, '?')} on {where}",
            )
        )
    return found


def remove(volumes: EngineVolumes, key: str) -> str:
    """Remove ``key``'s environment from the engine: ``removed``, or why it was kept."""
    with store.locked(key, "use", wait=False) as free:
        if not free:
            return "in use by a running process"
        data = (volumes.volume_labels(marker(key)) or {}).get(DATA, "")
        if data and not volumes.remove_volume(data):
            return "in use by a container"
        volumes.remove_volume(marker(key))
        return "removed"


def remember(backend_name: str, address: str, identity: str, where: str) -> None:
    """Note a remote engine that holds environments, so ``env ls`` and ``prune`` look there."""
    store.ensure()
    file = store.path("engines", f"{engine_id(where)}.json")
    if os.path.exists(file):
        return
    with open(f"{file}.{os.getpid()}", "w", encoding="utf-8") as handle:
        json.dump(
            {"backend": backend_name, "address": address, "ssh_identity": identity, "where": where}, handle
        )
    os.replace(f"{file}.{os.getpid()}", file)


def remembered() -> list[dict[str, str]]:
    """The remote engines this store's environments were copied to."""
    folder = store.path("engines")
    found = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not name.endswith(".json"):
            continue
        with contextlib.suppress(OSError, ValueError):
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                found.append({str(k): str(v) for k, v in json.load(handle).items()})
    return found
