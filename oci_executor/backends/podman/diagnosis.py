"""Rootless Podman's part of the diagnosis: how to start and fix this Podman, its runtime
folder, its network helper, and the transient service that stands in for a missing socket."""

from __future__ import annotations

import os
import shutil
import stat

from oci_executor.backend import ContainerSpec, EngineFacts
from oci_executor.backends.podman.rootless import default_address, runtime_dir_error, runtime_dir_problem
from oci_executor.backends.shared.engine import EngineBackend
from oci_executor.backends.shared.hostchecks import can_use, owner_of, socket_path, user_name
from oci_executor.findings import Finding

TUN = "/dev/net/tun"
UNSET_RUNTIME_DIR = "unset XDG_RUNTIME_DIR"
"""The fix for an unusable XDG_RUNTIME_DIR: Podman then uses /run/user/UID or /tmp/podman-run-UID."""


class PodmanDiagnosis(EngineBackend):
    """The diagnosis hooks, answered for Podman."""

    own_engine_hint = "use your own rootless Podman (`podman system service --time=0 &` as yourself)"
    subid_reload = "podman system migrate"

    def start_command(self) -> str:
        if not self.config.address and os.environ.get("CONTAINER_HOST"):
            return "unset CONTAINER_HOST"  # then the user's own socket, or a transient service
        if not self.config.address and runtime_dir_error():
            return UNSET_RUNTIME_DIR
        address = self.address()
        if self.expect_rootless():
            return f"podman system service --time=0 {address} & (as the rootless user; or: systemctl --user start podman.socket)"
        return f"sudo podman system service --time=0 {address} & (or: sudo systemctl start podman.socket)"

    def configured_address(self) -> str:
        return self.config.address or default_address()

    def expect_rootless(self) -> bool:
        address = self.address()
        return os.geteuid() != 0 or "/run/user/" in address or "/podman-run-" in address

    def storage_fix(self, facts: EngineFacts) -> str:
        if facts.rootless:
            return (
                "mkdir -p ~/.config/containers && printf '[storage]\\ndriver = \"overlay\"\\n' > "
                "~/.config/containers/storage.conf && podman system reset (DELETES this user's images and "
                "containers: load them again afterwards; see docs/podman.md)"
            )
        return 'set driver = "overlay" under [storage] in /etc/containers/storage.conf, then sudo podman system reset'

    def transient_possible(self) -> bool:
        """Whether this backend would start its own service when no socket answers."""
        return (
            not self.config.address and not os.environ.get("CONTAINER_HOST") and bool(shutil.which("podman"))
        )

    def socket_finding(self, finding: Finding) -> Finding:
        """No socket is no failure when a transient service stands in; an unusable
        XDG_RUNTIME_DIR is the runtime-dir finding's (no chmod of another user's folder)."""
        if finding.status != "ok" and not self.config.address and runtime_dir_error():
            return Finding(
                finding.backend,
                "socket",
                "skip",
                "not checked: XDG_RUNTIME_DIR is unusable (see runtime-dir)",
            )
        if finding.status != "fail" or not self.transient_possible():
            return finding
        instead = "oci-executor starts a transient `podman system service` per process instead"
        if "no socket" in finding.message:
            return Finding(
                finding.backend,
                "socket",
                "skip",
                f"no service socket at {socket_path(self.address())}: {instead}",
            )
        return Finding(
            finding.backend,
            "socket",
            "warn",
            f"{finding.message}; {instead} (start a service to save that)",
            finding.fix,
        )

    def rootless_findings(self, uid: int, facts: EngineFacts | None, spec: ContainerSpec) -> list[Finding]:
        return [
            check_runtime_dir(uid, self.address()),
            check_network(uid, facts.network_helper if facts else "", spec.network or ""),
        ]


def check_runtime_dir(engine_uid: int, address: str) -> Finding:
    """``XDG_RUNTIME_DIR`` of a rootless user: set, existing, the user's own, mode 0700.

    Run by root against another user's service, the folder its socket is in
    (``RUNTIME_DIR/podman/podman.sock``) is checked instead.
    """
    uid = os.geteuid()
    if uid == 0:
        path = socket_path(address) or ""
        if not path.endswith("/podman/podman.sock"):
            return Finding(
                "podman",
                "runtime-dir",
                "skip",
                "running as root: run `oci-executor doctor` as the rootless user",
            )
        folder, owner_uid = os.path.dirname(os.path.dirname(path)), engine_uid
    else:
        problem = runtime_dir_problem()
        if problem and not os.environ.get("XDG_RUNTIME_DIR"):  # unset works: Podman has a fallback
            return Finding("podman", "runtime-dir", "ok", problem.split(". ")[0] + " (that works)")
        if problem:  # set, but missing or another user's: unsetting it needs no root
            return Finding("podman", "runtime-dir", "fail", problem.split(". ")[0], UNSET_RUNTIME_DIR)
        folder, owner_uid = os.environ["XDG_RUNTIME_DIR"], uid
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        return Finding(
            "podman",
            "runtime-dir",
            "fail",
            f"{folder} does not exist",
            f"sudo install -d -o {user_name(owner_uid)} -m 700 {folder}",
        )
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != owner_uid:
        return Finding(
            "podman",
            "runtime-dir",
            "fail",
            f"{folder} belongs to {user_name(info.st_uid)}, not to {user_name(owner_uid)}",
            f"sudo chown {user_name(owner_uid)} {folder}",
        )
    if mode != 0o700:
        return Finding(
            "podman",
            "runtime-dir",
            "warn",
            f"{folder} has mode {mode:04o}: other users can reach the Podman socket and runtime files in it",
            f"chmod 700 {folder}",
        )
    return Finding(
        "podman", "runtime-dir", "ok", f"{folder} exists, belongs to {user_name(owner_uid)}, mode 0700"
    )


def check_network(engine_uid: int, helper: str, network: str) -> Finding:
    """A rootless network helper (slirp4netns or pasta) and a TUN device the user may open."""
    if network in ("none", "host"):
        return Finding("podman", "network", "ok", f"network={network!r}: no rootless network helper needed")
    found = helper or shutil.which("pasta") or shutil.which("slirp4netns") or ""
    if not found:
        return Finding(
            "podman",
            "network",
            "fail",
            "neither slirp4netns nor pasta is installed: rootless containers have no network",
            'sudo apt-get install -y slirp4netns (or passt), or set network = "none" in [executors.oci]',
        )
    if os.path.basename(found).startswith("slirp4netns"):
        if not os.path.exists(TUN):
            return Finding(
                "podman",
                "network",
                "fail",
                f"{found} needs {TUN}, which does not exist",
                f'sudo mkdir -p /dev/net && sudo mknod {TUN} c 10 200 && sudo chmod 666 {TUN}, or set network = "none"',
            )
        if not can_use(TUN, engine_uid, os.R_OK | os.W_OK):
            return Finding(
                "podman",
                "network",
                "fail",
                f"{found} needs {TUN} ({owner_of(TUN)}), which user {user_name(engine_uid)} may not open",
                f'sudo chmod 666 {TUN}, or set network = "none" in [executors.oci]',
            )
    return Finding(
        "podman",
        "network",
        "ok",
        f"rootless network helper {found}" + (f"; {TUN} usable" if "slirp" in found else ""),
    )
