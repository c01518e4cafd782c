"""The runner's side of what travels besides the pickles: files in and out, module sources.

Shipped into the container with the runner (as ``oci_runner_files``); standard library only.

- :func:`inventory`: the top-level modules the image can import, with their versions.
- :class:`TaskFiles`: for one task, the staged inbound files (written while the payload is
  read, so nothing waits on the host), the module folder put first on ``sys.path``, the
  ``put`` steps (a staged file moved to its destination, as ``shutil.copyfile`` would leave it)
  and the ``get`` steps (a file opened now, its bytes sent after the value).
"""

from __future__ import annotations

import importlib.metadata
import os
import pkgutil
import shutil
import sys
import tempfile
from typing import Any

CHUNK = 1024 * 1024


def inventory() -> dict[str, Any]:
    """``{"modules": [...], "versions": {top-level name: version}}`` of this interpreter's image
    (a task environment's folder, ``OCI_EXECUTOR_SITE``, is not the image's: left out)."""
    env = os.environ.get("OCI_EXECUTOR_SITE", "")
    path = [p for p in sys.path if not (env and p.startswith(env))]
    modules = {m.name for m in pkgutil.iter_modules(path) if m.name.isidentifier()}
    modules |= set(sys.builtin_module_names)
    versions: dict[str, str] = {}
    try:
        for top, dists in importlib.metadata.packages_distributions().items():
            try:
                versions[top] = importlib.metadata.version(dists[0])
            except Exception:  # noqa: BLE001 - broken metadata: no version
                pass
    except Exception:  # noqa: BLE001
        pass
    return {"modules": sorted(modules), "versions": versions}


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class TaskFiles:
    """One task's files: staged inbound ones, module sources, outbound ones."""

    def __init__(self) -> None:
        self.folder = ""
        self.staged: dict[int, str] = {}
        self.outbound: list[tuple[int, int]] = []  # (fd, size)

    def _dir(self) -> str:
        if not self.folder:
            self.folder = tempfile.mkdtemp(prefix="oci-task-")
        return self.folder

    def stage(self, index: int, source: int, size: int) -> None:
        """Copy ``size`` bytes of blob ``index`` from ``source`` into a staging file."""
        path = os.path.join(self._dir(), f"staged-{index}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            while size > 0:
                chunk = os.read(source, min(size, CHUNK))
                if not chunk:
                    break
                _write_all(fd, chunk)
                size -= len(chunk)
        finally:
            os.close(fd)
        self.staged[index] = path

    def add_modules(self, digest: str, files: dict[str, bytes]) -> None:
        """Put the module folder ``digest`` first on ``sys.path``, writing ``files`` into it first
        when they came with this task (the folder stays for the container's later tasks)."""
        name = f"oci-modules-{os.path.basename(digest)}"
        root = os.path.join(tempfile.gettempdir(), name)
        if files and not os.path.isdir(root):
            partial = tempfile.mkdtemp(prefix=f"{name}-")
            for relative, data in files.items():
                path = os.path.normpath(os.path.join(partial, relative))
                if not path.startswith(partial + os.sep):
                    continue
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as handle:
                    handle.write(data)
            os.chmod(partial, 0o755)
            try:
                os.rename(partial, root)
            except OSError:  # another task wrote it first
                shutil.rmtree(partial, ignore_errors=True)
        sys.path.insert(0, root)

    def put(self, index: int, dest: str) -> None:
        """Move staged blob ``index`` to ``dest``, as ``shutil.copyfile`` would leave it."""
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        staged = self.staged.pop(index)
        if os.path.isdir(dest):
            raise IsADirectoryError(21, "Is a directory", dest)
        if os.path.exists(dest):
            shutil.copyfile(staged, dest)  # an existing file keeps its mode and owner
            os.unlink(staged)
        else:
            try:
                os.replace(staged, dest)
            except OSError:
                shutil.move(staged, dest)

    def get(self, src: str) -> None:
        """Open ``src`` now; its bytes follow the value in the result stream."""
        fd = os.open(src, os.O_RDONLY)
        if os.path.isdir(src):
            os.close(fd)
            raise IsADirectoryError(21, "Is a directory", src)
        self.outbound.append((fd, os.fstat(fd).st_size))

    def sizes(self) -> list[int]:
        return [size for _, size in self.outbound]

    def send(self, dest: int) -> None:
        """Write every outbound file's bytes to ``dest``: exactly the size announced."""
        for fd, size in self.outbound:
            left = size
            while left > 0:
                chunk = os.read(fd, min(left, CHUNK))
                if not chunk:  # shrunk since it was opened: keep the stream in step
                    chunk = bytes(min(left, CHUNK))
                _write_all(dest, chunk)
                left -= len(chunk)
            os.close(fd)
        self.outbound = []

    def clean(self) -> None:
        for fd, _ in self.outbound:
            os.close(fd)
        self.outbound = []
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
