"""A channel over a child process's stdin and stdout pipes (the local runner, a Slurm step)."""

from __future__ import annotations

import os
import subprocess

from oci_executor.channel import Channel


class PipeChannel(Channel):
    """The local runner's stdin and stdout pipes; its stderr goes to a file."""

    def __init__(self, process: subprocess.Popen[bytes], stderr_path: str) -> None:
        super().__init__()
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._in = process.stdin.fileno()
        self._out = process.stdout
        self._stderr_path = stderr_path

    def _send(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._in, view) :]

    def recv_into(self, view: memoryview) -> int:
        return self._out.readinto(view) or 0  # type: ignore[attr-defined]

    def fileno(self) -> int:
        return self._out.fileno()

    def diagnostics(self) -> str:
        try:
            with open(self._stderr_path, "rb") as handle:
                return handle.read()[-65536:].decode("utf-8", errors="replace").strip()
        except OSError:
            return ""

    def close(self) -> None:
        try:
            if self._process.stdin is not None:
                self._process.stdin.close()
        except OSError:
            pass
