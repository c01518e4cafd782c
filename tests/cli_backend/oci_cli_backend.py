"""A backend over a container engine's command line, with pipes: ``podman`` here; Apptainer
(``apptainer instance``/``exec``) or Kubernetes (``kubectl run -i``/``exec``/``cp``) map alike."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence

from oci_executor import Backend, Container, ContainerSpec, ExecResult, hookimpl
from oci_executor.backend import OPTIONAL_SETTINGS
from oci_executor.backends.shared.archive import make_tar, read_tar
from oci_executor.backends.shared.intent import container_intent
from oci_executor.backends.shared.pipes import PipeChannel
from oci_executor.backends.shared.runargs import run_args
from oci_executor.channel import Channel
from oci_executor.errors import ContainerError, ContainerNotFoundError, EngineUnavailableError


class CliBackend(Backend):
    """Each container is a ``podman run -i`` child process; its stdin and stdout are the channel."""

    name = "podman-cli"
    auto_candidate = False  # asked for by name only
    supported_options = frozenset(OPTIONAL_SETTINGS) - {"gpus"}
    cli = "podman"

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._runs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}

    def _run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        if not shutil.which(self.cli):
            raise EngineUnavailableError(f"no `{self.cli}` command here: install it")
        return subprocess.run([self.cli, *args], input=stdin, capture_output=True, timeout=600)

    def check(self) -> None:  # the one health probe: raise, naming the fix, unless it can run a task
        done = self._run("info", "--format", "{{.Host.OCIRuntime.Name}}")
        if done.returncode != 0:
            raise EngineUnavailableError(f"`{self.cli} info` failed: {done.stderr.decode()[-300:]}")

    def installed(self) -> bool:
        return shutil.which(self.cli) is not None

    def create(self, spec: ContainerSpec) -> Container:
        name = f"oci-cli-{uuid.uuid4().hex[:12]}"
        intent = container_intent(spec, rootless=os.geteuid() != 0)  # the spec, translated once
        argv = [self.cli, "run", "-i", "--rm", f"--name={name}", f"--hostname={name}"]
        argv += [f"--pull={self.config.pull_policy}"]
        argv += [*run_args(intent), spec.image, *spec.command]
        handle, stderr_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".stderr")
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=handle)
        finally:
            os.close(handle)
        self._runs[name] = (process, stderr_path)
        return Container(name, self.name, spec.image, spec.image, "/tmp/oci-executor", spec.python)

    def attach(self, container: Container) -> Channel:
        process, stderr_path = self._runs[container.id]
        return PipeChannel(process, stderr_path)  # the runner's stdin and stdout

    def exec(
        self,
        container: Container,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
    ) -> ExecResult:
        options = [f"--env={k}={v}" for k, v in (env or {}).items()]
        options += [f"--workdir={workdir}"] if workdir else []
        done = self._run("exec", *options, container.id, *argv)
        if done.returncode == 125 and b"no such container" in done.stderr.lower():
            raise ContainerNotFoundError(f"container {container.id} is gone", container_id=container.id)
        return ExecResult(done.returncode, done.stdout, done.stderr)

    def copy_in(self, container: Container, dest_dir: str, files: Mapping[str, bytes]) -> None:
        done = self._run("cp", "-", f"{container.id}:/", stdin=make_tar(dest_dir, files))
        if done.returncode != 0:
            raise ContainerError(f"could not copy into {container.id}: {done.stderr.decode()[-500:]}")

    def copy_out(self, container: Container, src_dir: str) -> dict[str, bytes]:
        done = self._run("cp", f"{container.id}:{src_dir}", "-")
        if done.returncode != 0:
            raise ContainerError(
                f"could not copy {src_dir} out of {container.id}: {done.stderr.decode()[-500:]}"
            )
        return read_tar([done.stdout], src_dir)

    def stop(self, container: Container) -> None:
        self._run("kill", container.id)  # one that is gone already is fine

    def remove(self, container: Container) -> None:
        self._run("rm", "--force", "--time=0", container.id)
        process, stderr_path = self._runs.pop(container.id, (None, ""))
        if process is not None:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
            process.wait()
            os.unlink(stderr_path)


@hookimpl
def oci_executor_register_backends(registry):  # type: ignore[no-untyped-def]
    registry.add(CliBackend)
