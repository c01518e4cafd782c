"""An image made from this host's own Python: no registry, no root, no base image.

``oci-executor image build`` and the demo (when no image with the host's Python can be had)
write a ``docker save``-style archive holding one layer: the interpreter, its standard library
(without site-packages and tests), ``/bin/sh`` and ``/bin/bash``, and the shared libraries ``ldd``
names, at their host paths, plus ``/usr/bin/python3``, ``/tmp`` and a minimal ``/etc/passwd``. The engine loads it like any
saved image (:func:`oci_executor.images.load`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Iterable, Iterator

from oci_executor.backend import Backend

SKIPPED = {"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip"}
"""Standard library folders the image leaves out (the runner needs none of them)."""


def host_python_version() -> str:
    """``major.minor`` of the running interpreter."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


SHELLS = ("/bin/sh", "/bin/bash")
"""The host's shells the image carries (copies of what these paths resolve to)."""
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def host_image_name() -> str:
    """The name ``oci-executor image build`` gives the image: ``oci-executor/python:X.Y``."""
    return f"oci-executor/python:{host_python_version()}"


def interpreter() -> str:
    """The host's real interpreter (not a virtualenv's link to it)."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    return os.path.realpath(base)


def _libraries(binaries: Iterable[str]) -> set[str]:
    """The shared libraries (and the loader) ``ldd`` names for ``binaries``."""
    found: set[str] = set()
    for binary in binaries:
        done = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
        for line in done.stdout.splitlines():
            match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if match and os.path.exists(match.group(1)):
                found.add(match.group(1))
    return found


def _stdlib_files(stdlib: str) -> Iterator[str]:
    for folder, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
        for name in sorted(files):
            yield os.path.join(folder, name)


def _add_dir(tar: tarfile.TarFile, path: str, seen: set[str], mode: int = 0o755) -> None:
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts) + 1):
        name = "/".join(parts[:depth])
        if name and name not in seen:
            seen.add(name)
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)


def _add_file(tar: tarfile.TarFile, path: str, seen: set[str]) -> None:
    name = path.strip("/")
    if name in seen:
        return
    _add_dir(tar, os.path.dirname(path), seen)
    seen.add(name)
    real = os.path.realpath(path)
    info = tarfile.TarInfo(name)
    info.size = os.path.getsize(real)
    info.mode = os.stat(real).st_mode & 0o755 | 0o444
    with open(real, "rb") as handle:
        tar.addfile(info, handle)


def _add_bytes(tar: tarfile.TarFile, path: str, data: bytes, seen: set[str], mode: int = 0o644) -> None:
    _add_dir(tar, os.path.dirname(path), seen)
    seen.add(path.strip("/"))
    info = tarfile.TarInfo(path.strip("/"))
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_link(tar: tarfile.TarFile, path: str, target: str, seen: set[str]) -> None:
    if path.strip("/") in seen:
        return
    _add_dir(tar, os.path.dirname(path), seen)
    seen.add(path.strip("/"))
    info = tarfile.TarInfo(path.strip("/"))
    info.type, info.linkname = tarfile.SYMTYPE, target
    tar.addfile(info)


def write_layer(path: str) -> list[str]:
    """Write the layer tar to ``path``; return the image's environment."""
    python = interpreter()
    stdlib = sysconfig.get_paths(vars={"installed_base": sys.base_prefix, "base": sys.base_prefix})["stdlib"]
    dynload = [f for f in _stdlib_files(stdlib) if f.endswith(".so")]
    shells = [path for path in SHELLS if os.path.exists(path)]
    libraries = _libraries([python, *shells, *dynload])
    seen: set[str] = set()
    with tarfile.open(path, "w") as tar:
        _add_dir(tar, "/tmp", seen, mode=0o1777)
        _add_dir(tar, "/root", seen, mode=0o700)
        _add_bytes(tar, "/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", seen)
        _add_bytes(tar, "/etc/group", b"root:x:0:\n", seen)
        _add_file(tar, python, seen)
        for shell in shells:  # os.system, subprocess(shell=True) and DepsBash steps need one
            _add_file(tar, shell, seen)
        for library in sorted(libraries):
            _add_file(tar, library, seen)
        for name in _stdlib_files(stdlib):
            if not os.path.islink(name) or os.path.exists(name):
                _add_file(tar, name, seen)
        for link in ("/usr/bin/python3", f"/usr/bin/python{host_python_version()}"):
            _add_link(tar, link, python, seen)
    library_path = ":".join(sorted({os.path.dirname(lib) for lib in libraries}))
    return ["PATH=/usr/local/bin:/usr/bin:/bin", f"LD_LIBRARY_PATH={library_path}"]


def write_archive(name: str, folder: str) -> str:
    """Write a ``docker save``-style archive of the host-Python image ``name`` into ``folder``."""
    layer = os.path.join(folder, "layer.tar")
    env = write_layer(layer)
    digest = hashlib.sha256()
    with open(layer, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    config = json.dumps(
        {
            "architecture": _ARCH.get(platform.machine(), platform.machine()),
            "os": "linux",
            "config": {"Env": env, "Cmd": ["/usr/bin/python3"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest.hexdigest()}"]},
            "history": [
                {"created_by": f"oci-executor image build (this host's Python {sys.version.split()[0]})"}
            ],
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [name], "Layers": ["layer.tar"]}]).encode()
    archive = os.path.join(folder, "image.tar")
    with tarfile.open(archive, "w") as tar:
        for member, data in ((config_name, config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(layer, arcname="layer.tar")
    os.unlink(layer)
    return archive


def build(backend: Backend, name: str | None = None) -> str:
    """Build the host-Python image into ``backend``'s store (an engine backend); return its name."""
    from oci_executor import images

    name = name or host_image_name()
    with tempfile.TemporaryDirectory(prefix="oci-executor-image-") as folder:
        archive = write_archive(name, folder)
        with open(archive, "rb") as handle:
            images.load(backend, images.chunks(handle), os.path.getsize(archive), name)
    return name
