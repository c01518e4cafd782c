"""The labels on every container of ours, named once.

``MANAGED_LABEL=true`` marks a container as ours (``ls``, ``gc`` and the sweeps list only
those); the dispatch and node it was made for, and the process that drives it
(:mod:`oci_executor.owner`), say whose it is. Backends add their own under :data:`LABEL_PREFIX`.
"""

from __future__ import annotations

LABEL_PREFIX = "io.oci-executor"
MANAGED_LABEL = f"{LABEL_PREFIX}.managed"
"""Every container we create carries ``MANAGED_LABEL=true``."""
DISPATCH_LABEL = f"{LABEL_PREFIX}.dispatch-id"
NODE_LABEL = f"{LABEL_PREFIX}.node-id"
"""The node of the first task a container served (not part of the pool key)."""
OWNER_LABEL = f"{LABEL_PREFIX}.owner"
"""The driver's host, process ID and start time (see :mod:`oci_executor.owner`)."""
