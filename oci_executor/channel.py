"""A byte channel to a container's main process (its stdin and stdout), and frame reading.

:meth:`Backend.attach` returns a :class:`Channel`. What the runner writes to its stdout
arrives through :meth:`Channel.recv_into`; what it writes to its stderr is kept (the last
64 KiB) for error messages. Closing the channel closes the runner's stdin, which ends it.
"""

from __future__ import annotations

import abc
import select
import socket
import threading
from typing import Any

from oci_executor import protocol
from oci_executor.errors import RunnerError

DIAGNOSTICS_LIMIT = 64 * 1024


class ChannelClosed(RunnerError):
    """The runner's end of the channel closed (the container ended or was removed)."""


class Channel(abc.ABC):
    """A duplex byte stream to the runner; one task at a time uses it."""

    def __init__(self) -> None:
        self._stderr = bytearray()
        self._send_lock = threading.Lock()

    @abc.abstractmethod
    def _send(self, data: bytes | memoryview) -> None:
        """Write all of ``data`` to the runner's stdin."""

    @abc.abstractmethod
    def recv_into(self, view: memoryview) -> int:
        """Read the runner's stdout into ``view``; 0 at end of stream."""

    @abc.abstractmethod
    def fileno(self) -> int:
        """A descriptor that turns readable when the runner writes or goes away."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the channel; the runner sees end of file on its stdin and exits."""

    def send(self, data: bytes | memoryview) -> None:
        """Write ``data``; safe to call from another thread (a time limit's kill)."""
        try:
            with self._send_lock:
                self._send(data)
        except OSError as exc:
            raise ChannelClosed(f"the runner's channel closed while sending ({exc})") from None

    def _note_stderr(self, data: bytes) -> None:
        self._stderr += data
        del self._stderr[:-DIAGNOSTICS_LIMIT]

    def diagnostics(self) -> str:
        """The end of what the runner wrote to its stderr."""
        return self._stderr.decode("utf-8", errors="replace").strip()

    def idle_alive(self) -> bool:
        """For an idle channel: whether the runner is still there (no EOF, no stray bytes)."""
        try:
            readable, _, _ = select.select([self.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable


class FrameReader:
    """Reads protocol frames from a channel, filling caller buffers without extra copies."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def read_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            count = self.channel.recv_into(view[got:])
            if count == 0:
                raise ChannelClosed("the runner's channel closed")
            got += count

    def read(self, size: int) -> bytes:
        buffer = bytearray(size)
        self.read_into(memoryview(buffer))
        return bytes(buffer)

    def header(self) -> tuple[bytes, int]:
        kind, size = protocol.FRAME_HEADER.unpack(self.read(protocol.FRAME_HEADER.size))
        return kind, size

    def control(self, expected: bytes | None = None) -> tuple[bytes, dict[str, Any]]:
        """The next frame, which must be a JSON control frame (of kind ``expected`` if given)."""
        kind, size = self.header()
        if size > protocol.MAX_CONTROL_BYTES:
            raise protocol.ProtocolError(f"the runner sent a {size}-byte {kind!r} frame")
        body = self.read(size)
        if expected is not None and kind != expected:
            raise protocol.ProtocolError(f"the runner sent a {kind!r} frame where {expected!r} was due")
        return kind, protocol.decode_control(kind, body)


class SocketChannel(Channel):
    """An engine's attach stream: raw stdin out, multiplexed stdout/stderr in (8-byte headers)."""

    def __init__(self, sock: socket.socket, keep: Any = None, prefix: bytes = b"") -> None:
        super().__init__()
        self.sock = sock
        self._keep = keep  # the SDK response that owns the socket, kept alive with it
        self._prefix = bytearray(prefix)
        self._stream = 0
        self._remaining = 0

    def _send(self, data: bytes | memoryview) -> None:
        self.sock.sendall(data)

    def fileno(self) -> int:
        return self.sock.fileno()

    def _raw_into(self, view: memoryview) -> int:
        if self._prefix:
            count = min(len(view), len(self._prefix))
            view[:count] = self._prefix[:count]
            del self._prefix[:count]
            return count
        return self.sock.recv_into(view)

    def _raw_exact(self, size: int) -> bytes | None:
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            count = self._raw_into(view[got:])
            if count == 0:
                return None
            got += count
        return bytes(buffer)

    def recv_into(self, view: memoryview) -> int:
        while self._remaining == 0 or self._stream != 1:
            if self._remaining and self._stream != 1:
                data = self._raw_exact(self._remaining)
                if data is None:
                    return 0
                self._note_stderr(data)
                self._remaining = 0
                continue
            header = self._raw_exact(8)
            if header is None:
                return 0
            self._stream = header[0]
            self._remaining = int.from_bytes(header[4:8], "big")
        count = self._raw_into(view[: self._remaining])
        self._remaining -= count
        return count

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        if self._keep is not None and hasattr(self._keep, "close"):
            try:
                self._keep.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


class StreamChannel(Channel):
    """A plain duplex socket (no engine multiplexing), e.g. one end of a socket pair."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def _send(self, data: bytes | memoryview) -> None:
        self.sock.sendall(data)

    def recv_into(self, view: memoryview) -> int:
        try:
            return self.sock.recv_into(view)
        except OSError:
            return 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
