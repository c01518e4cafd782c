"""The main job: the seed's workflow (add, then multiply) on the best backend available.

Run with ``oci-executor demo``. It starts a Covalent
server if none is running, and stops it afterwards if it started it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

from oci_executor import hostimage
from oci_executor.backend import BackendConfig
from oci_executor.errors import OCIExecutorError
from oci_executor.registry import default_registry


def server_url() -> str:
    from covalent._shared_files.config import get_config

    return f"http://{get_config('dispatcher.address')}:{get_config('dispatcher.port')}"


def server_running(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/dispatches?count=1", timeout=2):
            return True
    except Exception:  # noqa: BLE001 - any failure means "not serving"
        return False


def _covalent_cli() -> list[str]:
    exe = shutil.which("covalent", path=os.path.dirname(sys.executable)) or shutil.which("covalent")
    return [exe] if exe else [sys.executable, "-m", "covalent"]


@contextlib.contextmanager
def covalent_server(timeout: float = 60.0) -> Iterator[str]:
    """Yield the URL of a running Covalent server, starting (and later stopping) one if needed."""
    url = server_url()
    if server_running(url):
        yield url
        return
    print(f"Starting a Covalent server at {url} ...", file=sys.stderr)
    subprocess.run([*_covalent_cli(), "start", "--no-cluster"], check=True, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not server_running(url):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Covalent server did not answer at {url} within {timeout:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        print("Stopping the Covalent server ...", file=sys.stderr)
        subprocess.run([*_covalent_cli(), "stop"], check=False, stdout=subprocess.DEVNULL)


def pick_backend(images: list[str]) -> tuple[str, str]:
    """The first of podman, docker that answers and has (or can pull) one of ``images``, else
    one it can build the host-Python image into (no registry needed); else local."""
    registry = default_registry()
    for name in registry.auto_order():
        if name == "local":
            break
        backend = registry.get(name)(BackendConfig())
        try:
            if not backend.available():
                print(f"  {name}: not available ({backend.describe()})", file=sys.stderr)
                continue
            for image in images:
                try:
                    backend.ensure_image(image)  # type: ignore[attr-defined]
                    return name, image
                except OCIExecutorError as exc:
                    print(f"  {name}: cannot use image {image!r}: {exc}", file=sys.stderr)
            print(
                f"  {name}: building {hostimage.host_image_name()} from this host's Python ...",
                file=sys.stderr,
            )
            try:
                return name, hostimage.build(backend)
            except OCIExecutorError as exc:
                print(f"  {name}: could not build an image from this host's Python: {exc}", file=sys.stderr)
        finally:
            backend.close()
    return "local", images[0]


def run(images: list[str], backend: str | None = None) -> int:
    """Dispatch the seed workflow on ``backend`` (else the first that can run one of
    ``images``) and print its result; 0 when it completed."""
    import covalent as ct

    from oci_executor import OCIExecutor

    if backend:
        image = images[0]
    else:
        print("Choosing a backend ...", file=sys.stderr)
        backend, image = pick_backend(images)
    shown = "none (the local backend runs tasks with the host's Python)" if backend == "local" else image
    print(f"Backend: {backend}, image: {shown}", file=sys.stderr)
    executor = OCIExecutor(image=image, backend=backend)

    @ct.electron(executor=executor)  # type: ignore[arg-type]  # Covalent's hint omits async executors
    def add(x: int, y: int) -> int:
        return x + y

    @ct.electron(executor=executor)  # type: ignore[arg-type]  # Covalent's hint omits async executors
    def multiply(x: int, y: int) -> int:
        return x * y

    # The server this command starts has no Dask cluster, so post-processing runs locally.
    @ct.lattice(workflow_executor="local")
    def workflow(x: int, y: int) -> int:
        r1 = add(x, y)
        return multiply(y, r1)

    with covalent_server():
        result = ct.dispatch_sync(workflow)(2, 3)
        print(result)
    return 0 if str(result.status) == "COMPLETED" else 1
