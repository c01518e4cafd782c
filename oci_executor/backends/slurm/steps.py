"""A container's handle (``oci-slurm-<job id>-<node>``) and its start step's pipes as the
runner's channel."""

from __future__ import annotations

import os
import re
import subprocess

from oci_executor.backend import Container
from oci_executor.backends.shared.pipes import PipeChannel
from oci_executor.backends.slurm import cli as s
from oci_executor.errors import ContainerNotFoundError

GONE_TIMEOUT = 30.0
_HANDLE = re.compile(rf"^{s.CONTAINER_PREFIX}(\d+)-(.+)$")


def parse_handle(container_id: str) -> tuple[str, str]:
    """``(job id, node)`` from a container id ``oci-slurm-<job>-<node>``."""
    match = _HANDLE.match(container_id)
    if not match:
        raise ContainerNotFoundError(f"{container_id!r} is not a slurm backend container handle")
    return match.group(1), match.group(2)


def read_line(process: subprocess.Popen[bytes]) -> bytes:
    """One line of a step's stdout, byte by byte (what follows is the runner's)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    return bytes(line)


class StepChannel(PipeChannel):
    """The start step's pipes; if it ends before the runner said a word, the node's check
    failed: raise that check's error (no runtime folder, no Podman, no image)."""

    def __init__(self, process: subprocess.Popen[bytes], stderr_path: str, container: Container) -> None:
        super().__init__(process, stderr_path)
        self._step_process = process
        self._container = container
        self._heard = False

    def recv_into(self, view: memoryview) -> int:
        count = super().recv_into(view)
        if count:
            self._heard = True
        elif not self._heard:
            try:
                code = self._step_process.wait(timeout=GONE_TIMEOUT)
            except subprocess.TimeoutExpired:
                return 0
            node = parse_handle(self._container.id)[1]
            error = s.node_error(self.diagnostics(), code, self._container.image, node)
            if error is not None:
                raise error
        return count
