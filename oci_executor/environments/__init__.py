"""Environments: a task's declared packages, built once per content key, mounted read-only.

The parts, one job each:

- :mod:`.requirements`: the declared set (``packages``, ``requirements``, DepsPip), normalized
- :mod:`.image`: what an image's Python is (version, ABI, platform), asked once per image ID
- :mod:`.build`: pip on the host for the image's target: download wheels, install ``--target``
- :mod:`.store`: where environments live, the locks, the atomic publish, listing and prune
- :mod:`.ensure`: found in the index, or resolved and built once (locks across processes)
- :mod:`.attach`: the glue for the engine core: the spec with the environment mounted
- :mod:`.command`: ``oci-executor env ls / build / prune``

See docs/environments.md.
"""

from __future__ import annotations

from oci_executor.environments.attach import apply, declared_of, environment_for
from oci_executor.environments.build import Environment

__all__ = ["Environment", "apply", "declared_of", "environment_for"]
