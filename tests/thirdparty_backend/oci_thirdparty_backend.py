"""A third-party backend: the local backend under another name, marking its containers."""

from oci_executor import ContainerSpec, hookimpl
from oci_executor.backends.local import LocalBackend


class ThirdPartyBackend(LocalBackend):
    name = "thirdparty"

    def create(self, spec: ContainerSpec):  # type: ignore[no-untyped-def]
        container = super().create(spec)
        with open(f"{container.scratch_dir}/made-by-thirdparty", "w") as handle:
            handle.write(spec.image)
        return container


@hookimpl
def oci_executor_register_backends(registry):  # type: ignore[no-untyped-def]
    registry.add(ThirdPartyBackend)
