"""Engines reached over ssh: the tunnel an engine backend connects through, and why a remote
engine does not answer (found out over a second ssh, with the fix).

What differs by engine is declared, not switched on: :attr:`RemoteEngine.cli`,
:attr:`remote_socket`, :attr:`remote_start_hint`, :attr:`remote_socket_query` and
:meth:`RemoteEngine.wrong_socket_hint`.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import threading

from oci_executor.backend import Backend, BackendConfig
from oci_executor.backends.shared.sdk import describe
from oci_executor.backends.shared.sdk_errors import SdkErrors
from oci_executor.backends.shared.ssh import (
    SshTarget,
    is_ssh,
    login_error,
    parse,
    run_remote,
    ssh_error,
)
from oci_executor.backends.shared.tunnel import TUNNELS, Tunnel
from oci_executor.errors import EngineUnavailableError, SshConnectionError


class RemoteEngine(SdkErrors, Backend):
    """The ssh side of an engine backend: address, tunnel, and the remote diagnosis."""

    remote_socket = "/var/run/docker.sock"
    """The engine's socket on a remote host when an ``ssh://`` address names none."""
    cli = "docker"
    """The engine's command, looked for on a remote host to tell "no engine" from "wrong socket"."""
    remote_start_hint = "start the engine there (`sudo systemctl start docker`, or `sudo dockerd &`)"
    remote_socket_query = ""
    """A shell command printing where the engine listens on the remote host ("": none)."""

    def __init__(self, config: BackendConfig | None = None) -> None:
        super().__init__(config)
        self._ssh: SshTarget | None = None
        self._tunnel: Tunnel | None = None
        self._tunnel_lock = threading.Lock()

    def _ssh_address(self) -> tuple[str, str] | None:
        """The ``ssh://`` address and key file to use, or None for a local or tcp engine."""
        address = self.address()
        if is_ssh(address):
            return address, self.config.ssh_identity or ""
        return None

    def _remote_default_socket(self, target: SshTarget) -> str:
        """The socket path for an ``ssh://`` address without one."""
        return self.remote_socket

    def wrong_socket_hint(self, target: SshTarget, suggested: str) -> str:
        """How to find the right socket on ``target`` (``suggested``: what the query printed)."""
        return f"{self.engine} listens at {self.remote_socket} unless configured otherwise; {self.remote_start_hint}"

    def remote(self) -> SshTarget | None:
        """The remote host and socket when the address is ``ssh://`` (or a Podman connection)."""
        if self._ssh is None:
            found = self._ssh_address()
            if found is None:
                return None
            target = parse(*found)
            if not target.socket:
                target = dataclasses.replace(target, socket=self._remote_default_socket(target))
            self._ssh = target
        return self._ssh

    def endpoint(self) -> str:
        """What the SDK and the attach stream connect to: the address, or for a remote engine
        the local end of the process's ssh tunnel to it (started, or restarted, on demand)."""
        target = self.remote()
        if target is None:
            return self.address()
        with self._tunnel_lock:
            if self._tunnel is None:
                self._tunnel = TUNNELS.acquire(target)
            tunnel = self._tunnel
        return tunnel.ensure()

    @property
    def tunnel(self) -> Tunnel | None:
        """The ssh tunnel this backend uses, if it is remote and has connected."""
        return self._tunnel

    def release_tunnel(self) -> None:
        """Let go of the tunnel (the process's tunnels close when the last user lets go)."""
        with self._tunnel_lock:
            tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            TUNNELS.release(tunnel.target)

    def _link_lost(self) -> bool:
        """Whether the ssh tunnel died (waiting a moment for one that is dying)."""
        tunnel = self._tunnel
        if tunnel is None or tunnel.process is None:
            return tunnel is not None and tunnel.starts > 0
        if tunnel.process.poll() is not None:
            return True
        try:
            tunnel.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:  # still running: the link is up
            return False
        return True

    def _remote_problem(self, target: SshTarget, detail: str) -> SshConnectionError:
        """Why a remote engine does not answer, found out over a separate ssh, with the fix."""
        tunnel = self._tunnel
        if tunnel is not None and self._link_lost():
            said = " ".join(tunnel.stderr().split())[-300:]
            if not tunnel.was_up:
                return login_error(target, said or detail)
            return ssh_error(
                f"the ssh link to {target.where} was lost ({said or detail}). Containers on {target.host} "
                "end themselves: each runner sees its attach stream close (or its idle_timeout pass). "
                "The next task connects again; if the link keeps dropping, check the network and "
                "the server's ClientAliveInterval.",
                target,
                "link-lost",
                self.address(),
            )
        path = target.socket
        script = (
            f'p={shlex.quote(path)}; if [ -S "$p" ]; then if [ -r "$p" ] && [ -w "$p" ]; then echo socket-ok; '
            'else echo socket-denied; fi; elif [ -e "$p" ]; then echo not-socket; else echo missing; fi; '
            f"command -v {self.cli} >/dev/null 2>&1 && echo has-engine || echo no-engine; "
            + (f"{self.remote_socket_query} 2>/dev/null" if self.remote_socket_query else "true")
        )
        try:
            done = run_remote(target, script)
        except Exception as exc:  # noqa: BLE001 - the diagnosis itself failed
            return ssh_error(
                f"the {self.engine} engine does not answer at {path} on {target.where} ({detail}), and a "
                f"second ssh to look why failed: {describe(exc)}",
                target,
                "ssh",
                self.address(),
            )
        if done.returncode == 255:
            return login_error(target, done.stderr)
        lines = done.stdout.split()
        state = lines[0] if lines else "?"
        has_engine = "has-engine" in lines
        suggested = next((x for x in lines[2:] if x.startswith("/")), "")
        where = f"{path} on {target.where}"
        if state == "socket-denied":
            return ssh_error(
                f"user {target.user or '(you)'} may not use the {self.engine} socket {where}. Fix: add that user "
                f"to the socket's group on {target.host}, log in as a user who may use it, or point the "
                "address at that user's own socket (rootless Podman: /run/user/UID/podman/podman.sock).",
                target,
                "socket-permission",
                self.address(),
            )
        if not has_engine and state != "socket-ok":
            return ssh_error(
                f"{target.host} has no {self.engine}: no `{self.cli}` command and no socket at {path}. "
                f"Fix: install {self.engine} on {target.host} and {self.remote_start_hint}, or point the "
                "address at a host that runs it.",
                target,
                "no-engine",
                self.address(),
            )
        if state in ("missing", "not-socket"):
            return ssh_error(
                f"no {self.engine} socket at {where} ({'not a socket' if state == 'not-socket' else 'no such file'}). "
                "Fix: give the right socket path in the address (ssh://user@host[:port]/path/to/socket): "
                f"{self.wrong_socket_hint(target, suggested)}.",
                target,
                "wrong-socket",
                self.address(),
            )
        return ssh_error(
            f"the {self.engine} engine does not answer at {where} ({detail}), though the socket is there. "
            f"Fix: {self.remote_start_hint} (the service may have stopped and left its socket).",
            target,
            "no-engine",
            self.address(),
        )

    def unavailable(self, detail: str) -> EngineUnavailableError:
        target = self.remote()
        if target is not None:
            return self._remote_problem(target, detail)
        return super().unavailable(detail)
