"""Remote engines over ssh: ``ssh://`` addresses, ssh commands on the remote host, and our
errors for what ssh says. The process's tunnels to remote sockets are in
:mod:`oci_executor.backends.shared.tunnel`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import urllib.parse

from oci_executor.errors import ConfigurationError, SshConnectionError

SSH_CONNECT_TIMEOUT = 10
"""Seconds ssh may take to reach the host (``ConnectTimeout``)."""
ALIVE_INTERVAL = 5
"""``ServerAliveInterval``: a silent link is declared lost after three missed answers."""


@dataclasses.dataclass(frozen=True)
class SshTarget:
    """Where an ``ssh://`` address points: the login and the engine's socket on that host."""

    user: str
    host: str
    port: int | None
    socket: str
    """The remote socket path ("" until known: the engine's default is filled in by the backend)."""
    identity: str = ""

    @property
    def login(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def where(self) -> str:
        """``user@host:port`` for messages."""
        return self.login + (f":{self.port}" if self.port else "")

    def ssh_args(self) -> list[str]:
        """Options every ssh call to this host uses (no prompts, bounded waits)."""
        args = [
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={SSH_CONNECT_TIMEOUT}",
            "-o",
            f"ServerAliveInterval={ALIVE_INTERVAL}",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
        ]
        if self.identity:
            args += ["-o", "IdentitiesOnly=yes", "-i", self.identity]
        if self.port:
            args += ["-p", str(self.port)]
        return args


def is_ssh(address: str | None) -> bool:
    return bool(address) and str(address).startswith("ssh://")


def parse(address: str, identity: str = "") -> SshTarget:
    """``ssh://user@host[:port][/socket]`` as a :class:`SshTarget`."""
    parts = urllib.parse.urlsplit(address)
    if parts.scheme != "ssh" or not parts.hostname:
        raise ConfigurationError(
            f"address={address!r} is not an ssh address: use ssh://user@host[:port][/path/to/engine.sock]"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"address={address!r} has a bad port: use ssh://user@host:PORT") from None
    if parts.password:
        raise ConfigurationError(
            f"address={address!r} holds a password: ssh logins here are by key only (see ssh_identity)"
        )
    return SshTarget(
        user=urllib.parse.unquote(parts.username or ""),
        host=parts.hostname,
        port=port,
        socket=urllib.parse.unquote(parts.path) if parts.path not in ("", "/") else "",
        identity=os.path.expanduser(identity) if identity else "",
    )


def run_remote(target: SshTarget, command: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a shell ``command`` on the remote host (a separate, short-lived ssh)."""
    if not shutil.which("ssh"):
        raise missing_client(target)
    return subprocess.run(
        ["ssh", *target.ssh_args(), target.login, command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def missing_client(target: SshTarget) -> SshConnectionError:
    return ssh_error(
        f"no `ssh` client on this machine to reach {target.where}. Install OpenSSH's client "
        "(`sudo apt-get install openssh-client`, `sudo dnf install openssh-clients`).",
        target,
        "no-client",
    )


def ssh_error(message: str, target: SshTarget, reason: str, address: str | None = None) -> SshConnectionError:
    """A :class:`SshConnectionError` with the target's fields."""
    return SshConnectionError(
        message, host=target.host, user=target.user, port=target.port, reason=reason, address=address
    )


def login_error(target: SshTarget, stderr: str) -> SshConnectionError:
    """Our error for a failed ssh login, from ssh's own message, with the fix.

    Failures to connect are named before failures to log in: ssh may also have warned about
    a key file it could not read before it found nothing listening.
    """
    text = " ".join(stderr.split())[-600:] or "ssh exited without a message"
    low = text.lower()
    key = f"the key {target.identity}" if target.identity else "your ssh keys (or ssh_identity)"
    port = f"-p {target.port} " if target.port else ""
    if "could not resolve hostname" in low or "name or service not known" in low:
        reason, fix = (
            "unknown-host",
            (
                f"check the host name {target.host!r} (a typo?), your DNS, or the Host entries of ~/.ssh/config"
            ),
        )
    elif "connection refused" in low:
        reason, fix = (
            "refused",
            (
                f"nothing accepts ssh connections at {target.host} port {target.port or 22}: start sshd there, "
                "or give the right port (ssh://user@host:PORT)"
            ),
        )
    elif "timed out" in low or "no route to host" in low or "network is unreachable" in low:
        reason, fix = (
            "unreachable",
            (f"{target.host} cannot be reached: check the network, a VPN or firewall, and the port"),
        )
    elif "host key verification failed" in low or "remote host identification has changed" in low:
        reason, fix = (
            "host-key",
            (
                f"this machine does not know (or no longer trusts) {target.host}'s host key: connect once by hand "
                f"(`ssh {port}{target.login}`) and check the fingerprint, "
                "or add it to ~/.ssh/known_hosts with ssh-keyscan"
            ),
        )
    elif "permission denied" in low or "too many authentication failures" in low:
        reason, fix = (
            "key-refused",
            (
                f"{target.host} refused {key} for user {target.user or '(your user name)'}: install your public key "
                f"there (`ssh-copy-id {port}{target.login}`), or point the "
                "executor's ssh_identity option (or CONTAINER_SSHKEY for Podman) at the right private key file"
            ),
        )
    elif "bad permissions" in low or "no such identity" in low or "load key" in low:
        reason, fix = (
            "key-file",
            (
                f"ssh cannot use the key file {target.identity or '(default)'}: it must exist and be readable by "
                "you only (`chmod 600 KEY`)"
            ),
        )
    else:
        reason, fix = "ssh", "run the same `ssh` by hand to see what it needs"
    return ssh_error(f"cannot log in to {target.where} over ssh: {text}. Fix: {fix}.", target, reason)
