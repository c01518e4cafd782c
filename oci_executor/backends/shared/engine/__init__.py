"""The base of the SDK-driven engines (Docker, Podman), split by concern.

``remote`` (ssh address, tunnel, remote diagnosis) < ``connection`` (the SDK client, the
health probe) < ``images`` (find, pull per policy) < ``verbs`` (the container verbs, the SDK
keyword arguments both engines take): each layer is one class over the one before.
"""

from oci_executor.backends.shared.engine.connection import API_TIMEOUT, CONNECT_TIMEOUT
from oci_executor.backends.shared.engine.verbs import SCRATCH_DIR, EngineBackend, sdk_kwargs

__all__ = ["API_TIMEOUT", "CONNECT_TIMEOUT", "SCRATCH_DIR", "EngineBackend", "sdk_kwargs"]
