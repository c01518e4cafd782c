"""Images between stores without a registry: ``oci-executor image copy SRC DEST``.

A store is ``docker``, ``podman`` (this user's: rootless for a user, rootful for root) or a
file (``file:PATH``, an archive ``docker save`` or ``podman save`` writes). ``--from-address``
and ``--to-address`` name another engine (``unix://``, ``tcp://``, ``ssh://user@host/...``, a
Podman connection), as the executor's ``address`` option does. The image streams from one
engine's save endpoint into the other's load endpoint, never held in memory whole, and
progress goes to the pull listeners (:mod:`oci_executor.progress`), so the command line shows
a bar.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from oci_executor.backend import Backend, BackendConfig
from oci_executor.errors import ConfigurationError, OCIExecutorError
from oci_executor.progress import PullProgress, PullReport

CHUNK = 1 << 20
ENGINES = ("docker", "podman")


@dataclass(frozen=True)
class Store:
    """Where an image is copied from or to: an engine (with its address) or an archive file."""

    kind: str
    """``docker``, ``podman`` or ``file``."""
    image: str
    """The image name (for ``file``: the archive's path)."""
    address: str | None = None


def parse(text: str, address: str | None = None, image: str = "") -> Store:
    """``docker:NAME``, ``podman:NAME``, ``podman`` (NAME from ``image``) or ``file:PATH``."""
    kind, _, rest = text.partition(":")
    if kind == "file":
        if not rest:
            raise ConfigurationError(f"{text!r}: give the archive's path, e.g. file:/tmp/python.tar")
        return Store("file", os.path.abspath(os.path.expanduser(rest)))
    if kind not in ENGINES:
        raise ConfigurationError(
            f"{text!r} is not a store: use docker:IMAGE, podman:IMAGE or file:PATH "
            "(for example `oci-executor image copy docker:python:3.11-slim podman`)"
        )
    return Store(kind, rest or image, address)


@contextlib.contextmanager
def engine(store: Store) -> Iterator[Backend]:
    """The backend of ``store``, closed afterwards."""
    from oci_executor.registry import select_backend

    backend = select_backend(store.kind, BackendConfig(address=store.address))
    try:
        yield backend
    finally:
        backend.close()


def chunks(handle: IO[bytes]) -> Iterator[bytes]:
    """The contents of ``handle`` in pieces of :data:`CHUNK` bytes."""
    return iter(lambda: handle.read(CHUNK), b"")


def store_name(backend: Backend) -> str:
    store = getattr(backend, "store", None)
    return str(store()) if callable(store) else backend.describe()


def save(backend: Backend, image: str) -> tuple[Iterator[bytes], int | None]:
    """The image as a ``docker save`` archive, in pieces, and its approximate size."""
    client: Any = backend.client()  # type: ignore[attr-defined]
    with backend._errors(f"look up image {image}", image=image):  # type: ignore[attr-defined]
        found = client.images.get(image)
    size = found.attrs.get("Size") if isinstance(getattr(found, "attrs", None), dict) else None
    with backend._errors(f"save image {image}", image=image):  # type: ignore[attr-defined]
        if backend.name == "docker":
            stream: Iterator[bytes] = client.api.get_image(image, chunk_size=CHUNK)
        else:
            quoted = urllib.parse.quote(image, safe="")
            response = client.api.get(
                f"/images/{quoted}/get", params={"format": "docker-archive"}, stream=True
            )
            response.raise_for_status()
            stream = response.iter_content(CHUNK)
    return stream, int(size) if size else None


def load(backend: Backend, data: Iterable[bytes], total: int | None, image: str) -> None:
    """Stream ``data`` (an image archive) into ``backend``'s store, reporting progress."""
    where = store_name(backend)
    report = PullReport(image, where)
    done = 0

    def counted() -> Iterator[bytes]:
        nonlocal done
        for piece in data:
            done += len(piece)
            report(PullProgress(image=image, layer="copy", status="Copying", current=done, total=total))
            yield piece

    client: Any = backend.client()  # type: ignore[attr-defined]
    with backend._errors(f"load image {image}", image=image):  # type: ignore[attr-defined]
        if backend.name == "docker":
            response = client.api._post(
                client.api._url("/images/load"),
                data=counted(),
                stream=True,
                timeout=(5, 3600),
                headers={"Content-Type": "application/x-tar"},
            )
            client.api._raise_for_status(response)
            for event in client.api._stream_helper(response, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    raise OCIExecutorError(str(event["error"]))
        else:
            response = client.api.post(
                "/images/load",
                data=counted(),
                headers={"Content-Type": "application/x-tar"},
                timeout=(5, 3600),
            )
            response.raise_for_status()
    report(PullProgress(image=image, layer="copy", status="Copied", current=done, total=done, done=True))
    report.finished()


def copy(source: Store, dest: Store) -> str:
    """Copy an image from ``source`` to ``dest``; return a sentence saying what was done."""
    if source.kind == "file" and dest.kind == "file":
        raise ConfigurationError("both stores are files: copy the file itself (cp)")
    if source.kind == "file":
        if not os.path.isfile(source.image):
            raise ConfigurationError(f"there is no archive at {source.image}")
        name = dest.image or os.path.basename(source.image)
        with engine(dest) as target, open(source.image, "rb") as handle:
            load(target, chunks(handle), os.path.getsize(source.image), name)
            return f"Loaded {source.image} into the {store_name(target)}."
    if not source.image:
        raise ConfigurationError(f"name the image to copy: {source.kind}:IMAGE")
    with engine(source) as origin:
        stream, size = save(origin, source.image)
        if dest.kind == "file":
            return _to_file(stream, size, source.image, dest.image, store_name(origin))
        if dest.image and dest.image != source.image:
            raise ConfigurationError(
                f"copying renames nothing: give DEST as {dest.kind} or {dest.kind}:{source.image}, "
                f"and tag it afterwards (`{dest.kind} tag {source.image} {dest.image}`)"
            )
        with engine(dest) as target:
            load(target, stream, size, source.image)
            return f"Copied {source.image} from the {store_name(origin)} to the {store_name(target)}."


def _to_file(stream: Iterator[bytes], size: int | None, image: str, path: str, where: str) -> str:
    report = PullReport(image, path)
    done = 0
    folder = os.path.dirname(path) or "."
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".oci-executor-copy-", delete=False) as handle:
        try:
            for piece in stream:
                handle.write(piece)
                done += len(piece)
                report(PullProgress(image=image, layer="copy", status="Copying", current=done, total=size))
        except BaseException:
            os.unlink(handle.name)
            raise
    shutil.move(handle.name, path)
    os.chmod(path, 0o644)
    report(PullProgress(image=image, layer="copy", status="Copied", current=done, total=done, done=True))
    return f"Saved {image} from the {where} to {path}."


def missing_image_hint(image: str, backend: str) -> str:
    """How to get ``image`` into ``backend``'s store without a registry (for messages)."""
    return (
        f"`oci-executor image copy docker:{image} {backend}` copies it from a store that has it "
        f"(or `oci-executor image copy file:ARCHIVE {backend}:{image}` from an archive `{backend} save` wrote)"
    )
