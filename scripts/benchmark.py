#!/usr/bin/env python3
"""Print how long tasks take on each available backend (no pass/fail: figures only).

    python scripts/benchmark.py [--image IMAGE] [--tasks N]

For each backend that answers: the median and 90th percentile of one small task, end to end
(create, Python check cached, copy in, exec, copy out, remove), and a 10 MB round trip.
With the docker CLI present, also the seed document's pattern (`docker run -dit`, `docker
exec`, `docker stop`) for comparison.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def add(x: int, y: int) -> int:
    return x + y


def echo(data: bytes) -> bytes:
    return data


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def report(label: str, times: list[float]) -> None:
    times = sorted(times)
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    print(f"  {label:<28} median {statistics.median(times) * 1000:7.0f} ms   p90 {p90 * 1000:7.0f} ms   (n={len(times)})")


def main() -> int:
    minor = ".".join(platform.python_version_tuple()[:2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=os.environ.get("OCI_TEST_IMAGE", f"oci-executor-test/python:{minor}"))
    parser.add_argument("--tasks", type=int, default=20)
    options = parser.parse_args()

    import cloudpickle

    from oci_executor import OCIExecutor
    from oci_executor.backend import BackendConfig
    from oci_executor.registry import default_registry

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    payload = os.urandom(10 * 1024 * 1024)
    print(f"oci-executor benchmark: image {options.image}, Python {platform.python_version()}, {os.cpu_count()} CPUs")
    for name in ("local", "docker", "podman"):
        backend = default_registry().get(name)(BackendConfig())
        up = backend.available()
        where = backend.describe()
        backend.close()
        if not up:
            print(f"{name}: not available ({where})")
            continue
        print(f"{name}: {where}")
        executor = OCIExecutor(image=options.image, backend=name)
        executor.run_sync(add, [1, 2], {}, {})  # warm up: image lookup and Python check
        report("small task (add)", timed(lambda: executor.run_sync(add, [2, 3], {}, {}), options.tasks))
        report("10 MB round trip", timed(lambda: executor.run_sync(echo, [payload], {}, {}), max(3, options.tasks // 4)))

    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        print("seed pattern (docker CLI: run -dit, exec, stop), for comparison:")

        def seed() -> None:
            name = f"oci-bench-{time.monotonic_ns()}"
            subprocess.run([docker, "run", "-dit", "--rm", "--name", name, options.image, "python3"], check=True, capture_output=True)
            subprocess.run([docker, "exec", name, "python3", "-c", "print(2 + 3)"], check=True, capture_output=True)
            subprocess.run([docker, "stop", name], check=True, capture_output=True)

        report("run -dit + exec + stop", timed(seed, 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
