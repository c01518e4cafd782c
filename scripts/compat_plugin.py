"""pytest plugin for scripts/compat.py: every electron and lattice runs on oci.

Loaded with ``-p compat_plugin`` into a pytest session of Covalent workflow tests. With
``OCI_COMPAT_MODE`` set to a backend (``docker``, ``podman``), Covalent's metadata encoder is
wrapped so that each executor and workflow executor that would be Covalent's ``local`` or
``dask`` becomes ``OCIExecutor(backend=..., address=OCI_COMPAT_ADDRESS, image=OCI_COMPAT_IMAGE)`` (plus ``volumes=OCI_COMPAT_VOLUMES``):
the tests run unchanged, their electrons in containers. ``OCI_COMPAT_MODE=local`` changes nothing.
"""

from __future__ import annotations

import os
import sys
from typing import Any

SWITCHED = ("local", "dask")


def pytest_configure(config: Any) -> None:
    mode = os.environ.get("OCI_COMPAT_MODE", "local")
    if mode == "local":
        return
    from covalent._workflow import transport

    from oci_executor import OCIExecutor

    options = {"backend": mode, "image": os.environ["OCI_COMPAT_IMAGE"], "keep_warm": 2.0}
    if os.environ.get("OCI_COMPAT_ADDRESS"):
        options["address"] = os.environ["OCI_COMPAT_ADDRESS"]
    if os.environ.get("OCI_COMPAT_VOLUMES"):
        options["volumes"] = os.environ["OCI_COMPAT_VOLUMES"].split(",")
    executor_data = OCIExecutor(**options).to_dict()
    original = transport.encode_metadata

    def encode_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
        encoded = original(metadata)
        for key in ("executor", "workflow_executor"):
            if encoded.get(key) in SWITCHED:
                encoded[key] = executor_data["short_name"]
                encoded[f"{key}_data"] = dict(executor_data)
        return encoded

    for module in list(sys.modules.values()):
        if getattr(module, "encode_metadata", None) is original:
            module.encode_metadata = encode_metadata  # type: ignore[attr-defined]
