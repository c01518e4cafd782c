"""The wire protocol between the host and the runner, defined once for both sides.

Standard library only: this file is shipped into the container with the runner (as
``oci_protocol``), so the runner and the host read the same constants and the same parser.

Trust runs one way. The host trusts nothing the container writes: a result *record* (status,
error type, message, traceback, value size) is JSON, parsed with :func:`decode_record` under
size and type checks; the task's return value is raw cloudpickle bytes that the host hands
on (to Covalent's TransportableObject) and never unpickles.
"""

from __future__ import annotations

import json
import struct
from typing import Any

VERSION = 3
"""Bumped on any change to the files, records or frames below."""

PROTOCOL_MODULE = "oci_protocol"
"""The name this module has inside the container."""

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


# -- frames (the resident runner's channel) ----------------------------------------------
# Every message on the channel is a frame: one kind byte, an 8-byte big-endian length, then
# that many bytes. A task frame is followed by ``size`` raw payload bytes (not framed).
FRAME_HEADER = struct.Struct(">cQ")
RECORD_LENGTH = struct.Struct(">Q")
"""The length of the result record at the start of the DATA stream (record, then value bytes)."""

# host -> runner
MODULES = b"M"
"""JSON ``{module name: source}``: the runner, this module and cloudpickle (first frame)."""
TASK = b"T"
"""JSON task header (:func:`task_header`); ``size`` raw payload bytes follow."""
KILL = b"K"
"""Kill the running task (time limit, cancel)."""

# runner -> host
ACK = b"A"
"""The task was accepted and its process started (a task lost before this can be retried)."""
HELLO = b"H"
"""JSON ``{"python": "X.Y"}``, from the bootstrap, before any module is loaded."""
READY = b"R"
"""JSON ``{"version": VERSION}``: the runner is loaded and waits for tasks."""
DATA = b"D"
"""A chunk of the task's result stream: 8-byte record length, record JSON, value bytes."""
STDOUT = b"O"
STDERR = b"E"
EXIT = b"X"
"""JSON ``{"exit_code", "signal", "killed", "error", "rusage"}``: the task's process is gone.
``rusage`` is ``{"max_rss_kb", "user_s", "system_s"}`` of the task's process (and the children
it waited for), from ``wait4``."""
EVENT = b"V"
"""JSON ``{"kind": "progress"|"event", "fraction", "message", "data"}``: sent by the task while
it runs (``oci_executor.task.progress``), relayed as it happens (see :func:`decode_event`)."""

CHUNK = 1024 * 1024
MAX_CONTROL_BYTES = 1024 * 1024
"""Frames other than DATA, STDOUT and STDERR are at most this long."""
MAX_EVENT_BYTES = 16 * 1024
"""An event from a task is at most this long (longer lines are dropped by the runner)."""
EVENT_KINDS = ("progress", "event")


def frame(kind: bytes, body: bytes = b"") -> bytes:
    """One frame with its header."""
    return FRAME_HEADER.pack(kind, len(body)) + body


def task_header(sizes: list[int], layout: dict[str, Any]) -> dict[str, Any]:
    """The JSON header of a task: the payload's blob sizes and how to read them."""
    return {"version": VERSION, "sizes": sizes, "size": sum(sizes), **layout}


def decode_control(kind: bytes, body: bytes) -> dict[str, Any]:
    """Parse a control frame's JSON body (never trusted)."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(f"the runner's {kind!r} frame is not JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"the runner's {kind!r} frame is not a JSON object")
    return value


def decode_event(body: bytes) -> dict[str, Any]:
    """Parse and check an EVENT frame written by a task (never trusted): a known kind, a
    fraction in [0, 1] or None, a message string, and a flat ``data`` object."""
    if len(body) > MAX_EVENT_BYTES:
        raise ProtocolError(f"an event of {len(body)} bytes is over the {MAX_EVENT_BYTES} allowed")
    event = decode_control(EVENT, body)
    kind, fraction, message = event.get("kind"), event.get("fraction"), event.get("message", "")
    data = event.get("data", {})
    if kind not in EVENT_KINDS:
        raise ProtocolError(f"an event has an unknown kind {kind!r}")
    if fraction is not None and (
        isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1
    ):
        raise ProtocolError("an event's fraction is not a number from 0 to 1")
    if not isinstance(message, str) or not isinstance(data, dict):
        raise ProtocolError("an event's message is not a string or its data not an object")
    return {"kind": kind, "fraction": fraction, "message": message[:MESSAGE_LIMIT], "data": data}


# The container's main process. It waits for the host's first frame (so nothing is lost
# before the host attaches; it ends if none comes within IDLE seconds), reports its Python
# version, then loads the shipped modules from memory and serves tasks. Written for any
# Python 3, so that a wrong version is reported rather than crashing on syntax.
BOOTSTRAP = """\
import json, os, select, struct, sys
H = struct.Struct(@FRAME_HEADER@)
def rd(n):
    b = bytearray()
    while len(b) < n:
        c = os.read(0, n - len(b))
        if not c:
            os._exit(0)
        b += c
    return bytes(b)
def send(k, body):
    body = json.dumps(body).encode()
    os.write(1, H.pack(k, len(body)) + body)
if not select.select([0], [], [], float(sys.argv[1]))[0]:
    os._exit(0)
k, n = H.unpack(rd(H.size))
mods = json.loads(rd(n).decode("utf-8"))
send(b"H", {"python": "%d.%d" % sys.version_info[:2]})
import importlib.abc, importlib.util
class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name in mods:
            return importlib.util.spec_from_loader(name, self, is_package=mods[name][0])
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        name = module.__name__
        exec(compile(mods[name][1], "<oci-executor:%s>" % name, "exec"), module.__dict__)
sys.meta_path.insert(0, Finder())
import oci_runner
oci_runner.serve(sys.argv[1:])
"""
BOOTSTRAP = BOOTSTRAP.replace("@FRAME_HEADER@", repr(FRAME_HEADER.format))
"""Run as ``python -c BOOTSTRAP IDLE_TIMEOUT MAX_LIFETIME``; modules arrive as ``{name: [is_package, source]}``."""
