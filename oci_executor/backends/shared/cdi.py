"""CDI device names for GPUs (``--device nvidia.com/gpu=...``), as Podman takes them, and
whether this host has a CDI spec for them."""

from __future__ import annotations

import glob

from oci_executor.backend import GpuRequest

VENDOR_CLASS = "nvidia.com/gpu"
CDI_FOLDERS = ("/etc/cdi", "/var/run/cdi")


def cdi_devices(gpus: GpuRequest) -> list[str]:
    """The CDI device names for a GPU request: each ID, ``all``, or ``0..N-1``."""
    if gpus.device_ids:
        return [f"{VENDOR_CLASS}={device}" for device in gpus.device_ids]
    if gpus.count < 0:
        return [f"{VENDOR_CLASS}=all"]
    return [f"{VENDOR_CLASS}={index}" for index in range(gpus.count)]


def cdi_support() -> tuple[bool, str, str]:
    """Whether a CDI spec names NVIDIA GPUs here, what was found, and the fix."""
    specs = [
        p
        for folder in CDI_FOLDERS
        for p in sorted(glob.glob(f"{folder}/*.yaml") + glob.glob(f"{folder}/*.json"))
    ]
    ok = any(VENDOR_CLASS in _read(p) for p in specs)
    return (
        ok,
        f"CDI {VENDOR_CLASS}" if ok else f"no CDI spec for {VENDOR_CLASS} in {' or '.join(CDI_FOLDERS)}",
        "install the NVIDIA Container Toolkit, then sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml",
    )


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""
