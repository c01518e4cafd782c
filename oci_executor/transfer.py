"""Host files crossing into and out of the container, streamed over the runner's channel.

A task's ``put`` step carries a :class:`~oci_executor.task.FileSource`: :func:`send_file`
reads it in chunks while the payload is sent. A ``get`` step's file comes back after the
task's value: :class:`FileSinks` writes those bytes to the host paths the task declared,
as ``shutil.copyfile`` would (parent folders created, an existing file keeps its mode), one
chunk at a time. Nothing here unpickles anything.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from oci_executor import protocol
from oci_executor.channel import Channel
from oci_executor.errors import FileTransferError
from oci_executor.task import FileSource


def file_source(path: str, what: str) -> FileSource:
    """A host file to send, checked now: a missing or unreadable file fails before any container."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if os.path.isdir(path):
                raise IsADirectoryError(21, "Is a directory", path)
    except OSError as exc:
        raise FileTransferError(
            f"{what}: cannot read {path!r} on this host: {exc.strerror or exc}. "
            "Check the path (it is read on the host that runs the task, the Covalent server) and its permissions."
        ) from None
    return FileSource(path, size)


def send_file(channel: Channel, source: FileSource) -> None:
    """Send exactly ``source.size`` bytes of the file, a chunk at a time."""
    left = source.size
    with open(source.path, "rb") as handle:
        while left > 0:
            chunk = handle.read(min(left, protocol.CHUNK))
            if not chunk:
                raise FileTransferError(
                    f"{source.path!r} shrank while it was sent ({source.size - left} of {source.size} bytes): "
                    "do not change a file while a task that transfers it starts"
                )
            channel.send(chunk)
            left -= len(chunk)


class FileSinks:
    """Writes the files a task sends back to their host paths, in order."""

    def __init__(self, paths: Sequence[str], labels: Sequence[str] = ()) -> None:
        self.paths = list(paths)
        self.labels = list(labels) + [""] * (len(self.paths) - len(labels))
        self.sizes: list[int] = []
        self.index = 0
        self.left = 0
        self.handle: object = None
        self.error: FileTransferError | None = None

    def expect(self, sizes: Sequence[int]) -> None:
        """The sizes the result record announced (one per path, else the stream is refused)."""
        if len(sizes) != len(self.paths):
            raise protocol.ProtocolError(
                f"the task sent {len(sizes)} files back, {len(self.paths)} were asked for"
            )
        self.sizes = list(sizes)
        self._next()

    def pending(self) -> bool:
        return self.index < len(self.sizes)

    def write(self, data: bytes) -> None:
        """Take the next bytes of the file stream."""
        view = memoryview(data)
        while view:
            if not self.pending():
                raise protocol.ProtocolError("the task sent more file bytes than its record says")
            take = min(len(view), self.left)
            if self.handle is not None:
                try:
                    self.handle.write(view[:take])  # type: ignore[attr-defined]
                except OSError as exc:
                    self._fail(exc)
            view = view[take:]
            self.left -= take
            if self.left == 0:
                self._close()
                self.index += 1
                self._next()

    def _next(self) -> None:
        while self.pending():
            path = self.paths[self.index]
            self.left = self.sizes[self.index]
            try:
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                self.handle = open(path, "wb")  # noqa: SIM115 - closed in _close
            except OSError as exc:
                self.handle = None
                self._fail(exc)
            if self.left:
                return
            self._close()
            self.index += 1

    def _close(self) -> None:
        if self.handle is not None:
            try:
                self.handle.close()  # type: ignore[attr-defined]
            except OSError as exc:
                self._fail(exc)
            self.handle = None

    def _fail(self, exc: OSError) -> None:
        self._close_quietly()
        if self.error is None:
            label = self.labels[self.index] or "a file transfer"
            self.error = FileTransferError(
                f"{label}: cannot write {self.paths[self.index]!r} on this host: {exc.strerror or exc}. "
                "Check that its folder is writable by the user running the Covalent server."
            )

    def _close_quietly(self) -> None:
        try:
            if self.handle is not None:
                self.handle.close()  # type: ignore[attr-defined]
        except OSError:
            pass
        self.handle = None

    def close(self) -> None:
        """Close whatever is open (the task ended, complete or not)."""
        self._close_quietly()
