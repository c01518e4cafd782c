"""Small helpers for reading what the engine SDKs hand back."""

from __future__ import annotations

import datetime
from typing import Any


def describe(exc: BaseException) -> str:
    """An exception's message on one line, at most 500 characters."""
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:500]


def timestamp(value: Any) -> float | None:
    """A container's creation time as a Unix time (Docker: int; Podman: RFC 3339 text)."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.rstrip("Z")
        text = text[:26] if "." in text else text  # Python parses at most microseconds
        try:
            return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc).timestamp()
        except ValueError:
            return None
    return None
