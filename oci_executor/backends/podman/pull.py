"""Podman's image pull (text progress lines) and its missing-workdir gap, through podman-py."""

from __future__ import annotations

import io
import tarfile
from typing import Any

from oci_executor.backend import ContainerSpec
from oci_executor.progress import PullProgress, PullReport


def pull(client: Any, image: str, report: PullReport) -> Any:
    """Pull ``image`` through podman-py, passing its progress to ``report``; the image object."""
    # Podman's API streams text lines ("Copying blob sha256:..."), no byte counts, and
    # reports a failed pull only inside the stream. tls_verify=None leaves TLS to
    # registries.conf, as the podman CLI does (podman-py would force it on).
    layers: list[str] = []
    for event in client.images.pull(image, stream=True, decode=True, tls_verify=None):
        if not isinstance(event, dict):
            continue
        if event.get("error"):
            raise RuntimeError(event["error"])
        line = str(event.get("stream", "")).strip()
        if line.startswith("Copying blob "):
            layers.append(line.rsplit(":", 1)[-1][:12])
            report(PullProgress(image=image, layer=layers[-1], status="Copying blob"))
        elif line:
            report(PullProgress(image=image, layer="", status=line))
    for layer in layers:
        report(PullProgress(image=image, layer=layer, status="Pull complete", done=True))
    return client.images.get(image)


def make_workdir(obj: Any, spec: ContainerSpec) -> None:
    """Create a missing workdir, owned by the task's user: Podman's API does not (Docker does)."""
    if not spec.workdir:
        return
    try:
        obj.get_archive(spec.workdir)
        return
    except Exception:  # noqa: BLE001 - missing: create it below
        pass
    uid, _, gid = (spec.user or "0").partition(":")
    info = tarfile.TarInfo(spec.workdir.strip("/"))
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.uid = int(uid) if uid.isdigit() else 0
    info.gid = int(gid) if gid.isdigit() else info.uid
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(info)
    obj.put_archive("/", buffer.getvalue())
