"""Where environments live on this machine, and the locks that keep them whole.

Layout under :func:`root` (``$OCI_EXECUTOR_ENV_DIR``, else ``$XDG_CACHE_HOME/oci-executor/environments``)::

    envs/<key>/            a finished environment: site-packages plus oci-environment.json
    facts/<image id>.json  what an image's Python is (see :mod:`.image`)
    index/<hash>.json      which key a declared set resolved to for an image (no resolver next time)
    locks/<key>.build      held (flock) by the one process building <key>
    locks/<key>.use        held shared by every process using <key>; prune takes it exclusively
    tmp/<key>.<pid>.<rand> a build in progress; renamed to envs/<key> when complete
    engines/<hash>.json    a remote engine that holds copies in named volumes (see :mod:`.volumes`)

A build happens in ``tmp/`` and becomes visible by one ``rename``: nothing half-built is ever
used. The locks are ``flock`` locks, released by the kernel when their holder dies, so a
killed builder's successor takes over and removes its leftovers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

META_FILE = "oci-environment.json"
USE_FILE = ".last-use"


def root() -> str:
    """The store's folder on this machine."""
    configured = os.environ.get("OCI_EXECUTOR_ENV_DIR")
    if configured:
        return os.path.abspath(configured)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "oci-executor", "environments")


def path(*parts: str) -> str:
    return os.path.join(root(), *parts)


def ensure() -> None:
    """Create the store's folders; readable by all (a rootless engine's user reads the mounts)."""
    for sub in ("envs", "facts", "index", "locks", "tmp", "engines"):
        os.makedirs(path(sub), mode=0o755, exist_ok=True)


def env_dir(key: str) -> str:
    return path("envs", key)


def exists(key: str) -> bool:
    return os.path.isfile(os.path.join(env_dir(key), META_FILE))


@contextlib.contextmanager
def locked(key: str, kind: str, *, shared: bool = False, wait: bool = True) -> Iterator[bool]:
    """Hold ``locks/<key>.<kind>``; yields False (without waiting) if ``wait`` is False and it is taken."""
    ensure()
    fd = os.open(path("locks", f"{key}.{kind}"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


_held: dict[str, int] = {}


def hold_for_use(key: str) -> None:
    """Take ``locks/<key>.use`` shared for the rest of this process (prune leaves the key alone)."""
    if key in _held:
        return
    ensure()
    fd = os.open(path("locks", f"{key}.use"), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _held[key] = fd


def release_uses() -> None:
    """Let go of every use lock this process holds (a run that is done with its environments)."""
    while _held:
        os.close(_held.popitem()[1])


def new_build_dir(key: str) -> str:
    """A fresh folder in ``tmp/`` for a build of ``key``; leftovers of dead builders go first
    (the caller holds the build lock, so no live process owns them)."""
    ensure()
    for name in os.listdir(path("tmp")):
        if name.startswith(f"{key}."):
            discard(path("tmp", name))
    folder = path("tmp", f"{key}.{os.getpid()}.{os.urandom(4).hex()}")
    os.makedirs(folder, mode=0o755)
    return folder


def discard(entry: str) -> None:
    """Remove a folder or a file of ``tmp/`` (a build folder, an archive on its way to an engine)."""
    if os.path.isdir(entry) and not os.path.islink(entry):
        shutil.rmtree(entry, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.remove(entry)


def publish(build_dir: str, key: str, meta: dict[str, Any]) -> str:
    """Write the metadata, make everything readable by all, and rename into ``envs/<key>``."""
    with open(os.path.join(build_dir, META_FILE), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=1, sort_keys=True)
    for folder, _dirs, files in os.walk(build_dir):
        os.chmod(folder, 0o755)
        for name in files:
            full = os.path.join(folder, name)
            if not os.path.islink(full):
                os.chmod(full, os.stat(full).st_mode & 0o111 | 0o644)
    os.rename(build_dir, env_dir(key))
    return env_dir(key)


def touch(key: str, engine: str) -> None:
    """Record a use of ``key`` by ``engine`` (time and engine; for ``env ls`` and prune)."""
    file = path("index", f"{key}{USE_FILE}")
    try:
        with open(file, encoding="utf-8") as handle:
            engines = set(json.load(handle).get("engines", []))
    except (OSError, ValueError):
        engines = set()
    engines.add(engine)
    tmp = f"{file}.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"last_use": time.time(), "engines": sorted(engines)}, handle)
    os.replace(tmp, file)


def last_use(key: str) -> dict[str, Any]:
    """When ``key`` was last used and by which engines (``{}`` if never)."""
    try:
        with open(path("index", f"{key}{USE_FILE}"), encoding="utf-8") as handle:
            found = json.load(handle)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


@dataclass(frozen=True)
class Entry:
    """One environment, as ``oci-executor env ls`` shows it."""

    key: str
    packages: list[str]
    target: str
    image: str
    size: int
    built: float
    last_use: float | None
    engines: list[str]
    path: str


def size_of(folder: str) -> int:
    total = 0
    for base, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


def entries() -> list[Entry]:
    """Every finished environment in the store, newest use first."""
    found = []
    folder = path("envs")
    for key in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        try:
            with open(os.path.join(folder, key, META_FILE), encoding="utf-8") as handle:
                meta = json.load(handle)
        except (OSError, ValueError):
            continue
        use = last_use(key)
        found.append(
            Entry(
                key=key,
                packages=list(meta.get("resolved", [])),
                target=str(meta.get("target", "")),
                image=str(meta.get("image", "")),
                size=size_of(os.path.join(folder, key)),
                built=float(meta.get("built", 0)),
                last_use=use.get("last_use"),
                engines=list(use.get("engines", [])),
                path=os.path.join(folder, key),
            )
        )
    return sorted(found, key=lambda e: -(e.last_use or e.built))


def remove(key: str) -> bool:
    """Remove ``key`` unless a process uses it (holds its use lock); True if removed."""
    with locked(key, "use", wait=False) as free:
        if not free or not os.path.isdir(env_dir(key)):
            return False
        trash = path("tmp", f"{key}.prune.{os.getpid()}")
        os.rename(env_dir(key), trash)  # gone from envs/ at once; deleted below
        shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.remove(path("index", f"{key}{USE_FILE}"))
        return True


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a builder whose leftovers are not yet
    garbage)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
