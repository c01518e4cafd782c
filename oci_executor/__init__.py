"""oci-executor: a Covalent executor that runs each electron in an OCI container."""

# Import Covalent first: it imports its executor plugins, this package's ``oci`` module among
# them, and that must not happen while this package is half-initialised.
import covalent  # noqa: F401, I001

from oci_executor.backend import Backend, BackendConfig, Container, ContainerSpec, ExecResult
from oci_executor.errors import OCIExecutorError
from oci_executor.hookspecs import hookimpl
from oci_executor.oci import OCIExecutor

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
__version__ = "0.1.0"
