"""The exception tree of oci-executor. Catch :class:`OCIExecutorError` to catch them all.

::

    OCIExecutorError                  the one to catch
    ├── ConfigurationError            an option value we cannot use (also a ValueError)
    │   └── UnknownBackendError       no backend registered under that name
    ├── BackendError                  the engine refused or failed an operation
    │   ├── EngineUnavailableError    the engine does not answer (not running, silent, gone)
    │   │   ├── EnginePermissionError the socket exists but this user may not use it
    │   │   └── SshConnectionError    a remote engine's host: unknown, refused the key, no engine, link lost
    │   ├── ImageNotFoundError        not in the store, and pull_policy forbids a pull
    │   ├── ImagePullError            a pull failed
    │   ├── ImageHasNoPythonError     no interpreter at the configured path
    │   ├── PythonVersionMismatchError   the image's Python X.Y is not the host's
    │   ├── ContainerNotFoundError    the container is gone
    │   └── ContainerError            any other engine failure, with the engine's message
    ├── TaskSerializationError        the task's function or inputs cannot be pickled
    ├── ModuleUnavailableError        a module the task references is neither in the image nor shippable
    ├── FileTransferError             a FileTransfer could not read or write its file on the host
    ├── ResultSerializationError      the task's return value cannot be pickled
    ├── RunnerError                   the runner or the task's process ended without a result
    ├── TaskTimeoutError              the task ran over time_limit (carries what it printed)
    ├── OutOfMemoryError              the kernel killed the task at the memory limit
    ├── ProcessLimitError             a fork or thread was refused at the pids_limit
    └── EnvironmentBuildError         declared packages could not be resolved or installed

Backends map their engine's exceptions to these at the boundary, so callers never see a
``docker.errors`` or ``podman.errors`` type. Each message names the problem and the fix; the
fields ``address``, ``image``, ``container_id`` and ``exit_code`` carry what applies.
"""

from __future__ import annotations


class OCIExecutorError(Exception):
    """Base class of every oci-executor error: the one to catch."""

    def __init__(
        self,
        message: str = "",
        *,
        address: str | None = None,
        image: str | None = None,
        container_id: str | None = None,
        exit_code: int | None = None,
        kind: str = "",
    ) -> None:
        super().__init__(message)
        self.address = address
        """The engine's address, when an engine was involved."""
        self.image = image
        self.container_id = container_id
        self.exit_code = exit_code
        self.kind = kind
        """What the engine's own error meant, when one was mapped at the backend boundary:
        ``missing``, ``conflict`` (HTTP 409), ``unavailable`` or ``engine``; else empty."""


class ConfigurationError(OCIExecutorError, ValueError):
    """An executor option has a value we cannot use."""


class UnknownBackendError(ConfigurationError):
    """No backend is registered under the requested name."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        self.available = available
        super().__init__(
            f"unknown backend {name!r}; available backends: {', '.join(available)} "
            "(install a backend plugin that registers this name, or pick one of these)"
        )


class BackendError(OCIExecutorError):
    """A container engine refused or failed an operation."""


class EngineUnavailableError(BackendError):
    """The engine's socket does not answer (engine not installed, not running, silent or gone).

    ``link_lost``: the way to the engine (a remote engine's ssh link) was lost, not
    necessarily the engine itself.
    """

    def __init__(self, message: str = "", *, link_lost: bool = False, **fields: object) -> None:
        super().__init__(message, **fields)  # type: ignore[arg-type]
        self.link_lost = link_lost


class EnginePermissionError(EngineUnavailableError):
    """The engine's socket exists but this user may not use it."""


class SshConnectionError(EngineUnavailableError):
    """A remote engine (an ``ssh://`` address) cannot be reached, logged in to, or served.

    ``host``, ``user`` and ``port`` name the remote host; ``reason`` says what failed:
    ``unknown-host``, ``host-key``, ``key-refused``, ``key-file``, ``refused``, ``unreachable``,
    ``timeout``, ``no-engine``, ``wrong-socket``, ``socket-permission``, ``link-lost``,
    ``no-client``, ``ssh``.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str = "",
        user: str = "",
        port: int | None = None,
        reason: str = "",
        **fields: object,
    ) -> None:
        super().__init__(message, link_lost=reason == "link-lost", **fields)
        self.host = host
        self.user = user
        self.port = port
        self.reason = reason


class ImageNotFoundError(BackendError):
    """The image is not in the engine's local store and may not be pulled."""


class ImagePullError(BackendError):
    """Pulling the image failed."""


class ImageHasNoPythonError(BackendError):
    """The image has no Python interpreter at the configured path."""


class PythonVersionMismatchError(BackendError):
    """The image's Python minor version differs from the host's."""

    def __init__(self, image: str, image_version: str, host_version: str) -> None:
        self.image_version = image_version
        self.host_version = host_version
        super().__init__(
            f"image {image!r} has Python {image_version} but this host runs Python "
            f"{host_version}; tasks are pickled and need the same major.minor on both sides. "
            f"Use an image with Python {host_version} (for example python:{host_version}-slim), "
            "or run Covalent under a matching Python.",
            image=image,
        )


class ContainerNotFoundError(BackendError):
    """The container does not exist (any more)."""


class ContainerError(BackendError):
    """A container operation failed in the engine."""


class TaskSerializationError(OCIExecutorError):
    """The task's function or inputs cannot be pickled for shipping."""


class ModuleUnavailableError(OCIExecutorError):
    """A module the task references is not in the image and cannot travel with the task."""


class FileTransferError(OCIExecutorError):
    """A FileTransfer could not read or write its file on the host (the message names it)."""


class ResultSerializationError(OCIExecutorError):
    """The task ran but its return value cannot be pickled back to the host."""


class RunnerError(OCIExecutorError):
    """The in-container runner, or the task's process, ended without a result."""


class TaskTimeoutError(OCIExecutorError):
    """The task ran over the executor's ``time_limit`` and was killed.

    ``stdout`` and ``stderr`` hold what the task printed before it was killed.
    """

    def __init__(self, message: str, stdout: str = "", stderr: str = "", **fields: object) -> None:
        super().__init__(message, **fields)  # type: ignore[arg-type]
        self.stdout = stdout
        self.stderr = stderr


class OutOfMemoryError(OCIExecutorError):
    """The task was killed for exceeding the container's memory limit."""


class ProcessLimitError(OCIExecutorError):
    """The task tried to start a process or thread past the container's pids limit.

    ``stdout`` and ``stderr`` hold what the task printed (its traceback at the end of stderr).
    """

    def __init__(self, message: str, stdout: str = "", stderr: str = "", **fields: object) -> None:
        super().__init__(message, **fields)  # type: ignore[arg-type]
        self.stdout = stdout
        self.stderr = stderr


class EnvironmentBuildError(OCIExecutorError):
    """A task's declared packages could not be resolved, downloaded or installed.

    The message names the package, the indexes asked and pip's last lines, or where the disk
    space went."""
