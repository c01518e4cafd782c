"""The environment figures of scripts/benchmark.py (``--environments``).

- warm and cold: the same task on an executor with ``packages`` whose environment exists,
  against the executor without packages, side by side (target <= 1.1x);
- first build: building an environment into an empty store, against
  ``pip install --target`` of the same packages on the host (no target: for comparison);
- disk: one copy per key per image ID, however many containers mount it;
- remote engines (ssh): copying an environment there as we do (a volume filled through a
  created, never started helper) against the alternative, a derived image (the same archive
  into a created container, then ``commit``).

The packages come from the host's pip configuration, as a user's would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

WARM_PACKAGES = ["six"]
BUILD_PACKAGES = ["requests"]
COPY_PACKAGES = os.environ.get("OCI_BENCH_COPY_PACKAGES", "requests").split()
"""What the remote copy figure copies (``OCI_BENCH_COPY_PACKAGES="pandas"`` for a large one)."""


def add(x: int, y: int) -> int:
    return x + y


def figures(target: Any, image: str, n: int, bench: SimpleNamespace) -> list[Any]:
    """Rows for ``target``; ``bench`` holds benchmark.py's Row, side_by_side, run_task."""
    import cloudpickle

    from oci_executor.pool import POOL

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    rows = []
    with_env = target.executor(image, packages=WARM_PACKAGES, reuse="dispatch", keep_warm=600.0)
    without = target.executor(image, reuse="dispatch", keep_warm=600.0)
    try:
        bench.run_task(with_env, add, [1, 2], 3)  # untimed: builds the environment if missing
        bench.run_task(without, add, [1, 2], 3)
        ours, floor = bench.side_by_side(
            lambda: bench.run_task(with_env, add, [2, 3], 5),
            lambda: bench.run_task(without, add, [2, 3], 5),
            n,
        )
    finally:
        POOL.drain()
    label = "the same warm task without packages"
    rows.append(
        bench.Row(target.id, f"warm task with {WARM_PACKAGES} (env exists)", ours, floor, "s", 1.1, label)
    )
    with_env = target.executor(image, packages=WARM_PACKAGES, reuse="never")
    without = target.executor(image, reuse="never")
    ours, floor = bench.side_by_side(
        lambda: bench.run_task(with_env, add, [2, 3], 5),
        lambda: bench.run_task(without, add, [2, 3], 5),
        max(2, n // 2),
        settle=POOL.drain,
    )
    label = "the same cold task without packages"
    rows.append(
        bench.Row(target.id, f"cold task with {WARM_PACKAGES} (env exists)", ours, floor, "s", 1.1, label)
    )
    if target.local_address:
        try:
            rows.append(remote_copy(target, image, bench))
        except Exception as exc:  # noqa: BLE001 - a figure that fails is named, the others stay
            print(f"  copy to the engine: FAILED: {type(exc).__name__}: {exc}")
    return rows


def remote_copy(target: Any, image: str, bench: SimpleNamespace, runs: int = 3) -> Any:
    """One environment (``COPY_PACKAGES``) onto a remote engine: a fresh volume, filled through
    a created helper and published (ours), vs a derived image committed from a created container."""
    import io
    import tarfile

    from oci_executor import settings
    from oci_executor.environments import attach, volumes
    from oci_executor.registry import select_backend

    values = settings.parse(
        {
            **settings.defaults(),
            "backend": target.backend,
            "address": target.address,
            "ssh_identity": target.identity,
            "image": image,
        }
    )
    backend = select_backend(target.backend, settings.backend_config(values))
    spec = settings.container_spec(values, {})
    env = attach.environment_for(backend, spec, tuple(COPY_PACKAGES))  # untimed: host build + first copy
    remote = backend.environment_volumes()
    assert remote is not None
    client = backend.client()  # type: ignore[attr-defined]

    def ours() -> None:
        name = f"oci-env-bench-{os.urandom(3).hex()}"
        archive = volumes._archive(env.path, "bench")
        try:
            remote.create_volume(name, {volumes.KEY: "bench"})
            remote.fill_volume(
                name, spec.image, spec.python, attach.MOUNT, archive, {volumes.HELPER: "bench"}
            )
            remote.create_volume(f"{name}-marker", {volumes.KEY: "bench"})
        finally:
            os.remove(archive)
            remote.remove_volume(f"{name}-marker")
            remote.remove_volume(name)

    def derived_image() -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(env.path, arcname=attach.MOUNT.lstrip("/"))
        created = client.containers.create(spec.image, command=[spec.python, "-c", ""])
        tag = f"oci-env-bench-{os.urandom(3).hex()}"
        try:
            created.put_archive("/", buffer.getvalue())
            image_obj = created.commit(repository="localhost/oci-env-bench", tag=tag)
            client.images.remove(image_obj.id, force=True)
        finally:
            created.remove(force=True)

    try:
        try:
            derived_image()
        except Exception as exc:  # noqa: BLE001 - Podman's API refuses some commits: ours alone then
            print(f"  (no derived-image floor on {target.id}: {type(exc).__name__}: {exc})")
            mine, theirs = [timed(ours) for _ in range(runs)], []
        else:
            mine, theirs = bench.side_by_side(ours, derived_image, runs)
    finally:
        backend.close()
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(env.path) for f in fs) / 2**20
    label = f"a derived image (put_archive into a created container, commit): {size:.0f} MiB"
    return bench.Row(
        target.id, f"copy of {COPY_PACKAGES} to the engine (volume)", mine, theirs, "s", None, label
    )


def first_build(bench: SimpleNamespace, runs: int = 2) -> Any:
    """An environment built into an empty store (local backend: no engine in the figure) vs
    ``pip install --target`` of the same packages on the host."""
    from oci_executor import settings
    from oci_executor.environments import attach, environment_for
    from oci_executor.registry import select_backend

    values = settings.parse({**settings.defaults(), "backend": "local"})
    backend = select_backend("local", settings.backend_config(values))
    spec = settings.container_spec(values, {})

    def ours() -> None:
        root = tempfile.mkdtemp(prefix="oci-bench-envs-")
        saved = os.environ.get("OCI_EXECUTOR_ENV_DIR")
        os.environ["OCI_EXECUTOR_ENV_DIR"] = root
        attach._memo.clear()
        try:
            environment_for(backend, spec, tuple(BUILD_PACKAGES))
        finally:
            if saved is None:
                os.environ.pop("OCI_EXECUTOR_ENV_DIR", None)
            else:
                os.environ["OCI_EXECUTOR_ENV_DIR"] = saved
            shutil.rmtree(root, ignore_errors=True)

    def floor() -> None:
        folder = tempfile.mkdtemp(prefix="oci-bench-target-")
        try:
            argv = [sys.executable, "-m", "pip", "install", "-q", "--target", folder, *BUILD_PACKAGES]
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    mine, theirs = bench.side_by_side(ours, floor, runs)
    label = f"pip install --target DIR {' '.join(BUILD_PACKAGES)} on the host"
    return bench.Row("host", f"first build of {BUILD_PACKAGES}", mine, theirs, "s", None, label)


def disk_line() -> str:
    """What the store holds: environments, their size, and how many distinct image IDs."""
    from oci_executor.environments import store

    entries = store.entries()
    size = sum(e.size for e in entries) / 2**20
    return f"store {store.root()}: {len(entries)} environment(s), {size:.1f} MiB, one per key and image ID"


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
