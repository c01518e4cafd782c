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
import os
import shutil
import subprocess
import tempfile
import threading
import time

from oci_executor.backends.shared.ssh import SshTarget, login_error, missing_client, ssh_error

TUNNEL_START_TIMEOUT = 30.0
"""Seconds to wait for the tunnel's local socket (authentication included)."""
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
