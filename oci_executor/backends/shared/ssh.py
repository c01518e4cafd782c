"""Remote engines over ssh: one OpenSSH tunnel per remote socket per process.

An ``ssh://user@host[:port][/socket/path]`` address is served by a local unix socket that
``ssh -tt -L LOCAL:REMOTE user@host 'exec sleep ...'`` forwards to the engine's socket on the remote host. The SDKs, the
attach stream and every task of the process (and the warm pool) share that one ssh process.

The tunnel dies with the process and leaves no file behind: ssh runs under a small ``sh``
wrapper that holds a pipe from this process; when the pipe closes (this process exited or
was killed), the wrapper ends ssh and removes the socket's private folder.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse

from oci_executor.errors import ConfigurationError, SshConnectionError

SSH_CONNECT_TIMEOUT = 10
"""Seconds ssh may take to reach the host (``ConnectTimeout``)."""
TUNNEL_START_TIMEOUT = 30.0
"""Seconds to wait for the tunnel's local socket (authentication included)."""
ALIVE_INTERVAL = 5
"""``ServerAliveInterval``: a silent link is declared lost after three missed answers."""

HOLD_COMMAND = "exec sleep 2147483647"
"""What the tunnel's session runs on the remote host. Not ``ssh -N``: sshd turns off Nagle's
algorithm (TCP_NODELAY) only for a session with a pty, and without it every small frame the
runner sends back waits for the client's delayed ACK: a warm task took 44 ms over ``-N`` against
4 ms with a pty session (measured here, the same engine's local socket: 3-5 ms)."""

# ssh runs in the background; the wrapper ends it when this process's pipe (fd 3) closes or
# on SIGTERM, waits for it, then removes the socket's folder.
WRAPPER = r"""
dir=$1; shift
exec 3<&0
ssh "$@" </dev/null 3<&- &
pid=$!
trap 'kill $pid 2>/dev/null' TERM HUP INT
(read -r line <&3; kill $pid 2>/dev/null) &
watcher=$!
exec 3<&-
wait $pid
rc=$?
while kill -0 $pid 2>/dev/null; do wait $pid; rc=$?; done
kill $watcher 2>/dev/null
rm -rf "$dir"
exit $rc
"""


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


class Tunnel:
    """One ``ssh -L`` process forwarding a private local socket to the remote engine's."""

    def __init__(self, target: SshTarget) -> None:
        self.target = target
        self.process: subprocess.Popen[bytes] | None = None
        self.folder = ""
        self.starts = 0
        self.was_up = False
        """Whether the current (or last) ssh process got as far as listening."""
        self._stderr: collections.deque[str] = collections.deque(maxlen=50)
        self._lock = threading.Lock()

    @property
    def socket_path(self) -> str:
        return os.path.join(self.folder, "engine.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def lost(self) -> bool:
        """Whether the ssh process came up and has since ended (the link is gone)."""
        process = self.process
        return self.was_up and process is not None and process.poll() is not None

    def stderr(self) -> str:
        return "\n".join(self._stderr)

    def ensure(self) -> str:
        """The local socket URL, starting (or restarting) ssh when it is not running."""
        with self._lock:
            if not self.alive():
                self._stop()
                self._start()
            return self.url

    def _start(self) -> None:
        if not shutil.which("ssh"):
            raise missing_client(self.target)
        base = os.environ.get("XDG_RUNTIME_DIR")
        base = base if base and os.access(base, os.W_OK) else None
        self.folder = self._folder(base)
        self._stderr.clear()
        self.was_up = False
        forward = f"{self.socket_path}:{self.target.socket}"
        argv = [
            "sh",
            "-c",
            WRAPPER,
            "oci-ssh-tunnel",
            self.folder,
            "-tt",  # a pty session: sshd then sets TCP_NODELAY (see HOLD_COMMAND)
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "StreamLocalBindMask=0177",
            *self.target.ssh_args(),
            "-L",
            forward,
            self.target.login,
            HOLD_COMMAND,
        ]
        # Its own session: a Ctrl-C meant for this process must not cut the link its clean-up needs.
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.starts += 1
        threading.Thread(
            target=self._read_stderr, args=(self.process,), name="oci-ssh-stderr", daemon=True
        ).start()
        deadline = time.monotonic() + TUNNEL_START_TIMEOUT
        while not os.path.exists(self.socket_path):
            if self.process.poll() is not None or time.monotonic() > deadline:
                timed_out = self.process.poll() is None
                self._stop()
                if timed_out:
                    raise ssh_error(
                        f"ssh to {self.target.where} did not finish logging in within {TUNNEL_START_TIMEOUT:g} s. "
                        "Fix: run the same ssh by hand; a prompt (password, passphrase) cannot be answered here: "
                        "use a key without a passphrase or an ssh-agent.",
                        self.target,
                        "timeout",
                    )
                raise login_error(self.target, self.stderr())
            time.sleep(0.02)
        self.was_up = True

    def _folder(self, base: str | None) -> str:
        """A private folder for the socket: the same path as before when it can be had again
        (clients keep working after a restart), else a new one."""
        if self.folder:
            try:
                os.mkdir(self.folder, 0o700)
                return self.folder
            except OSError:
                pass
        return tempfile.mkdtemp(prefix="oci-ssh-", dir=base)

    def _read_stderr(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            self._stderr.append(line.decode(errors="replace").rstrip())

    def _stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            for stream in (process.stdin, process.stderr):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        if self.folder and os.path.isdir(self.folder) and not os.path.islink(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            self._stop()


class Tunnels:
    """The process's tunnels, one per (login, port, identity, remote socket), counted by users."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tunnels: dict[SshTarget, Tunnel] = {}
        self._users: collections.Counter[SshTarget] = collections.Counter()

    def acquire(self, target: SshTarget) -> Tunnel:
        with self._lock:
            tunnel = self._tunnels.get(target)
            if tunnel is None:
                tunnel = self._tunnels[target] = Tunnel(target)
            self._users[target] += 1
            return tunnel

    def release(self, target: SshTarget) -> None:
        with self._lock:
            self._users[target] -= 1
            if self._users[target] > 0:
                return
            del self._users[target]
            tunnel = self._tunnels.pop(target, None)
        if tunnel is not None:
            tunnel.close()

    def all(self) -> list[Tunnel]:
        with self._lock:
            return list(self._tunnels.values())

    def close_all(self) -> None:
        with self._lock:
            tunnels = list(self._tunnels.values())
            self._tunnels.clear()
            self._users.clear()
        for tunnel in tunnels:
            tunnel.close()


TUNNELS = Tunnels()
"""The process-wide tunnels."""
