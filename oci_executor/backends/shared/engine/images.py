"""An engine backend's images: found in its store, or pulled per the pull policy with progress."""

from __future__ import annotations

from typing import Any

from oci_executor.backends.shared.engine.connection import EngineConnection
from oci_executor.errors import ContainerError, ImageNotFoundError, ImagePullError, OCIExecutorError
from oci_executor.progress import PullProgress, PullReport


class ImageStore(EngineConnection):
    """Images of an SDK-driven engine."""

    def store(self) -> str:
        """The image store, for messages."""
        return f"{self.engine} image store at {self.address()}"

    def ensure_image(self, image: str) -> Any:
        """The image object, pulled according to the pull policy."""
        client = self.client()
        policy = self.config.pull_policy
        if policy != "always":
            local = self._find_image(client, image)
            if local is not None:
                return local
            if policy == "never":
                raise ImageNotFoundError(
                    f"Image {image!r} is not in the {self.store()} and pull_policy='never'. "
                    f"`{self.name} images` lists what it holds. Fix: {self._offline_fix(image)}; "
                    f"or `{self.name} pull {image}`, or use pull_policy='missing'.",
                    address=self.address(),
                    image=image,
                )
        report = PullReport(image, self.store())
        try:
            with self._errors(f"pull {image}"):
                pulled = self._pull(client, image, report)
                if not getattr(pulled, "id", None):
                    raise ContainerError(f"{self.engine} returned no image for {image!r}")
                report.finished()
                return pulled
        except OCIExecutorError as exc:
            raise ImagePullError(
                f"Could not pull image {image!r} (pull_policy='always'): {exc}. With pull_policy='always' "
                "a local copy is never used: check the name and your registry access, or use "
                "pull_policy='missing' to use the local image."
                if policy == "always"
                else f"Image {image!r} is not in the {self.store()} (`{self.name} images` lists what it holds), "
                f"and pulling it failed: {exc}. "
                f"Fix: {self._offline_fix(image)}; or check the name (a typo?) and your registry access.",
                address=self.address(),
                image=image,
            ) from exc

    def image_id(self, image: str) -> str | None:
        try:
            found = self._find_image(self.client(), image)
        except OCIExecutorError:
            return None
        return str(found.id) if found is not None else None

    def _offline_fix(self, image: str) -> str:
        """How to get ``image`` into this store without a registry: build, or copy from another store."""
        address = f" --address {self.config.address}" if self.config.address else ""
        to = f" --to-address {self.config.address}" if self.config.address else ""
        return (
            f"`oci-executor image build {image} --backend {self.name}{address}` makes it from this host's "
            f"Python, no registry needed; or copy it from a store that has it: `oci-executor image copy "
            f"docker:{image} {self.name}{to}` (or `file:ARCHIVE`, written by `{self.name} save`)"
        )

    def _find_image(self, client: Any, image: str) -> Any | None:
        try:
            with self._errors(f"look up image {image}", image=image):
                return client.images.get(image)
        except ImageNotFoundError:
            return None

    def _pull(self, client: Any, image: str, report: PullReport) -> Any:
        """Pull ``image``, passing the engine's progress to ``report``; return the image object.

        The default reads the Docker API's progress stream (``status``, ``id`` and
        ``progressDetail`` per layer).
        """
        for event in client.api.pull(image, stream=True, decode=True):
            if event.get("error"):
                raise RuntimeError(event["error"])
            status = str(event.get("status", ""))
            detail = event.get("progressDetail") or {}
            layer = str(event.get("id", "")) if "progressDetail" in event else ""
            report(
                PullProgress(
                    image=image,
                    layer=layer,
                    status=status,
                    current=detail.get("current"),
                    total=detail.get("total"),
                    done=bool(layer) and status in ("Pull complete", "Already exists"),
                )
            )
        return client.images.get(image)
