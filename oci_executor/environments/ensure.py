"""An environment for a requirement set and an image: found, or built once.

:func:`ensure` first looks in the store's index (the declared set already resolved for this
image: no pip at all), then resolves on the host, computes the content key, and installs under
the build lock unless another process already did. Every step is one line in the log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

from oci_executor.environments import store
from oci_executor.environments.build import Environment, Progress, content_key, download, install
from oci_executor.environments.image import ImageFacts

log = logging.getLogger("oci_executor.environments")


def _index_name(image_id: str, facts: ImageFacts, requirements: Sequence[str], wheels_only: bool) -> str:
    text = json.dumps([image_id, facts.to_json(), list(requirements), wheels_only], sort_keys=True)
    return "declared-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _indexed(name: str) -> str | None:
    try:
        with open(store.path("index", f"{name}.json"), encoding="utf-8") as handle:
            key = json.load(handle)["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return key if isinstance(key, str) else None


def indexed_key(
    image_id: str, facts: ImageFacts, requirements: Sequence[str], wheels_only: bool
) -> str | None:
    """The key this declared set resolved to for this image before (no pip), if it did."""
    return _indexed(_index_name(image_id, facts, requirements, wheels_only))


def _write_index(name: str, key: str) -> None:
    file = store.path("index", f"{name}.json")
    tmp = f"{file}.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"key": key}, handle)
    os.replace(tmp, file)


def lookup(
    image_id: str, facts: ImageFacts, requirements: Sequence[str], wheels_only: bool
) -> Environment | None:
    """The environment this declared set resolved to for this image before, if it still exists."""
    key = _indexed(_index_name(image_id, facts, requirements, wheels_only))
    if key is None:
        return None
    store.hold_for_use(key)
    return Environment(key, store.env_dir(key), tuple(requirements)) if store.exists(key) else None


def ensure(
    requirements: Sequence[str],
    image_id: str,
    image: str,
    facts: ImageFacts,
    *,
    wheels_only: bool = True,
    progress: Progress | None = None,
    engine: str = "",
    refresh: bool = False,
) -> Environment:
    """The environment for ``requirements`` on ``image`` (ID ``image_id``), built if missing."""
    started = time.monotonic()
    store.ensure()
    name = _index_name(image_id, facts, requirements, wheels_only)
    found = None if refresh else lookup(image_id, facts, requirements, wheels_only)
    if found is None:
        # One resolver per declared set at a time; a killed one's lock goes with it.
        with store.locked(name, "resolve"):
            found = None if refresh else lookup(image_id, facts, requirements, wheels_only)
            if found is None:
                found = _build(name, requirements, image_id, image, facts, wheels_only, progress)
        log.info(
            "environment %s ready for %s (%s) in %.1f s: %s",
            found.key,
            image,
            facts.describe(),
            time.monotonic() - started,
            found.path,
        )
    if engine:
        with contextlib.suppress(OSError):
            store.touch(found.key, engine)
    return found


def _build(
    name: str,
    requirements: Sequence[str],
    image_id: str,
    image: str,
    facts: ImageFacts,
    wheels_only: bool,
    progress: Progress | None,
) -> Environment:
    log.info(
        "environment: resolving %s for %s (%s) on the host", ", ".join(requirements), image, facts.describe()
    )
    wheelhouse = tempfile.mkdtemp(prefix=f"wheels.{os.getpid()}.", dir=store.path("tmp"))
    try:
        wheels = download(requirements, facts, wheelhouse, wheels_only, progress)
        key = content_key(image_id, facts, wheelhouse, wheels)
        log.info("environment %s: resolved to %s", key, ", ".join(wheels))
        store.hold_for_use(key)
        if not store.exists(key):
            with store.locked(key, "build"):
                if not store.exists(key):  # built by another process while we waited: use it
                    log.info("environment %s: installing %d wheels", key, len(wheels))
                    meta = {
                        "key": key,
                        "declared": list(requirements),
                        "resolved": wheels,
                        "image": image,
                        "image_id": image_id,
                        "target": facts.describe(),
                    }
                    install(key, wheelhouse, wheels, facts, meta, progress)
        _write_index(name, key)
        return Environment(key, store.env_dir(key), tuple(requirements))
    finally:
        shutil.rmtree(wheelhouse, ignore_errors=True)
