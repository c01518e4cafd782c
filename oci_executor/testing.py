"""A test double shipped with the library: :class:`FakeBackend`, an in-memory backend.

Each "container" is a thread that speaks the runner protocol over a socket pair and runs
tasks in-thread (no isolation: for unit tests of your own logic only). Any verb can be
scripted to fail::

    backend = FakeBackend()
    backend.fail_next("create", ContainerError("engine said no"))

Real-engine tests stay for everything that depends on an engine.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cloudpickle

from oci_executor import protocol, runner_files
from oci_executor.backend import (
    OPTIONAL_SETTINGS,
    Backend,
    BackendConfig,
    Container,
    ContainerSpec,
    ExecResult,
)
from oci_executor.channel import Channel, StreamChannel
from oci_executor.errors import ContainerNotFoundError
from oci_executor.task import host_python_version


@dataclass
class FakeContainer:
    """What the fake engine holds for one container."""

    spec: ContainerSpec
    host_end: socket.socket
    runner_end: socket.socket
    thread: threading.Thread | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    attached: bool = False
    tasks: int = 0


class FakeBackend(Backend):
    """An in-memory backend honouring the verb contract; see the module docstring."""

    name: ClassVar[str] = "fake"
    priority: ClassVar[int] = -100
    supported_options = frozenset(OPTIONAL_SETTINGS)

    def __init__(self, config: BackendConfig | None = None, *, python: str | None = None) -> None:
        super().__init__(config)
        self.python = python or host_python_version()
        self.containers: dict[str, FakeContainer] = {}
        self.calls: list[tuple[str, str]] = []
        """``(verb, container id or image)`` for every verb called, in order."""
        self._failures: dict[str, list[BaseException]] = {}
        self._lock = threading.Lock()

    # -- scripting -----------------------------------------------------------------------

    def fail_next(self, verb: str, error: BaseException) -> None:
        """Make the next call of ``verb`` raise ``error``."""
        self._failures.setdefault(verb, []).append(error)

    def vanish(self, container_id: str) -> None:
        """The container disappears behind our back (removed by hand, engine restart)."""
        with self._lock:
            fake = self.containers.pop(container_id, None)
        if fake is not None:
            _close(fake.runner_end)

    def _verb(self, verb: str, subject: str) -> None:
        self.calls.append((verb, subject))
        queue = self._failures.get(verb)
        if queue:
            raise queue.pop(0)

    def _get(self, container: Container) -> FakeContainer:
        with self._lock:
            fake = self.containers.get(container.id)
        if fake is None:
            raise ContainerNotFoundError(f"no fake container {container.id}", container_id=container.id)
        return fake

    # -- the verbs -------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> Container:
        self._verb("create", spec.image)
        host_end, runner_end = socket.socketpair()
        container_id = uuid.uuid4().hex
        fake = FakeContainer(spec, host_end, runner_end)
        fake.thread = threading.Thread(target=_serve, args=(fake, self.python), daemon=True)
        self._verb("start", container_id)
        fake.thread.start()
        with self._lock:
            self.containers[container_id] = fake
        return Container(
            container_id, self.name, spec.image, "sha256:fake", "/tmp/fake", spec.python, "fake://"
        )

    def attach(self, container: Container) -> Channel:
        self._verb("attach", container.id)
        fake = self._get(container)
        if fake.attached:
            raise ContainerNotFoundError("a fake container can be attached once", container_id=container.id)
        fake.attached = True
        return StreamChannel(fake.host_end)

    def copy_in(self, container: Container, dest_dir: str, files: Mapping[str, bytes]) -> None:
        self._verb("copy_in", container.id)
        fake = self._get(container)
        for relative, content in files.items():
            fake.files[f"{dest_dir.rstrip('/')}/{relative}"] = bytes(content)

    def exec(
        self,
        container: Container,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> ExecResult:
        self._verb("exec", container.id)
        self._get(container)
        return ExecResult(0, b"", b"")

    def copy_out(self, container: Container, src_dir: str) -> dict[str, bytes]:
        self._verb("copy_out", container.id)
        prefix = src_dir.rstrip("/") + "/"
        return {k[len(prefix) :]: v for k, v in self._get(container).files.items() if k.startswith(prefix)}

    def stop(self, container: Container) -> None:
        self._verb("stop", container.id)
        with self._lock:
            fake = self.containers.get(container.id)
        if fake is not None:
            _close(fake.runner_end)

    def remove(self, container: Container) -> None:
        self._verb("remove", container.id)
        with self._lock:
            fake = self.containers.pop(container.id, None)
        if fake is not None:
            _close(fake.runner_end)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _serve(fake: FakeContainer, python: str) -> None:
    """The fake runner: the protocol's answers, tasks run in this thread."""
    sock = fake.runner_end
    try:
        reader = sock.makefile("rb")
        kind, body = _read(reader)
        if kind != protocol.MODULES:
            return
        sock.sendall(protocol.frame(protocol.HELLO, json.dumps({"python": python}).encode()))
        sock.sendall(protocol.frame(protocol.READY, json.dumps({"version": protocol.VERSION}).encode()))
        while True:
            kind, body = _read(reader)
            if kind == protocol.QUERY:  # tasks run in this process: its modules are the image's
                inventory = json.dumps(runner_files.inventory()).encode()
                sock.sendall(protocol.frame(protocol.INVENTORY, inventory))
                continue
            if kind != protocol.TASK:
                continue
            header = json.loads(body)
            blobs = [reader.read(size) for size in header["sizes"]]
            sock.sendall(protocol.frame(protocol.ACK))
            fake.tasks += 1
            record, value = _run(header, blobs)
            raw = protocol.encode_record(record)
            sock.sendall(protocol.frame(protocol.DATA, protocol.RECORD_LENGTH.pack(len(raw)) + raw + value))
            sock.sendall(protocol.frame(protocol.EXIT, b'{"exit_code": 0}'))
    except (OSError, EOFError, ValueError):
        return


def _read(reader: Any) -> tuple[bytes, bytes]:
    head = reader.read(protocol.FRAME_HEADER.size)
    if len(head) < protocol.FRAME_HEADER.size:
        raise EOFError
    kind, size = protocol.FRAME_HEADER.unpack(head)
    return kind, reader.read(size)


def _run(header: dict[str, Any], blobs: list[bytes]) -> tuple[dict[str, Any], bytes]:
    try:
        function = cloudpickle.loads(blobs[header["function"]])
        args = [cloudpickle.loads(blobs[i]) for i in header["args"]]
        kwargs = {k: cloudpickle.loads(blobs[i]) for k, i in header["kwargs"].items()}
        value = cloudpickle.dumps(function(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - reported like the real runner does
        return {
            "ok": False,
            "phase": "task",
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": "",
        }, b""
    return {"ok": True, "size": len(value), "repr": "", "version": protocol.VERSION}, value
