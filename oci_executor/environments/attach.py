"""A task's declared packages turned into an environment on its container.

:func:`declared_of` collects the declared packages (our ``packages``/``requirements``
options and the task's DepsPip steps, which it takes out of the payload). :func:`apply`, which
the engine core calls with them and with the host's pins of compiled modules the image lacks
(:mod:`oci_executor.provide`), finds or builds the environment for the image, and returns the
spec with the environment mounted read-only at :data:`MOUNT` (engines; a remote engine mounts its
own copy, a named volume: :mod:`.volumes`) or named directly (local), plus
``OCI_EXECUTOR_SITE``, which the runner puts first on ``sys.path``. Containers of another
environment have another spec, so the warm pool never mixes them.

Everything a warm task needs is memoized in the process: a task whose environment exists
costs a dictionary lookup here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from oci_executor.backend import Backend, ContainerSpec, Volume
from oci_executor.environments import requirements as reqs
from oci_executor.environments import store, volumes
from oci_executor.environments.build import Environment, Progress
from oci_executor.environments.ensure import ensure, indexed_key
from oci_executor.environments.image import ImageFacts, host_facts, load_facts, parse_probe, probe_function
from oci_executor.errors import ConfigurationError
from oci_executor.task import TaskPayload

if TYPE_CHECKING:
    from oci_executor.environments.volumes import EngineVolumes

log = logging.getLogger("oci_executor.environments")

MOUNT = "/opt/oci-executor/env"
"""Where an environment appears inside a container (read-only)."""
SITE_VARIABLE = "OCI_EXECUTOR_SITE"
LABEL = "io.oci-executor.environment"

_lock = threading.Lock()
_memo: dict[tuple[Any, ...], Environment] = {}
_image_ids: dict[tuple[str, str], str] = {}
_readable: set[tuple[str, str]] = set()


def declared_of(values: Mapping[str, Any], payload: TaskPayload | None) -> tuple[str, ...]:
    """The task's declared packages; its DepsPip steps are taken out of ``payload``."""
    deps = []
    if payload is not None:
        deps = [
            (list(s.data.get("packages", [])), str(s.data.get("requirements", "")))
            for s in payload.before
            if s.kind == "pip"
        ]
        payload.before = [s for s in payload.before if s.kind != "pip"]
    return reqs.declared(values.get("packages", []), values.get("requirements", ""), deps)


def image_identity(backend: Backend, spec: ContainerSpec) -> tuple[str, ImageFacts]:
    """The image's ID and its Python's facts: from the store, else asked once of the image."""
    if not backend.isolated:
        facts = host_facts()
        return f"local:{os.path.realpath(sys.executable)}:{sys.version.split()[0]}", facts
    cache_key = (backend.describe(), spec.image)
    image_id = _image_ids.get(cache_key) or backend.image_id(spec.image)
    if image_id is None and type(backend).image_id is Backend.image_id:
        # A backend that cannot look an image up (slurm: the image is on the nodes): its
        # facts are kept by the image's name instead.
        image_id = f"{backend.name}:{spec.image}"
    known = load_facts(store.path("facts", f"{_safe(image_id)}.json")) if image_id else None
    if image_id is None or known is None:
        probed_id, known = _probe(backend, spec)
        image_id = image_id if image_id and image_id.startswith(f"{backend.name}:") else probed_id
        _save_facts(image_id, known)
    _image_ids[cache_key] = image_id
    return image_id, known


def _safe(image_id: str) -> str:
    return image_id.replace(":", "-").replace("/", "-")


def _probe(backend: Backend, spec: ContainerSpec) -> tuple[str, ImageFacts]:
    """Run the probe in the image (pulling it per policy) and keep its answer by image ID."""
    from oci_executor.execute import execute
    from oci_executor.lifecycle import discard, start_runner
    from oci_executor.task import payload_from_callable

    log.info("environment: asking image %s for its Python's version, ABI and platform", spec.image)
    runner = start_runner(backend, dataclasses.replace(spec, volumes=(), env={}))
    try:
        outcome = execute(runner, payload_from_callable(probe_function(), [], {}))
    finally:
        discard(runner)
    if not outcome.ok:
        raise ConfigurationError(f"could not ask image {spec.image!r} about its Python: {outcome.summary()}")
    return runner.container.image_id, parse_probe(outcome.stdout)


def _save_facts(image_id: str, facts: ImageFacts) -> None:
    store.ensure()
    file = store.path("facts", f"{_safe(image_id)}.json")
    with open(f"{file}.{os.getpid()}", "w", encoding="utf-8") as handle:
        json.dump(facts.to_json(), handle)
    os.replace(f"{file}.{os.getpid()}", file)


