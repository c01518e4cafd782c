"""Our containers on every engine this process can reach: what ``oci-executor ls`` shows and
what ``oci-executor gc`` removes.

Only containers carrying ``MANAGED_LABEL`` are ever listed or removed. A container is an
orphan when its owner (the driver process, see :mod:`oci_executor.owner`) is gone; owners on
other hosts are unknown and their containers are left alone (they end themselves: see
``idle_timeout`` and ``max_lifetime``).
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from oci_executor.backend import Backend, BackendConfig, ManagedContainer
from oci_executor.errors import EnginePermissionError, OCIExecutorError
from oci_executor.labels import DISPATCH_LABEL, NODE_LABEL, OWNER_LABEL
from oci_executor.owner import OwnerState, owner_state
from oci_executor.registry import default_registry

ROOTLESS_SOCKETS = "/run/user/*/podman/podman.sock"


@dataclass(frozen=True)
class Entry:
    """One container of ours, on the engine :attr:`engine` names."""

    engine: str
    container: ManagedContainer
    owner: OwnerState
    backend: Backend = field(repr=False, compare=False)

    @property
    def dispatch(self) -> str:
        return self.container.labels.get(DISPATCH_LABEL, "")

    @property
    def node(self) -> str:
        return self.container.labels.get(NODE_LABEL, "")

    def age(self, now: float | None = None) -> float | None:
        created = self.container.created
        return None if created is None else max(0.0, (now or time.time()) - created)

    def to_dict(self) -> dict[str, object]:
        return {
            "engine": self.engine,
            "id": self.container.id,
            "name": self.container.name,
            "state": self.container.state,
            "dispatch": self.dispatch,
            "node": self.node,
            "age": self.age(),
            "owner": self.container.labels.get(OWNER_LABEL, ""),
            "owner_state": self.owner,
        }


def engines(addresses: Sequence[tuple[str, str]] = ()) -> Iterator[Backend]:
    """Each engine to visit: every registered backend at its default address, ``addresses``
    (``(backend, address)`` pairs) and, when run as root, every user's rootless Podman socket."""
    registry = default_registry()
    seen: set[str] = set()
    wanted: list[tuple[str, str | None]] = [(name, None) for name in registry.names() if name != "local"]
    wanted += list(addresses)
    if os.geteuid() == 0 and "podman" in registry.names():
        wanted += [("podman", f"unix://{path}") for path in sorted(glob.glob(ROOTLESS_SOCKETS))]
    for name, address in wanted:
        backend = registry.get(name)(BackendConfig(address=address))
        if backend.describe() in seen:
            backend.close()
            continue
        seen.add(backend.describe())
        yield backend


def listing(backends: Sequence[Backend]) -> tuple[list[Entry], list[str]]:
    """Our containers on ``backends``, and one line per engine that could not be listed.

    An engine visited only by default that this user may not use, or that is not installed,
    is one short line (its cause), not a failure: a Podman user never configured Docker.
    """
    entries: list[Entry] = []
    problems: list[str] = []
    for backend in backends:
        try:
            found = backend.managed()
        except EnginePermissionError as exc:
            cause = re.split(r"(?<=[^.])\. |: ", str(exc).splitlines()[0], maxsplit=1)[0]
            problems.append(f"{backend.describe()}: not visited ({cause})")
            continue
        except OCIExecutorError as exc:
            if not backend.config.address and not backend.installed():
                continue
            problems.append(f"{backend.describe()}: {str(exc).splitlines()[0]}")
            continue
        entries += [
            Entry(backend.describe(), c, owner_state(c.labels.get(OWNER_LABEL)), backend) for c in found
        ]
    return entries, problems


def orphans(entries: Sequence[Entry], older_than: float = 0.0) -> list[Entry]:
    """The entries whose owner is gone, created at least ``older_than`` seconds ago."""
    now = time.time()
    return [e for e in entries if e.owner == "gone" and (e.age(now) or 0.0) >= older_than]
