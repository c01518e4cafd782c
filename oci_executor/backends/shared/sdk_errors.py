"""Engine errors mapped to ours at the backend boundary, by exception type.

An engine backend declares :attr:`SdkErrors.error_types`: its SDK's exception types, most
specific first, and what each means. Transport failures (a refused, broken or silent
connection) mean the engine is unavailable, whichever SDK wrapped them.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator
from typing import ClassVar, Literal

import requests

from oci_executor.backends.shared.sdk import describe
from oci_executor.errors import (
    ContainerError,
    ContainerNotFoundError,
    EnginePermissionError,
    EngineUnavailableError,
    ImageNotFoundError,
    OCIExecutorError,
)

ErrorKind = Literal["missing", "conflict", "unavailable", "engine"]

TRANSPORT_ERRORS: tuple[tuple[type[BaseException], ErrorKind], ...] = (
    (requests.exceptions.Timeout, "unavailable"),
    (requests.exceptions.ConnectionError, "unavailable"),
    (ConnectionError, "unavailable"),
)


class SdkErrors(abc.ABC):
    """Mixin for engine backends: :meth:`_errors` maps SDK exceptions to ours."""

    error_types: ClassVar[tuple[tuple[type[BaseException], ErrorKind], ...]] = ()
    """The SDK's exception types and what each means, most specific first (after
    :data:`TRANSPORT_ERRORS`). An HTTP 409 answer is a ``conflict`` whatever its type."""

    engine: str = "engine"
    """Human name of the engine, for messages."""
    start_hint: ClassVar[str] = ""
    """How to start the engine, for messages."""

    @abc.abstractmethod
    def address(self) -> str:
        """The socket URL this backend connects to."""

    def _map_error(self, exc: Exception, action: str) -> OCIExecutorError | None:
        """Our error for an SDK exception, or ``None`` (the default) to use the generic mapping."""
        return None

    def unavailable(self, detail: str) -> EngineUnavailableError:
        """The error for an engine whose socket does not answer."""
        if "permission denied" in detail.lower() or "errno 13" in detail.lower():
            return EnginePermissionError(
                f"permission denied on the {self.engine} socket {self.address()}: {detail}. "
                f"Add your user to the group that owns the socket, or point the executor's "
                f"'address' option at a socket you may use (for Podman, your rootless socket).",
                address=self.address(),
            )
        return EngineUnavailableError(
            f"the {self.engine} engine does not answer at {self.address()}: {detail}. {self.start_hint}",
            address=self.address(),
        )

    def _kind(self, exc: BaseException) -> tuple[ErrorKind, BaseException]:
        """What ``exc`` means, by type; a generic API error wrapping a lost connection (as
        podman-py wraps socket errors) is ``unavailable``."""
        table = TRANSPORT_ERRORS + self.error_types
        kind: ErrorKind = "engine"
        for exc_type, meaning in table:
            if isinstance(exc, exc_type):
                kind = meaning
                break
        if kind == "engine" and getattr(getattr(exc, "response", None), "status_code", None) == 409:
            return "conflict", exc
        if kind == "engine":
            cause = exc.__cause__ or exc.__context__
            while cause is not None:
                if any(isinstance(cause, t) for t, m in TRANSPORT_ERRORS):
                    return "unavailable", cause
                cause = cause.__cause__ or cause.__context__
        return kind, exc

    @contextlib.contextmanager
    def _errors(
        self, action: str, *, container_id: str | None = None, image: str | None = None
    ) -> Iterator[None]:
        """Map SDK exceptions raised in the block to ours, by type, with their fields."""
        try:
            yield
        except OCIExecutorError:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the boundary
            kind, seen = self._kind(exc)
            text = describe(exc)
            mapped = self._map_error(exc, action)
            if mapped is not None:
                pass
            elif kind == "unavailable":
                detail = describe(seen)
                if isinstance(seen, requests.exceptions.Timeout):
                    detail = f"no answer within the timeout ({detail})"
                mapped = self.unavailable(detail)
            elif kind == "missing" and image is not None and container_id is None:
                mapped = ImageNotFoundError(f"{self.engine} has no image {image!r}: {text}")
            elif kind == "missing":
                mapped = ContainerNotFoundError(
                    f"{self.engine} has no container {container_id or ''}: {text}"
                )
            else:
                mapped = ContainerError(f"{self.engine} failed to {action}: {text}")
            mapped.address = self.address()
            mapped.container_id = mapped.container_id or container_id
            mapped.image = mapped.image or image
            mapped.kind = kind
            raise mapped from exc