def environment_for(
    backend: Backend,
    spec: ContainerSpec,
    requirements: tuple[str, ...],
    *,
    wheels_only: bool = True,
    progress: Progress | None = None,
    refresh: bool = False,
) -> Environment:
    """The environment of ``requirements`` for ``spec``'s image on ``backend`` (built if missing;
    on a remote engine, copied there once: see :mod:`.volumes`)."""
    _check_backend(backend)
    memo = (backend.describe(), spec.image, requirements, wheels_only)
    found = None if refresh else _memo.get(memo)
    if found is not None and (found.volume or os.path.isdir(found.path)):
        return found
    with _lock:  # one build per process at a time; other processes wait on the store's locks
        image_id, facts = image_identity(backend, spec)
        remote = backend.environment_volumes()
        found = None
        if remote is not None and not refresh:
            found = _on_engine(backend, remote, image_id, facts, requirements, wheels_only)
        if found is None:
            found = ensure(
                requirements,
                image_id,
                spec.image,
                facts,
                wheels_only=wheels_only,
                progress=progress,
                engine=backend.describe(),
                refresh=refresh,
            )
        if remote is not None and not found.volume:
            found = _copy_to_engine(backend, remote, found, spec)
        _memo[memo] = found
    return found


def _on_engine(
    backend: Backend,
    remote: EngineVolumes,
    image_id: str,
    facts: ImageFacts,
    requirements: tuple[str, ...],
    wheels_only: bool,
) -> Environment | None:
    """The environment this set resolved to before, if the remote engine holds its copy (no pip,
    and no need for the copy on this machine)."""
    key = indexed_key(image_id, facts, requirements, wheels_only)
    data = volumes.find(remote, key) if key else None
    if key is None or data is None:
        return None
    store.hold_for_use(key)
    store.touch(key, backend.describe())
    return Environment(key, store.env_dir(key), requirements, volume=data)


def _copy_to_engine(
    backend: Backend, remote: EngineVolumes, env: Environment, spec: ContainerSpec
) -> Environment:
    """``env`` copied into a named volume on the remote engine (once per key), and remembered."""
    started = time.monotonic()
    config = getattr(backend, "config", None)
    volumes.remember(
        backend.name,
        str(getattr(config, "address", "") or ""),
        str(getattr(config, "ssh_identity", "") or ""),
        remote.where(),
    )
    data = volumes.publish(remote, env, spec.image, spec.python, MOUNT)
    log.info(
        "environment %s on %s: volume %s (%.1f s)", env.key, remote.where(), data, time.monotonic() - started
    )
    return dataclasses.replace(env, volume=data)


def _check_backend(backend: Backend) -> None:
    if backend.name == "slurm" and not os.environ.get("OCI_EXECUTOR_ENV_DIR"):
        raise ConfigurationError(
            "declared packages on the slurm backend need a shared folder every node mounts at "
            "the same path, readable by the job's user: set OCI_EXECUTOR_ENV_DIR to it (where the "
            "tasks are driven: the Covalent server's environment). Environments are built there "
            "once, under a flock lock, and mounted read-only by each node's Podman."
        )


def _check_readable(backend: Backend, folder: str) -> None:
    """A rootless engine driven by root mounts as its own user: every parent must let it in."""
    rootless = getattr(backend, "rootless", None)
    if os.geteuid() != 0 or rootless is None:
        return
    closed = [p for p in _parents(folder) if not os.stat(p).st_mode & 0o001]
    if closed and rootless():
        raise ConfigurationError(
            f"the environment {folder} is not readable by the rootless engine's user ({closed[0]} "
            f"is closed to others). Point OCI_EXECUTOR_ENV_DIR at a folder that user can read "
            f"(e.g. /var/tmp/oci-executor-envs), or run the tasks as that user."
        )


def _parents(folder: str) -> list[str]:
    found = []
    while folder not in ("/", ""):
        found.append(folder)
        folder = os.path.dirname(folder)
    return found[::-1]


def with_environment(spec: ContainerSpec, backend: Backend, env: Environment) -> ContainerSpec:
    """``spec`` with ``env`` mounted read-only (engines) or named (local) and on ``sys.path``."""
    if not backend.isolated:
        return dataclasses.replace(spec, env={**spec.env, SITE_VARIABLE: env.path})
    return dataclasses.replace(
        spec,
        env={**spec.env, SITE_VARIABLE: MOUNT},
        volumes=(*spec.volumes, Volume(env.volume or env.path, MOUNT, read_only=True)),
        labels={**spec.labels, LABEL: env.key},
    )


def apply(
    backend: Backend, spec: ContainerSpec, requirements: tuple[str, ...], values: Mapping[str, Any]
) -> ContainerSpec:
    """The spec with the environment of ``requirements`` (:func:`declared_of`, plus the pins
    :mod:`oci_executor.provide` adds), or unchanged when there are none."""
    requirements = reqs.normalize(requirements, "declared packages")
    if not requirements:
        return spec
    env = environment_for(backend, spec, requirements, wheels_only=bool(values.get("wheels_only", True)))
    if backend.isolated and not env.volume and (backend.describe(), env.path) not in _readable:
        _check_readable(backend, env.path)
        _readable.add((backend.describe(), env.path))
    return with_environment(spec, backend, env)
