"""What ``podman info`` says, as :class:`~oci_executor.backend.EngineFacts`."""

from __future__ import annotations

from typing import Any

from oci_executor.backend import EngineFacts


def engine_facts(info: dict[str, Any], engine: str, address: str, transient: bool) -> EngineFacts:
    """The facts ``podman info`` gives (rootless limits need cgroup v2 and delegated controllers)."""
    host, store = info.get("host", {}), info.get("store", {})
    rootless = bool(host.get("security", {}).get("rootless", False))
    cgroup = str(host.get("cgroupVersion", "")).lstrip("v")
    controllers = set(host.get("cgroupControllers") or ())
    # Rootless Podman limits only with cgroup v2 and the controller delegated to the user.
    enforce = {c: not rootless or (cgroup == "2" and c in controllers) for c in ("cpu", "memory")}
    helper = next(
        (
            str(host[key].get("executable", ""))
            for key in ("pasta", "slirp4netns")
            if isinstance(host.get(key), dict) and host[key].get("executable")
        ),
        "",
    )
    return EngineFacts(
        engine=engine,
        version=str(info.get("version", {}).get("Version", "?")),
        address=address,
        rootless=rootless,
        storage_driver=str(store.get("graphDriverName", "")),
        storage_root=str(store.get("graphRoot", "")),
        cgroup_version=cgroup,
        cpu_limits=enforce["cpu"],
        memory_limits=enforce["memory"],
        runtimes=(str(host.get("ociRuntime", {}).get("name", "")),),
        id_map=tuple(
            (int(m["container_id"]), int(m["host_id"]), int(m["size"]))
            for m in host.get("idMappings", {}).get("uidmap") or ()
        ),
        network_helper=helper,
        transient=transient,
    )
