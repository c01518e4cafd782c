"""What an image's Python is, asked once per image digest: version, ABI, platform tags.

The question runs as a task in the image (no pip, nothing but its Python), prints its answer
as one JSON line, and the answer is kept under ``facts/<digest>.json`` in the store: the next
process asks the engine for the image's ID and reads it from there.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import sysconfig
from dataclasses import asdict, dataclass
from typing import Any

from oci_executor.errors import ConfigurationError

PROBE_SOURCE = """
def probe():
    import json, os, platform, sys, sysconfig
    libc, version = platform.libc_ver()
    if not libc:
        try:
            libc, version = "glibc", os.confstr("CS_GNU_LIBC_VERSION").split()[1]
        except (AttributeError, ValueError, OSError, IndexError):
            libc, version = "", ""
    if not libc and any(os.path.exists(p) for p in ("/lib/ld-musl-x86_64.so.1", "/lib/ld-musl-aarch64.so.1")):
        libc = "musl"
    print("@@oci-facts@@" + json.dumps({
        "python": "%d.%d" % sys.version_info[:2],
        "implementation": sys.implementation.name,
        "abiflags": getattr(sys, "abiflags", ""),
        "soabi": sysconfig.get_config_var("SOABI") or "",
        "machine": platform.machine(),
        "libc": libc,
        "libc_version": version,
    }))
"""
MARKER = "@@oci-facts@@"
_SHORT = {"cpython": "cp", "pypy": "pp"}


@dataclass(frozen=True)
class ImageFacts:
    """The facts pip needs to pick wheels for an image's Python."""

    python: str
    implementation: str
    abiflags: str
    soabi: str
    machine: str
    libc: str
    libc_version: str

    @property
    def impl(self) -> str:
        return _SHORT.get(self.implementation, self.implementation[:2])

    @property
    def abi(self) -> str:
        return f"{self.impl}{self.python.replace('.', '')}{self.abiflags}"

    def platforms(self) -> list[str]:
        """Platform tags the image accepts, newest first (pip does not expand ``manylinux_2_X``)."""
        if self.libc == "glibc" and self.libc_version:
            major, minor = (int(x) for x in self.libc_version.split(".")[:2])
            tags = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 4, -1)]
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
            tags += [f"{name}_{self.machine}" for m, name in legacy.items() if m <= minor]
            return tags
        if self.libc == "musl":
            return [f"musllinux_1_{m}_{self.machine}" for m in range(2, -1, -1)]
        raise ConfigurationError(
            f"the image's C library is unknown ({self.libc or 'neither glibc nor musl'}), so no "
            "wheel can be picked for it: use an image based on a glibc or musl distribution."
        )

    def describe(self) -> str:
        return f"{self.abi}/{self.platforms()[0]}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def probe_function() -> Any:
    """The probe as a function cloudpickle ships by value (its module is not importable)."""
    namespace: dict[str, Any] = {"__name__": "oci_environment_probe"}
    exec(PROBE_SOURCE, namespace)  # noqa: S102 - our own constant source
    return namespace["probe"]


def parse_probe(stdout: str) -> ImageFacts:
    """The facts from the probe's stdout (JSON text, checked field by field: never unpickled)."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            fields = ImageFacts.__dataclass_fields__
            if not isinstance(data, dict) or set(data) != set(fields):
                break
            return ImageFacts(**{k: str(data[k]) for k in fields})
    raise ConfigurationError(f"the image did not say what its Python is; it printed: {stdout[-500:]!r}")


def host_facts() -> ImageFacts:
    """The facts of this machine's Python (the local backend runs tasks with it)."""
    libc, version = platform.libc_ver()
    return ImageFacts(
        python="{}.{}".format(*sys.version_info[:2]),
        implementation=sys.implementation.name,
        abiflags=getattr(sys, "abiflags", ""),
        soabi=sysconfig.get_config_var("SOABI") or "",
        machine=platform.machine(),
        libc=libc or ("musl" if os.path.exists("/lib/ld-musl-x86_64.so.1") else ""),
        libc_version=version,
    )


def load_facts(path: str) -> ImageFacts | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return ImageFacts(**json.load(handle))
    except (OSError, ValueError, TypeError):
        return None
