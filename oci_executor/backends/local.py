"""The ``local`` backend: no engine; a temp folder and a subprocess play the container.

The "container's" main process is a subprocess of the host's interpreter running the
command, with its stdin and stdout as the channel; ``exec`` runs further subprocesses. The
image is not used. Everything the "container" holds lives in one temp folder, removed by
:meth:`LocalBackend.remove` together with its processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from oci_executor import proclimit
from oci_executor.backend import Backend, Container, ContainerSpec, ExecResult
from oci_executor.backends.shared.pipes import PipeChannel
from oci_executor.channel import Channel
from oci_executor.errors import ContainerError
from oci_executor.hookspecs import hookimpl
from oci_executor.registry import BackendRegistry
from oci_executor.secrets import scrubbed_environ

TEMP_PREFIX = "oci-executor-local-"

# Running execs by container, so that stop() (a time limit, a cancel from another executor
# instance in the same server) can kill them.
_running: dict[str, set[subprocess.Popen[bytes]]] = {}
_main: dict[str, subprocess.Popen[bytes]] = {}
_env: dict[str, dict[str, str]] = {}
_groups: dict[str, str | None] = {}
_lock = threading.Lock()


class LocalBackend(Backend):
    """Runs tasks in subprocesses of the host, each container a temp folder."""

    name = "local"
    priority = -10
    isolated = False
    supported_options = frozenset({"workdir"})
    option_note_default = "unused"
    option_notes = {
        "image": "ignored (runs the host's Python)",
        "backend": '`"local"`',
        "pids_limit": "a `pids` cgroup of its own when the driver may create one (root), else `RLIMIT_NPROC` (see docs/options.md)",
        "python": "unused (the host's `sys.executable`)",
        "idle_timeout": "yes, for the runner subprocess",
        "max_lifetime": "yes",
        "env": "added to the runner's environment",
        "volumes": "error",
        "userns": "error",
        "workdir": "the runner creates it and runs the task there",
        "packages": "yes: the environment's folder is put on the runner's `sys.path` (not the host's site-packages)",
        "requirements": "yes",
        "wheels_only": "yes",
        "user": "error",
        "cpus": "error",
        "memory": "error",
        "gpus": "error",
        "network": "error",
        "shm_size": "error",
        "read_only": "error",
        "reuse": "yes (the runner subprocess)",
        "max_containers": "yes",
        "keep_warm": "yes",
        "queue_timeout": "unused (no queue)",
    }

    def describe(self) -> str:
        return f"{self.name} ({sys.executable})"

    def create(self, spec: ContainerSpec) -> Container:
        root = tempfile.mkdtemp(prefix=TEMP_PREFIX)
        env = {**scrubbed_environ(), **spec.env}
        env.pop("PYTHONPATH", None)
        if spec.command:
            argv = [sys.executable, *spec.command[1:]]
            group = proclimit.new_group(os.path.basename(root), spec.pids_limit) if spec.pids_limit else None
            with _lock:
                _groups[root] = group
            cap = proclimit.preexec(group, spec.pids_limit) if spec.pids_limit else None
            with open(os.path.join(root, ".runner-stderr"), "wb") as log:
                main = subprocess.Popen(
                    argv,
                    cwd=root,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    bufsize=0,
                    start_new_session=True,
                    preexec_fn=cap,
                )
            with _lock:
                _main[root] = main
        with _lock:
            _env[root] = dict(spec.env)
        return Container(
            id=root,
            backend=self.name,
            image=spec.image,
            image_id="local",
            scratch_dir=root,
            python=sys.executable,
        )

    def attach(self, container: Container) -> Channel:
        with _lock:
            main = _main.get(container.id)
        if main is None or main.stdin is None or main.stdout is None:
            raise ContainerError(f"the local container {container.id} has no main process to attach to")
        return PipeChannel(main, os.path.join(container.scratch_dir, ".runner-stderr"))

    def _inside(self, container: Container, path: str) -> Path:
        root = Path(container.scratch_dir).resolve()
        target = Path(path).resolve()
        if target != root and root not in target.parents:
            raise ContainerError(f"path {path!r} is outside the local container {root}")
        return target

    def copy_in(self, container: Container, dest_dir: str, files: Mapping[str, bytes]) -> None:
        base = self._inside(container, dest_dir)
        for relative, content in files.items():
            target = self._inside(container, str(base / relative))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)

    def exec(
        self,
        container: Container,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> ExecResult:
        with _lock:
            spec_env = _env.get(container.id, {})
        full_env = {**scrubbed_environ(), **spec_env, **(env or {})}
        full_env.pop("PYTHONPATH", None)
        proc = subprocess.Popen(
            list(argv),
            cwd=workdir or container.scratch_dir,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        with _lock:
            _running.setdefault(container.id, set()).add(proc)
        try:
            stdout, stderr = proc.communicate()
        finally:
            with _lock:
                _running.get(container.id, set()).discard(proc)
        return ExecResult(proc.returncode, stdout, stderr)

    def copy_out(self, container: Container, src_dir: str) -> dict[str, bytes]:
        base = self._inside(container, src_dir)
        return {
            path.relative_to(base).as_posix(): path.read_bytes()
            for path in sorted(base.rglob("*"))
            if path.is_file()
        }

    def stop(self, container: Container) -> None:
        """Kill the container's main process and every running exec (whole process groups)."""
        with _lock:
            procs = list(_running.get(container.id, ()))
            main = _main.get(container.id)
        if main is not None:
            procs.append(main)
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self, container: Container) -> None:
        self.stop(container)
        with _lock:
            _running.pop(container.id, None)
            _env.pop(container.id, None)
            main = _main.pop(container.id, None)
            group = _groups.pop(container.id, None)
        if main is not None:
            main.wait()
            for pipe in (main.stdin, main.stdout):
                if pipe is not None:
                    pipe.close()
        proclimit.remove_group(group)
        if os.path.basename(container.id).startswith(TEMP_PREFIX):
            shutil.rmtree(container.id, ignore_errors=True)


@hookimpl
def oci_executor_register_backends(registry: BackendRegistry) -> None:
    registry.add(LocalBackend)
