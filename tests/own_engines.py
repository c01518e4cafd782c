"""Engines of the chaos tests' own: a second dockerd, a rootful and a rootless Podman service.

The shared engines serve other test runs on the machine, so the chaos tests never touch them:
each engine here has its own socket, storage, runtime folders and pid file, under
``/run/oci-chaos``, ``/var/lib/oci-chaos`` and ``/tmp/oci-chaos-rootless`` (the test user's
service, with a runtime folder and so a user namespace of its own). The test image is copied in
from the shared stores once (``docker save``/``podman save``, then ``load``). Root only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests import engines

RUN = "/run/oci-chaos"
LIB = "/var/lib/oci-chaos"
ROOTLESS = "/tmp/oci-chaos-rootless"
IMAGE_TAR = f"{LIB}/test-image.tar"
START_TIMEOUT = 60.0
BRIDGE = "ocichaos0"
"""The second dockerd's own bridge (made here, as dockerd makes only ``docker0`` itself)."""


def _user_env() -> list[str]:
    return [
        "runuser",
        "-u",
        engines.ROOTLESS_USER,
        "--",
        "env",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        f"HOME={pwd.getpwnam(engines.ROOTLESS_USER).pw_dir}",
        f"XDG_RUNTIME_DIR={ROOTLESS}/xdg",
    ]


@dataclass
class OwnEngine:
    """One engine of our own: how to start it, talk to it, find its service processes."""

    id: str
    backend: str
    address: str
    service: list[str]
    """The service's command line."""
    cli: list[str]
    """The CLI, pointed at this engine."""
    marker: str
    """A string only this engine's service processes have in their command line."""
    log: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def pids(self) -> list[int]:
        """The service's processes (not its containers' conmon or shims)."""
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                argv = proc.joinpath("cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            name = os.path.basename(argv[0].decode(errors="replace"))
            line = b" ".join(argv)
            service = name == "dockerd" or (name == "podman" and b"system service" in line)
            if service and self.marker.encode() in line:
                found.append(int(proc.name))
        return found

    def answers(self) -> bool:
        probe = subprocess.run([*self.cli, "info"], capture_output=True, timeout=30)
        return probe.returncode == 0

    def start(self) -> None:
        if self.backend == "docker" and not os.path.exists(f"/sys/class/net/{BRIDGE}"):
            subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", "172.31.254.1/24", "dev", BRIDGE], check=True)
            subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.service, stdout=log, stderr=log, cwd="/", start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.id} of the chaos tests did not start: see {self.log}")
            time.sleep(0.3)

    def send(self, signum: int) -> None:
        pids = self.pids()
        if signum == signal.SIGCONT and self.process is not None:
            pids.append(self.process.pid)  # runuser stops itself when its child stops, as su does
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        """End the service (SIGKILL after ``timeout``) and reap it."""
        self.send(signal.SIGCONT)
        self.send(signum)
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.send(signal.SIGKILL)
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # runuser, for the rootless service, may linger
                self.process.kill()
                self.process.wait(timeout=30)
            self.process = None

    def ours(self) -> list[str]:
        """Containers with our label on this engine."""
        ps = subprocess.run(
            [*self.cli, "ps", "-a", "-q", "--filter", f"label={engines.LABEL}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return ps.stdout.split()

    def has_image(self, image: str) -> bool:
        return subprocess.run([*self.cli, "image", "inspect", image], capture_output=True).returncode == 0


def _image_tar(image: str) -> str:
    if not os.path.exists(IMAGE_TAR):
        os.makedirs(LIB, exist_ok=True)
        subprocess.run(["podman", "save", "-o", IMAGE_TAR + ".part", image], check=True, capture_output=True)
        os.rename(IMAGE_TAR + ".part", IMAGE_TAR)
        os.chmod(LIB, 0o755)
        os.chmod(IMAGE_TAR, 0o644)
    return IMAGE_TAR


def own_engine(target_id: str) -> OwnEngine:
    """The chaos tests' own engine of the kind ``target_id`` names, started, holding the test image."""
    engine = describe(target_id)
    if not engine.pids():
        engine.start()
    image = engines.test_image()
    if not engine.has_image(image):
        subprocess.run([*engine.cli, "load", "-i", _image_tar(image)], check=True, capture_output=True)
    return engine


def describe(target_id: str) -> OwnEngine:
    """The chaos tests' own engine of the kind ``target_id`` names (its folders made, nothing started)."""
    os.makedirs(RUN, exist_ok=True)
    if target_id == "docker":
        sock = f"unix://{RUN}/docker.sock"
        engine = OwnEngine(
            "docker",
            "docker",
            sock,
            [
                "dockerd",
                f"--host={sock}",
                f"--data-root={LIB}/docker",
                f"--exec-root={RUN}/docker-exec",
                f"--pidfile={RUN}/docker.pid",
                f"--bridge={BRIDGE}",  # never --bridge=none: dockerd then deletes docker0, the shared one's
                "--iptables=false",
                "--ip-masq=false",
            ],
            ["docker", "-H", sock],
            f"--host={sock}",
            "/var/log/oci-chaos-dockerd.log",
        )
    elif target_id == "podman":
        sock = f"unix://{RUN}/podman.sock"
        store = ["--root", f"{LIB}/podman", "--runroot", f"{RUN}/podman-run", "--tmpdir", f"{RUN}/podman-tmp"]
        engine = OwnEngine(
            "podman",
            "podman",
            sock,
            ["podman", *store, "system", "service", "--time=0", sock],
            ["podman", *store],
            f"{LIB}/podman",
            "/var/log/oci-chaos-podman.log",
        )
    else:
        user = engines.ROOTLESS_USER
        for folder in (ROOTLESS, f"{ROOTLESS}/xdg"):
            os.makedirs(folder, mode=0o700, exist_ok=True)
            shutil.chown(folder, user, user)
        sock = f"unix://{ROOTLESS}/podman.sock"
        home = pwd.getpwnam(user).pw_dir
        store = [
            "--root",
            f"{home}/.local/share/oci-chaos-storage",
            "--runroot",
            f"{ROOTLESS}/run",
            "--tmpdir",
            f"{ROOTLESS}/tmp",
        ]
        engine = OwnEngine(
            "podman-rootless",
            "podman",
            sock,
            [*_user_env(), "podman", *store, "system", "service", "--time=0", sock],
            [*_user_env(), "podman", *store],
            "oci-chaos-storage",
            "/var/log/oci-chaos-podman-rootless.log",
        )
    return engine


def stop_all() -> None:
    """Stop every engine of ours and the rootless user namespace's pause process."""
    for target_id in ("docker", "podman", "podman-rootless"):
        engine = describe(target_id)
        if engine.pids():
            for container in engine.ours():
                subprocess.run([*engine.cli, "rm", "-f", container], capture_output=True, timeout=60)
            engine.stop()
    if os.path.exists(f"/sys/class/net/{BRIDGE}"):
        subprocess.run(["ip", "link", "delete", BRIDGE], check=False)
    pause = Path(ROOTLESS, "tmp", "pause.pid")
    if pause.exists():
        try:
            os.kill(int(pause.read_text().strip()), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass
