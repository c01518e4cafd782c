"""Tar archives for ``put_archive``/``get_archive``: files in, files out, nothing outside."""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from oci_executor.errors import ContainerError


def make_tar(dest_dir: str, files: Mapping[str, bytes]) -> bytes:
    """A tar archive placing ``files`` under ``dest_dir`` (entries relative to ``/``).

    A file whose path leaves ``dest_dir`` (``..``, an absolute path) is refused, by path
    components. Folders get entries only inside ``dest_dir``: existing folders above it (like
    ``/tmp``, with its sticky bit) keep their modes; the engine creates missing ones.
    """
    base = PurePosixPath("/", dest_dir)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        dirs: set[PurePosixPath] = set()
        for relative, content in files.items():
            target = PurePosixPath(posixpath.normpath(str(base / relative)))
            if target == base or base not in target.parents:
                raise ContainerError(f"file {relative!r} would land outside {dest_dir!r}")
            missing = [
                p for p in reversed(target.parents) if (p == base or base in p.parents) and p not in dirs
            ]
            for directory in missing:
                dirs.add(directory)
                info = tarfile.TarInfo(str(directory).lstrip("/"))
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            info = tarfile.TarInfo(str(target).lstrip("/"))
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def read_tar(chunks: Any, src_dir: str) -> dict[str, bytes]:
    """Regular files of a ``get_archive`` stream, keyed by path relative to ``src_dir``."""
    data = b"".join(chunks)
    top = posixpath.basename(src_dir.rstrip("/"))
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name
            relative = name[len(top) + 1 :] if name.startswith(top + "/") else name
            extracted = tar.extractfile(member)
            if extracted is not None:
                files[relative] = extracted.read()
    return files
