"""The exception tree of oci-executor.

Every error raised by the executor or a backend derives from :class:`OCIExecutorError`.
Backends map their engine's exceptions to these at the boundary, so callers never see a
``docker.errors`` or ``podman.errors`` type. Each message names the problem and the fix.
"""

from __future__ import annotations


class OCIExecutorError(Exception):
    """Base class of every oci-executor error."""


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
    """The engine's socket does not answer (engine not installed or not running)."""


class EnginePermissionError(EngineUnavailableError):
    """The engine's socket exists but this user may not use it."""


class ImageNotFoundError(BackendError):
    """The image is not in the engine's local store and may not be pulled."""


class ImagePullError(BackendError):
    """Pulling the image failed."""


class ImageHasNoPythonError(BackendError):
    """The image has no Python interpreter at the configured path."""


class PythonVersionMismatchError(BackendError):
    """The image's Python minor version differs from the host's."""

    def __init__(self, image: str, image_version: str, host_version: str) -> None:
        self.image = image
        self.image_version = image_version
        self.host_version = host_version
        super().__init__(
            f"image {image!r} has Python {image_version} but this host runs Python "
            f"{host_version}; tasks are pickled and need the same major.minor on both sides. "
            f"Use an image with Python {host_version} (for example python:{host_version}-slim), "
            "or run Covalent under a matching Python."
        )


class ContainerError(BackendError):
    """A container operation failed in the engine."""


class TaskSerializationError(OCIExecutorError):
    """The task's function or inputs cannot be pickled for shipping."""


class ResultSerializationError(OCIExecutorError):
    """The task ran but its return value cannot be pickled back to the host."""


class RunnerError(OCIExecutorError):
    """The in-container runner ended without writing a result."""


class TaskTimeoutError(OCIExecutorError):
    """The task ran over the executor's ``time_limit`` and was killed.

    ``stdout`` and ``stderr`` hold what the task printed before it was killed.
    """

    def __init__(self, message: str, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr


class OutOfMemoryError(OCIExecutorError):
    """The task was killed for exceeding the container's memory limit."""
