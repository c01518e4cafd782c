"""Parsing and checking of the executor's container options (sizes, volumes, GPUs)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from oci_executor.backend import GpuRequest, Volume
from oci_executor.errors import ConfigurationError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(value: int | float | str | None, option: str) -> int | None:
    """Bytes from ``512m``, ``2g``, ``1.5GiB`` or a number of bytes; empty or 0 means unset."""
    if value in (None, "", 0):
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"{option}={value!r} is not a size; use bytes or a string like '512m'")
    if isinstance(value, int | float):
        size = int(value)
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ConfigurationError(
                f"{option}={value!r} is not a size; use bytes (536870912) or a string like '512m' or '2g'"
            )
        size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise ConfigurationError(f"{option}={value!r} must be positive")
    return size


def parse_volumes(value: Sequence[Any] | None) -> tuple[Volume, ...]:
    """Volumes from ``"host:container[:ro|rw]"`` strings or ``{"host", "container", "read_only"}`` dicts."""
    volumes = []
    for item in value or ():
        if isinstance(item, str):
            parts = item.split(":")
            if (
                len(parts) not in (2, 3)
                or not parts[0]
                or not parts[1]
                or (len(parts) == 3 and parts[2] not in ("ro", "rw"))
            ):
                raise ConfigurationError(
                    f"volume {item!r} is not 'HOST:CONTAINER' or 'HOST:CONTAINER:ro' (or ':rw')"
                )
            volumes.append(Volume(parts[0], parts[1], len(parts) == 3 and parts[2] == "ro"))
        elif isinstance(item, Mapping) and "host" in item and "container" in item:
            volumes.append(
                Volume(str(item["host"]), str(item["container"]), bool(item.get("read_only", False)))
            )
        else:
            raise ConfigurationError(
                f"volume {item!r} must be 'HOST:CONTAINER[:ro]' or a dict with 'host', 'container' and "
                "optionally 'read_only'"
            )
    for volume in volumes:
        if not volume.host.startswith("/") or not volume.container.startswith("/"):
            raise ConfigurationError(f"volume {volume.host}:{volume.container}: both paths must be absolute")
    return tuple(volumes)


def parse_gpus(value: str | int | Sequence[str] | None) -> GpuRequest | None:
    """``"all"``, a count, or a list of device IDs (or one ID string); empty means none."""
    if value in (None, "", 0, []):
        return None
    if value == "all" or value == -1:
        return GpuRequest(count=-1)
    if isinstance(value, bool):
        raise ConfigurationError(f"gpus={value!r}: use 'all', a count, or a list of device IDs")
    if isinstance(value, int):
        if value < 0:
            raise ConfigurationError(f"gpus={value!r}: a count must be positive (or 'all')")
        return GpuRequest(count=value)
    if isinstance(value, str):
        if value.isdigit():
            return GpuRequest(count=int(value))
        return GpuRequest(device_ids=tuple(v.strip() for v in value.split(",") if v.strip()))
    if isinstance(value, Sequence):
        return GpuRequest(device_ids=tuple(str(v) for v in value))
    raise ConfigurationError(f"gpus={value!r}: use 'all', a count, or a list of device IDs")


def parse_cpus(value: float | int | str | None) -> float | None:
    if value in (None, "", 0):
        return None
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"cpus={value!r} is not a number of CPUs (like 1.5)") from None
    if cpus <= 0:
        raise ConfigurationError(f"cpus={value!r} must be positive")
    return cpus
