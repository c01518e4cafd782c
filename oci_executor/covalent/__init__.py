"""The Covalent adapter: the ``oci`` executor plugin on top of the engine core.

Nothing outside :mod:`oci_executor.covalent` imports Covalent; this subpackage does.

Covalent is imported here first, on purpose: importing Covalent imports its executor
plugins, :mod:`oci_executor.covalent.oci` among them. Importing it from this package's
``__init__`` means that module is loaded whole by Covalent's plugin loader, rather than seen
half-initialized (then Covalent would not register it).
"""

import covalent  # noqa: F401
