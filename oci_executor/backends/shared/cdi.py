"""CDI device names for GPUs (``--device nvidia.com/gpu=...``), as Podman takes them."""

from __future__ import annotations

from oci_executor.backend import GpuRequest

VENDOR_CLASS = "nvidia.com/gpu"


def cdi_devices(gpus: GpuRequest) -> list[str]:
    """The CDI device names for a GPU request: each ID, ``all``, or ``0..N-1``."""
    if gpus.device_ids:
        return [f"{VENDOR_CLASS}={device}" for device in gpus.device_ids]
    if gpus.count < 0:
        return [f"{VENDOR_CLASS}=all"]
    return [f"{VENDOR_CLASS}={index}" for index in range(gpus.count)]
