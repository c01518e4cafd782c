"""pluggy hook specifications: how a backend plugin registers itself.

A plugin module (or object) implements :func:`oci_executor_register_backends` and calls
``registry.add(MyBackend)``. Third-party plugins are found through the ``oci_executor.backends``
entry point group::

    [project.entry-points."oci_executor.backends"]
    mybackend = "my_package.my_module"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from oci_executor.registry import BackendRegistry

PROJECT_NAME = "oci_executor"
ENTRY_POINT_GROUP = "oci_executor.backends"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def oci_executor_register_backends(registry: BackendRegistry) -> None:
    """Register backend classes with ``registry.add(BackendClass)``."""
