"""A DepsBash that names a host path acts in the container: say so, once.

``DepsBash(["touch /tmp/x"])`` on Covalent's local executor touches the server's ``/tmp/x``; in
a container it touches the container's. That is isolation, not a bug, but the user should be
told where to look: :func:`warn_host_paths` logs one warning per distinct command naming a path
that exists on this host (or whose folder does) outside every volume's container path, with the
``volumes=`` form that would share it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence

from oci_executor.backend import Volume

log = logging.getLogger("oci_executor.covalent")

SYSTEM = ("/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64", "/dev", "/proc", "/sys", "/etc", "/run")
"""Folders every image has its own of: naming them is not a host path."""
_PATH = re.compile(r"(?<![\w:/.~$-])(/[\w.+@%-]+(?:/[\w.+@%-]*)*)")
_WARNED: set[str] = set()


def host_paths(command: str, volumes: Sequence[Volume]) -> list[str]:
    """Absolute paths in ``command`` that exist here (or whose folder does), outside volumes."""
    found = []
    for path in _PATH.findall(command):
        norm = os.path.normpath(path)
        if norm == "/" or any(norm == s or norm.startswith(s + "/") for s in SYSTEM):
            continue
        if any(norm == v.container or norm.startswith(v.container.rstrip("/") + "/") for v in volumes):
            continue
        if os.path.exists(norm) or (
            os.path.dirname(norm) not in ("", "/") and os.path.isdir(os.path.dirname(norm))
        ):
            found.append(norm)
    return found


def warn_host_paths(commands: Iterable[str], volumes: Sequence[Volume]) -> None:
    """Log one warning per distinct DepsBash command naming host paths (see the module doc)."""
    for command in commands:
        paths = host_paths(command, volumes)
        if not paths or command in _WARNED:
            continue
        _WARNED.add(command)
        folder = os.path.dirname(paths[0]) or paths[0]
        log.warning(
            "DepsBash command %r names %s: it runs in the container, so it acts on the container's "
            "files, not this host's. To share a host folder, mount it: volumes=[%r] "
            "(see docs/what-runs-where.md)",
            command,
            ", ".join(paths),
            f"{folder}:{folder}",
        )
