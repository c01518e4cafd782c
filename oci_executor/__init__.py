"""oci-executor: a Covalent executor that runs each electron in an OCI container.

Importing this package does not import Covalent: a backend author needs only the contract
(:class:`Backend` and friends) and :data:`hookimpl`. ``OCIExecutor``, the Covalent plugin,
loads on first access.
"""

from typing import TYPE_CHECKING, Any

from oci_executor.backend import Backend, BackendConfig, Container, ContainerSpec, ExecResult
from oci_executor.errors import OCIExecutorError
from oci_executor.hookspecs import hookimpl

if TYPE_CHECKING:
    from oci_executor.covalent.oci import OCIExecutor

__all__ = [
    "Backend",
    "BackendConfig",
    "Container",
    "ContainerSpec",
    "ExecResult",
    "OCIExecutor",
    "OCIExecutorError",
    "hookimpl",
]
__version__ = "0.2.0"


def __getattr__(name: str) -> Any:
    if name == "OCIExecutor":
        from oci_executor.covalent.oci import OCIExecutor

        return OCIExecutor
    raise AttributeError(f"module 'oci_executor' has no attribute {name!r}")
