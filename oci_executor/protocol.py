"""The wire protocol between the host and the runner, defined once for both sides.

Standard library only: this file is shipped into the container beside the runner (as
``oci_protocol``), so the runner and the host read the same constants and the same parser.

Trust runs one way. The host trusts nothing the container writes: a result *record* (status,
error type, message, traceback, value size) is JSON, parsed with :func:`decode_record` under
size and type checks; the task's return value is raw cloudpickle bytes that the host hands
on (to Covalent's TransportableObject) and never unpickles.
"""

from __future__ import annotations

import json
from typing import Any

VERSION = 2
"""Bumped on any change to the files, records or frames below."""

# -- the task folder (the archive/exec path) ---------------------------------------------
RUNNER_NAME = "runner.py"
PROTOCOL_MODULE = "oci_protocol"
"""The name this module has inside the container."""
TASK_NAME = "task.pkl"
OUT_DIR = "out"
RECORD_NAME = "result.json"
VALUE_NAME = "value.bin"
STDOUT_NAME = "stdout"
STDERR_NAME = "stderr"

MAX_RECORD_BYTES = 4 * 1024 * 1024
"""A result record larger than this is refused (tracebacks are cut well below it)."""
TRACEBACK_LIMIT = 256 * 1024
MESSAGE_LIMIT = 64 * 1024
REPR_LIMIT = 2000

_FIELDS: dict[str, tuple[type, ...]] = {
    "ok": (bool,),
    "phase": (str,),
    "type": (str,),
    "message": (str,),
    "traceback": (str,),
    "repr": (str,),
    "python": (str,),
    "cloudpickle": (str,),
    "size": (int,),
    "version": (int,),
}


class ProtocolError(ValueError):
    """Bytes from the runner that do not follow this protocol."""


def encode_record(record: dict[str, Any]) -> bytes:
    """A result record as UTF-8 JSON."""
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def decode_record(raw: bytes) -> dict[str, Any]:
    """Parse and check a result record written by the runner (never trusted)."""
    if len(raw) > MAX_RECORD_BYTES:
        raise ProtocolError(f"the result record is {len(raw)} bytes, over the {MAX_RECORD_BYTES} allowed")
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"the result record is not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ProtocolError("the result record is not a JSON object")
    if not isinstance(record.get("ok"), bool):
        raise ProtocolError("the result record has no boolean 'ok'")
    for key, value in record.items():
        expected = _FIELDS.get(key)
        if expected is None:
            raise ProtocolError(f"the result record has an unknown field {key!r}")
        if not isinstance(value, expected) or (expected == (int,) and isinstance(value, bool)):
            raise ProtocolError(f"the result record's field {key!r} has the wrong type")
    if record["ok"]:
        size = record.get("size")
        if not isinstance(size, int) or size < 0:
            raise ProtocolError("a successful result record has no value size")
    return record
