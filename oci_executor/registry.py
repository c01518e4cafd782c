"""Backend discovery (pluggy) and lookup by name."""

from __future__ import annotations

import functools
import sys

import pluggy

from oci_executor import hookspecs
from oci_executor.backend import Backend, BackendConfig
from oci_executor.errors import ConfigurationError, EngineUnavailableError, UnknownBackendError

BUILTIN_BACKEND_MODULES = (
    "oci_executor.backends.local",
    "oci_executor.backends.docker",
    "oci_executor.backends.podman",
)
AUTO = "auto"


class BackendRegistry:
    """Backend classes by name, filled by the ``oci_executor_register_backends`` hook."""

    def __init__(self) -> None:
        self._backends: dict[str, type[Backend]] = {}

    def add(self, backend: type[Backend]) -> None:
        """Register ``backend`` under ``backend.name``; a name may be registered once."""
        name = getattr(backend, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"backend class {backend!r} has no 'name' attribute")
        if name == AUTO:
            raise ConfigurationError(f"backend name {AUTO!r} is reserved")
        existing = self._backends.get(name)
        if existing is not None and existing is not backend:
            raise ConfigurationError(f"backend name {name!r} registered twice: {existing!r} and {backend!r}")
        self._backends[name] = backend

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._backends)

    def auto_order(self) -> list[str]:
        """The order ``backend="auto"`` tries: by each backend's ``priority``, highest first."""
        return sorted(self._backends, key=lambda name: (-self._backends[name].priority, name))

    def get(self, name: str) -> type[Backend]:
        """The backend class registered as ``name``; :class:`UnknownBackendError` if none."""
        try:
            return self._backends[name]
        except KeyError:
            raise UnknownBackendError(name, [AUTO, *self.names()]) from None


def plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with the built-in backends and the installed backend plugins."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for module_name in BUILTIN_BACKEND_MODULES:
        __import__(module_name)
        pm.register(sys.modules[module_name], name=module_name)
    pm.load_setuptools_entrypoints(hookspecs.ENTRY_POINT_GROUP)
    pm.check_pending()  # a misspelt hook implementation fails loudly
    return pm


def build_registry(pm: pluggy.PluginManager | None = None) -> BackendRegistry:
    """Ask every registered plugin to add its backends to a new registry."""
    registry = BackendRegistry()
    (pm or plugin_manager()).hook.oci_executor_register_backends(registry=registry)
    return registry


@functools.cache
def default_registry() -> BackendRegistry:
    """The process-wide registry, built on first use (not at import time)."""
    return build_registry()


def select_backend(
    name: str, config: BackendConfig | None = None, registry: BackendRegistry | None = None
) -> Backend:
    """Instantiate the backend called ``name``; for ``"auto"``, the first available one.

    A named backend is returned even if its engine is down: the first verb reports that
    with a precise error. ``"auto"`` tries :meth:`BackendRegistry.auto_order`.
    """
    registry = registry or default_registry()
    config = config or BackendConfig()
    if name != AUTO:
        return registry.get(name)(config)
    tried = []
    for candidate in registry.auto_order():
        backend = registry.get(candidate)(config)
        if backend.available():
            return backend
        tried.append(backend.describe())
        backend.close()
    raise EngineUnavailableError(
        "backend='auto' found no available backend (tried: " + ", ".join(tried) + ")"
    )
