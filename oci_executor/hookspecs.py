"""pluggy markers and hook specifications: how a backend plugin registers itself.

This module imports only pluggy, so plugins and the registry can both import it.

A plugin module (or object) implements :func:`oci_executor_register_backends` and calls
``registry.add(MyBackend)``. Third-party plugins are found through the ``oci_executor.backends``
entry point group::

    [project.entry-points."oci_executor.backends"]
    mybackend = "my_package.my_module"
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy


class Registry(Protocol):
    """What a plugin sees of the registry (:class:`oci_executor.registry.BackendRegistry`)."""

    def add(self, backend: Any) -> None:
        """Register a :class:`~oci_executor.backend.Backend` subclass under its ``name``."""


PROJECT_NAME = "oci_executor"
ENTRY_POINT_GROUP = "oci_executor.backends"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def oci_executor_register_backends(registry: Registry) -> None:
    """Register backend classes with ``registry.add(BackendClass)``."""
