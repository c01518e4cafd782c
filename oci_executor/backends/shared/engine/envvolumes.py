"""Named volumes on an engine, for environments that live where a remote engine is.

The engine-side verbs of :class:`oci_executor.environments.volumes.EngineVolumes`, on the
SDK both engines share (``client.volumes``, ``containers.create``, ``put_archive``): list,
create and remove labelled volumes, and fill one through a short-lived helper container that
is created, never started, and removed. The archive travels through the engine's API, so over
the backend's one ssh tunnel for an ``ssh://`` address. What to build and when is decided in
:mod:`oci_executor.environments.remote`; errors are ours (the backend's mapping).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from oci_executor.errors import ContainerError, ContainerNotFoundError

if TYPE_CHECKING:
    from oci_executor.backends.shared.engine.verbs import EngineBackend


class SdkVolumes:
    """An engine backend's named volumes and helper containers, labelled by environment."""

    def __init__(self, backend: EngineBackend) -> None:
        self.backend = backend

    def where(self) -> str:
        return self.backend.describe()

    def list_volumes(self, label: str) -> list[tuple[str, dict[str, str]]]:
        """Name and labels of every volume carrying ``label`` (``name`` or ``name=value``)."""
        with self.backend._errors("list volumes"):
            found = self.backend.client().volumes.list(filters={"label": label})
        return [(str(v.name), _labels(v.attrs)) for v in found]

    def volume_labels(self, name: str) -> dict[str, str] | None:
        try:
            with self.backend._errors(f"look up volume {name}"):
                return _labels(self.backend.client().volumes.get(name).attrs)
        except ContainerNotFoundError:
            return None

    def create_volume(self, name: str, labels: Mapping[str, str]) -> dict[str, str]:
        """Create ``name``; the labels of the volume the engine then holds under that name
        (another one's if it was taken: Docker returns the existing volume, Podman refuses)."""
        try:
            with self.backend._errors(f"create volume {name}"):
                self.backend.client().volumes.create(name=name, labels=dict(labels))
        except ContainerError as exc:
            if exc.kind != "conflict":
                raise
        found = self.volume_labels(name)
        if found is None:
            raise ContainerError(f"{self.backend.engine} created volume {name} but does not list it")
        return found

    def remove_volume(self, name: str) -> bool:
        """Remove ``name``; False if a container (running or not) uses it. A gone one is fine."""
        try:
            with self.backend._errors(f"remove volume {name}"):
                self.backend.client().volumes.get(name).remove(force=False)
        except ContainerNotFoundError:
            return True
        except ContainerError as exc:
            if exc.kind == "conflict" or "in use" in str(exc) or "being used" in str(exc):
                return False
            raise
        return True

    def fill_volume(
        self, name: str, image: str, python: str, mount: str, archive: str, labels: Mapping[str, str]
    ) -> None:
        """Unpack the tar file ``archive`` into volume ``name`` (mounted at ``mount`` in a
        helper container of ``image``, created and never started), then remove the helper."""
        client = self.backend.client()
        with self.backend._errors(f"create a helper container for volume {name}", image=image):
            helper = client.containers.create(
                image,
                command=[python, "-c", ""],
                labels=dict(labels),
                volumes={name: {"bind": mount, "mode": "rw"}},
                network_mode="none",
            )
        try:
            with self.backend._errors(f"copy the environment into volume {name}", container_id=helper.id):
                with open(archive, "rb") as data:
                    if not helper.put_archive(mount, data):
                        raise ContainerError(f"{self.backend.engine} refused the archive for volume {name}")
        finally:
            self.remove_helper(helper.id)

    def list_helpers(self, label: str) -> list[tuple[str, dict[str, str]]]:
        """ID and labels of every container (in any state) carrying ``label``."""
        with self.backend._errors("list helper containers"):
            found = self.backend.client().containers.list(all=True, filters={"label": label})
        return [(str(c.id), _labels(c.attrs)) for c in found]

    def remove_helper(self, container_id: str) -> None:
        try:
            with self.backend._errors(
                f"remove helper container {container_id[:12]}", container_id=container_id
            ):
                self.backend.client().containers.get(container_id).remove(force=True)
        except ContainerNotFoundError:
            return


def _labels(attrs: Any) -> dict[str, str]:
    """Labels of an inspected volume or container (Docker nests a container's under Config)."""
    attrs = attrs or {}
    labels = attrs.get("Labels") or (attrs.get("Config") or {}).get("Labels") or {}
    return {str(k): str(v) for k, v in labels.items()}
