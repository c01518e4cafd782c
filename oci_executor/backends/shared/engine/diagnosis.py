"""An engine backend's own diagnosis: socket, engine, storage, cgroups, limits, volumes, the
rootless setup and the image, each finding with its fix.

What differs by engine is asked of the engine through the hooks of :class:`EngineDiagnosis`
(how to start it, how to fix its storage, how it gets GPUs, what a rootless user needs), never
by its name.
"""

from __future__ import annotations

import os
import re

from oci_executor.backend import ContainerSpec, EngineFacts
from oci_executor.backends.shared.cdi import cdi_support
from oci_executor.backends.shared.engine.images import ImageStore
from oci_executor.backends.shared.engine.volumes import check_volumes
from oci_executor.backends.shared.hostchecks import check_socket, check_subids, socket_path
from oci_executor.errors import ImageNotFoundError, OCIExecutorError
from oci_executor.findings import Finding, engine_failed, skipped

VFS_MEASURED = "7 s against 0.16 s with overlay"
"""One container's start on vfs storage, measured for rootless Podman on this project's machines."""


class EngineDiagnosis(ImageStore):
    """The doctor's checks of an SDK-driven engine, and the hooks an engine answers them with."""

    own_engine_hint = ""
    """How a user runs an engine of their own (added to a socket permission fix)."""
    subid_reload = "restart the engine's service"
    """The command that makes the rootless engine read new subordinate ID ranges."""

    def start_command(self) -> str:
        """The command that starts the engine at :meth:`address`."""
        return self.start_hint

    def configured_address(self) -> str:
        """Where the engine should answer, before any fallback of the backend's own."""
        return self.config.address or self.address()

    def storage_fix(self, facts: EngineFacts) -> str:
        """How to move the engine off the vfs storage driver."""
        return f"configure an overlay storage driver for {self.engine}, then restart it"

    def gpu_support(self, facts: EngineFacts | None) -> tuple[bool, str, str]:
        """Whether GPUs can be given to containers, what was found, and the fix (CDI by default)."""
        return cdi_support()

    def expect_rootless(self) -> bool:
        """Whether the engine is rootless, judged without an answer from it."""
        return False

    def socket_finding(self, finding: Finding) -> Finding:
        """The socket finding, as the backend's own fallbacks change its meaning."""
        return finding

    def rootless_findings(self, uid: int, facts: EngineFacts | None, spec: ContainerSpec) -> list[Finding]:
        """What a rootless engine's user ``uid`` needs beyond subordinate IDs (nothing by default)."""
        return []

    # -- the diagnosis --------------------------------------------------------------------

    def diagnose(self, spec: ContainerSpec, pull_policy: str) -> list[Finding]:
        name, address = self.name, self.address()
        socket = self.socket_finding(check_socket(name, address, self.start_command(), self.own_engine_hint))
        problem = self.problem()
        facts: EngineFacts | None = None
        if problem is None:
            try:
                facts = self.facts()
            except OCIExecutorError as exc:
                problem = str(exc)
        if problem is not None:
            engine = engine_failed(self, problem, self.start_command(), address)
            if engine.status == "skip":  # not installed: nothing else to say
                return [engine]
        else:
            assert facts is not None
            engine = self._engine_ok(facts)
        findings = [socket, engine]
        if facts is not None:
            findings += [_storage(self, facts), _cgroup(name, facts), self._limits(facts, spec)]
            findings += check_volumes(self, spec.volumes)
        else:
            findings += [skipped(name, check) for check in ("storage", "cgroup", "limits")]
        if facts.rootless if facts else self.expect_rootless():
            uid = _engine_uid(facts, address)
            findings.append(check_subids(name, uid, facts.id_map if facts else (), self.subid_reload))
            findings += self.rootless_findings(uid, facts, spec)
        findings.append(
            skipped(name, "image") if problem is not None else self._image(spec.image, pull_policy)
        )
        return findings

    def _engine_ok(self, facts: EngineFacts) -> Finding:
        mode = "rootless" if facts.rootless else "rootful"
        where = (
            f"through a transient `podman system service` (none answers at {self.configured_address()})"
            if facts.transient
            else f"at {facts.address}"
        )
        return Finding(self.name, "engine", "ok", f"{facts.engine} {facts.version} answers {where} ({mode})")

    def _limits(self, facts: EngineFacts, spec: ContainerSpec) -> Finding:
        name = self.name
        try:
            unsupported = self.unsupported(spec)
        except OCIExecutorError as exc:
            return Finding(name, "limits", "fail", f"cannot tell which options {name} honours: {exc}")
        gpus, gpu_found, gpu_fix = self.gpu_support(facts)
        can = {"cpus": facts.cpu_limits, "memory": facts.memory_limits, "gpus": gpus}
        shown = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in can.items())
        why = f"cgroup v{facts.cgroup_version}" + (", rootless" if facts.rootless else "")
        message = f"enforceable here ({why}; {gpu_found}): {shown}"
        requested = [k for k in can if getattr(spec, k)]
        refused = sorted({*unsupported, *(k for k in requested if not can[k])})
        if not facts.rootless:
            cgroup_fix = "enable the kernel's cpu and memory cgroup controllers (boot with cgroup_enable=memory swapaccount=1)"
        elif facts.cgroup_version != "2":
            cgroup_fix = "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1) for rootless limits, or use rootful Podman or Docker"
        else:
            cgroup_fix = "delegate the cpu and memory controllers to users (systemd: Delegate=cpu memory in user@.service), or use rootful Podman or Docker"
        if refused:
            fixes = [self.explain_unsupported(unsupported, spec)] if unsupported else []
            if any(k in ("cpus", "memory") and k not in unsupported for k in refused):
                fixes.append(cgroup_fix)
            if "gpus" in refused and "gpus" not in unsupported:
                fixes.append(gpu_fix)
            return Finding(
                name,
                "limits",
                "fail",
                f"configured {', '.join(refused)} cannot be enforced; {message}",
                "; ".join(fixes),
            )
        if not (facts.cpu_limits and facts.memory_limits):
            return Finding(
                name, "limits", "warn", message, f"{cgroup_fix} (only if you need cpus or memory limits)"
            )
        return Finding(name, "limits", "ok", message)

    def _image(self, image: str, policy: str) -> Finding:
        name = self.name
        try:
            found = self.ensure_image(image)  # the doctor's backends never pull
        except ImageNotFoundError:
            fix = f"{name} pull {image}; with no registry: oci-executor image build {image} --backend {name} (this host's Python), or oci-executor image copy SRC {name}"
            if policy == "never":
                return Finding(
                    name,
                    "image",
                    "fail",
                    f"image {image} is not in the {self.store()} and pull_policy='never'",
                    fix,
                )
            return Finding(
                name,
                "image",
                "warn",
                f"image {image} is not in the {self.store()}: the first task pulls it (pull_policy={policy!r})",
                fix,
            )
        except OCIExecutorError as exc:
            return Finding(name, "image", "fail", f"cannot look up image {image}: {exc}")
        short = str(found.id).removeprefix("sha256:")[:12]
        return Finding(name, "image", "ok", f"image {image} is in the {self.store()} ({short})")


def _storage(backend: EngineDiagnosis, facts: EngineFacts) -> Finding:
    where = f"{facts.storage_driver} storage at {facts.storage_root}"
    if facts.storage_driver != "vfs":
        return Finding(backend.name, "storage", "ok", where)
    message = (
        f"{where}: vfs copies the whole image for every container (measured for rootless Podman: "
        f"{VFS_MEASURED}, about 40 times slower)"
    )
    return Finding(backend.name, "storage", "warn", message, backend.storage_fix(facts))


def _cgroup(name: str, facts: EngineFacts) -> Finding:
    version = f"cgroup v{facts.cgroup_version}" if facts.cgroup_version else "cgroup version not reported"
    return Finding(name, "cgroup", "ok", version)


def _engine_uid(facts: EngineFacts | None, address: str) -> int:
    """The user the engine runs as: its UID map's container root, else the socket's owner."""
    if facts and facts.id_map:
        return next((hid for cid, hid, _ in facts.id_map if cid == 0), os.geteuid())
    path = socket_path(address)
    if path and os.path.exists(path):
        return os.stat(path).st_uid
    match = re.search(r"/run/user/(\d+)/|/podman-run-(\d+)/", address)
    return int(match.group(1) or match.group(2)) if match else os.geteuid()
