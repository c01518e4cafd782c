"""Backend discovery (pluggy), lookup by name, and one shared backend instance per name and
config in this process."""

from __future__ import annotations

import functools
import logging
import re
import sys
import threading

import pluggy

from oci_executor import hookspecs
from oci_executor.backend import Backend, BackendConfig
from oci_executor.errors import ConfigurationError, EngineUnavailableError, UnknownBackendError

BUILTIN_BACKEND_MODULES = (
    "oci_executor.backends.local",
    "oci_executor.backends.docker",
    "oci_executor.backends.podman",
    "oci_executor.backends.slurm",
)
AUTO = "auto"

log = logging.getLogger(__name__)


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
        """The order ``backend="auto"`` tries: by each backend's ``priority``, highest first
        (backends with ``auto_candidate = False``, like ``slurm``, only by name)."""
        candidates = [name for name, backend in self._backends.items() if backend.auto_candidate]
        return sorted(candidates, key=lambda name: (-self._backends[name].priority, name))

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


def builtin_registry() -> BackendRegistry:
    """A registry of the built-in backends alone (installed plugins left out: for the docs)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for module_name in BUILTIN_BACKEND_MODULES:
        __import__(module_name)
        pm.register(sys.modules[module_name], name=module_name)
    return build_registry(pm)


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
    with a precise error. ``"auto"`` tries :meth:`BackendRegistry.auto_order` and logs what
    it picked and why it skipped the others. It never drops isolation silently: a backend
    without containers (``isolated = False``, the local one) is picked only when no container
    engine is installed at all, with a warning; an engine that is installed but does not work
    is an error carrying that engine's diagnosis.
    """
    registry = registry or default_registry()
    config = config or BackendConfig()
    if name != AUTO:
        return registry.get(name)(config)
    skipped: list[tuple[Backend, str]] = []
    fallback: Backend | None = None
    for candidate in registry.auto_order():
        backend = registry.get(candidate)(config)
        if not backend.isolated:
            fallback = fallback or backend
            continue
        problem = backend.problem()
        if problem is None:
            log.info("backend='auto' picked %s%s", backend.describe(), _skipped(skipped))
            return backend
        skipped.append((backend, problem))
    installed = [(b, p) for b, p in skipped if b.installed()]
    for backend, _ in skipped:
        backend.close()
    if installed:
        first, problem = installed[0]
        if len(installed) > 1:
            log.info("backend='auto' also skipped%s", _skipped(installed[1:]))
        # The diagnosis first (its first sentence is the cause), then what auto did: the other
        # engines' problems are in the log, not in a Podman user's error.
        raise EngineUnavailableError(
            f"{problem.rstrip('.')}. (backend='auto' chose {first.name}, the first engine installed here; "
            f"backend='local' runs tasks on the host without a container.)"
        )
    if fallback is None:
        raise EngineUnavailableError("backend='auto' found no backend" + _skipped(skipped))
    log.warning(
        "backend='auto': no container engine is installed%s; tasks run on the HOST with %s, without "
        "a container. Install Podman or Docker to isolate them.",
        _skipped(skipped),
        fallback.describe(),
    )
    fallback.auto_reason = "no container engine is installed" + _skipped(skipped)
    return fallback


def _skipped(skipped: list[tuple[Backend, str]]) -> str:
    if not skipped:
        return ""
    return " (skipped: " + "; ".join(f"{b.describe()}: {_first_sentence(p)}" for b, p in skipped) + ")"


def _first_sentence(text: str) -> str:
    """The cause of a problem, whole: its first sentence (never a cut-off piece)."""
    return re.split(r"(?<=[^.])\. ", text, maxsplit=1)[0].rstrip(".")


# -- one backend instance per name and config in this process ---------------------------------

UNSTARTED_AGE = 60.0
"""A container of ours created this long ago and never started has no live driver."""

_backends: dict[tuple[str, BackendConfig], Backend] = {}
_backends_lock = threading.Lock()


def shared_backend(name: str, config: BackendConfig) -> Backend:
    """One backend instance per name and config in this process (``auto`` resolved once).

    Sharing it shares the engine connection and, for Podman, a transient service.
    """
    with _backends_lock:
        backend = _backends.get((name, config))
        if backend is None:
            backend = select_backend(name, config)
            _backends[(name, config)] = backend
            _backends.setdefault((backend.name, config), backend)
            threading.Thread(target=_sweep, args=(backend,), name="oci-sweep", daemon=True).start()
        return backend


def _sweep(backend: Backend) -> None:
    """Remove containers a killed driver left between create and start (best effort)."""
    try:
        removed = backend.sweep_unstarted(UNSTARTED_AGE)
    except Exception as exc:  # noqa: BLE001 - a sweep never fails a task
        log.debug("could not sweep %s: %s", backend.describe(), exc)
        return
    if removed:
        log.info(
            "removed %d container(s) a killed process left unstarted on %s", len(removed), backend.describe()
        )


def close_shared_backends() -> None:
    """Close every shared backend (the pool's shutdown calls this after draining)."""
    with _backends_lock:
        backends = list({id(b): b for b in _backends.values()}.values())
        _backends.clear()
    for backend in backends:
        try:
            backend.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            log.exception("could not close backend %s", backend.name)
