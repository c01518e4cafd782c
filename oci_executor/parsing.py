"""What an option is (:class:`Option`), and the parsing and checking of option values (sizes,
volumes, GPUs, images, maps). The options themselves are listed in :mod:`oci_executor.settings`
(the shared ones) and by each backend (the ones it adds)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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


# Docker's image reference grammar (distribution/reference): [host[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)"
)
_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


def check_image(value: Any) -> str:
    """An image reference (``name[:tag][@digest]``, optionally with a registry host)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(
            f"image={value!r} is empty: name an image with the host's Python, such as "
            "'python:3.11-slim', or leave the option out to use the configured default"
        )
    if not _REFERENCE.match(value):
        raise ConfigurationError(
            f"image={value!r} is not a valid image reference: use lowercase "
            "'[registry/]name[:tag][@digest]', such as 'python:3.11-slim' or 'ghcr.io/org/img:1.0'"
        )
    return value


def check_string_map(value: Any, option: str) -> dict[str, str]:
    """``env``/``labels``: string keys and scalar values (numbers become strings)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{option}={value!r} is not a mapping of names to strings")
    checked = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise ConfigurationError(
                f"{option} has an invalid name {key!r}: use a non-empty string without '='"
            )
        if item is None or isinstance(item, (Mapping, list, tuple, set)):
            raise ConfigurationError(
                f"{option}[{key!r}] is {item!r}: give a string (or a number), or leave {key!r} out"
            )
        checked[key] = str(item).lower() if isinstance(item, bool) else str(item)
    return checked


def check_string_list(value: Any, option: str) -> list[str]:
    """A list of strings (``slurm_args``); ``None`` is an empty list."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigurationError(f'{option}={value!r} must be a list of strings, e.g. ["--constraint=avx2"]')
    for item in value:
        if not isinstance(item, str) or not item:
            raise ConfigurationError(f"{option} has {item!r}: each item must be a non-empty string")
    return list(value)


def check_seconds(value: Any, option: str, *, allow_zero: bool = False) -> float:
    """A positive number of seconds (or 0 where that means "off")."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{option}={value!r} is not a number of seconds") from None
    if isinstance(value, bool) or seconds < 0 or (seconds == 0 and not allow_zero) or seconds != seconds:
        raise ConfigurationError(
            f"{option}={value!r} must be a positive number of seconds" + (" (or 0)" if allow_zero else "")
        )
    return seconds


def check_time_limit(value: Any) -> float | None:
    """Covalent's ``time_limit``: seconds, or ``-1``/``0`` (Covalent's default) for no limit."""
    if value in (None, -1, 0):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"time_limit={value!r} is not a number of seconds") from None
    if isinstance(value, bool) or not seconds > 0:
        raise ConfigurationError(
            f"time_limit={value!r} is negative: give a positive number of seconds, or -1 for no limit"
        )
    return seconds


def check_count(value: Any, option: str) -> int:
    """A whole number, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigurationError(f"{option}={value!r} is not a whole number")
    try:
        count = int(value)
    except ValueError:
        raise ConfigurationError(f"{option}={value!r} is not a whole number") from None
    if count < 0 or count != float(value):
        raise ConfigurationError(f"{option}={value!r} must be a whole number, 0 or more")
    return count


@dataclass(frozen=True)
class Option:
    """One option: its parser returns the stored (JSON-able) value or raises naming it.

    ``doc`` says what it does; each backend says in its ``option_notes`` how it treats a
    shared option (the docs table shows both). An option a backend adds (its ``options``)
    reaches that backend in ``ContainerSpec.backend_options``; other backends refuse it.
    """

    name: str
    type: str
    default: Any
    parse: Callable[[Any], Any]
    doc: str


def text(name: str, *, empty_ok: bool = True) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        value = "" if value is None else value
        if not isinstance(value, str) or not (value or empty_ok):
            raise ConfigurationError(f"{name}={value!r} must be a{'' if empty_ok else ' non-empty'} string")
        return value

    return parse


def choice(name: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ConfigurationError(f"{name}={value!r} is not one of {', '.join(choices)}")
        return str(value)

    return parse


def flag(name: str) -> Callable[[Any], bool]:
    def parse(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ConfigurationError(f"{name}={value!r} must be true or false")
        return value

    return parse


def checked(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Check with ``parse`` but store the value as given (JSON-able, as the user wrote it)."""

    def check(value: Any) -> Any:
        parse(value)
        return value

    return check
