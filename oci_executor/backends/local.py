"""The ``local`` backend: no engine; a temp folder plays the container.

Exec runs a subprocess with the host's interpreter. The image is not used. Everything the
"container" holds lives in one temp folder, removed by :meth:`LocalBackend.remove`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from oci_executor.backend import Backend, Container, ContainerSpec, ExecResult
from oci_executor.errors import ContainerError
from oci_executor.hookspecs import hookimpl
from oci_executor.registry import BackendRegistry

TEMP_PREFIX = "oci-executor-local-"


class LocalBackend(Backend):
    """Runs tasks in subprocesses of the host, each container a temp folder."""

    name = "local"

    def available(self) -> bool:
        return True

    def describe(self) -> str:
        return f"local ({sys.executable})"

    def create(self, spec: ContainerSpec) -> Container:
        root = tempfile.mkdtemp(prefix=TEMP_PREFIX)
        return Container(
            id=root,
            backend=self.name,
            image=spec.image,
            image_id="local",
            scratch_dir=root,
            python=sys.executable,
        )

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
        full_env = {**os.environ, **(env or {})}
        full_env.pop("PYTHONPATH", None)
        proc = subprocess.run(
            list(argv),
            cwd=workdir or container.scratch_dir,
            env=full_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        return ExecResult(proc.returncode, proc.stdout, proc.stderr)

    def copy_out(self, container: Container, src_dir: str) -> dict[str, bytes]:
        base = self._inside(container, src_dir)
        return {
            path.relative_to(base).as_posix(): path.read_bytes()
            for path in sorted(base.rglob("*"))
            if path.is_file()
        }

    def stop(self, container: Container) -> None:
        """Nothing runs between execs: each exec is waited for."""

    def remove(self, container: Container) -> None:
        shutil.rmtree(container.scratch_dir, ignore_errors=True)


@hookimpl
def oci_executor_register_backends(registry: BackendRegistry) -> None:
    registry.add(LocalBackend)
