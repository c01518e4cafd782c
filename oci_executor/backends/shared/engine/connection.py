"""An engine backend's SDK client: connected on first use, with bounded waits, one per
backend instance (and, for a remote engine, one per tunnel socket)."""

from __future__ import annotations

import abc
import contextlib
import threading
from typing import Any

from oci_executor.backend import BackendConfig
from oci_executor.backends.shared.engine.remote import RemoteEngine
from oci_executor.backends.shared.sdk import describe
from oci_executor.errors import OCIExecutorError

CONNECT_TIMEOUT = 5.0
"""Seconds to connect to an engine and hear its first ping."""
API_TIMEOUT = 120.0
"""Seconds an API call may wait without an answer (a pull streams, so this is not a cap on it)."""


class EngineConnection(RemoteEngine):
    """The SDK client of an engine backend, and its health probe."""

    def __init__(self, config: BackendConfig | None = None) -> None:
        super().__init__(config)
        self._client: Any = None
        self._containers: dict[str, Any] = {}
        """SDK container objects by ID, so that verbs on a fresh container need no lookup."""
        self._lock = threading.Lock()
        self._endpoint = ""

    @abc.abstractmethod
    def _connect(self) -> Any:
        """A new SDK client for :meth:`address`."""

    def describe(self) -> str:
        return f"{self.name} at {self.address()}"

    def client(self) -> Any:
        """The SDK client, connected on first use.

        Connecting and the first ping time out after :data:`CONNECT_TIMEOUT` seconds (an
        engine that accepts connections but never answers must not hang a task); later calls
        fail after :data:`API_TIMEOUT` seconds without an answer.
        """
        if self.remote() is not None:
            endpoint = self.endpoint()  # (re)starts the tunnel; a new socket means a new client
            with self._lock:
                if endpoint != self._endpoint:
                    stale, self._client, self._endpoint = self._client, None, endpoint
                    self._containers.clear()
                    if stale is not None:
                        with contextlib.suppress(Exception):
                            stale.close()
        with self._lock:
            if self._client is None:
                try:
                    client = self._connect()
                    client.api.timeout = CONNECT_TIMEOUT
                    client.ping()
                    client.api.timeout = API_TIMEOUT
                except OCIExecutorError:
                    raise  # already ours (a transient service that would not start)
                except Exception as exc:  # noqa: BLE001 - every connect failure is "unavailable"
                    raise self.unavailable(describe(exc)) from exc
                self._client = client
            return self._client

    def check(self) -> None:
        """Raise :class:`EngineUnavailableError` unless the engine answers a ping now.

        For a remote engine whose ssh link died, that is the error (naming the host): the
        link is not silently rebuilt here (the next task's connection does that).
        """
        target = self.remote()
        if target is not None and self._tunnel is not None and self._tunnel.lost():
            raise self._remote_problem(target, "the ssh tunnel ended")
        try:
            client = self.client()
            self._ping(client, CONNECT_TIMEOUT)
        except OCIExecutorError:
            raise
        except Exception as exc:  # noqa: BLE001 - the engine did not answer
            raise self.unavailable(describe(exc)) from exc

    def _ping(self, client: Any, timeout: float) -> None:
        """One ping with its own timeout (the client may be in use by other threads)."""
        response = client.api.head(client.api._url("/_ping"), timeout=timeout)
        response.raise_for_status()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._containers.clear()
            self._endpoint = ""
        self.release_tunnel()
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
