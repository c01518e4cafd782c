#!/usr/bin/env python3
"""Measure oci-executor against the floor of each engine, side by side in one run.

    .venv/bin/python scripts/benchmark.py [--image IMAGE] [--tasks N] [--backends LIST]
        [--skip-fanout] [--skip-200mb] [--slurm-ways] [--slurm-fanout] [--fanout-runs N] [--roundtrips N]
        [--chart PATH] [--markdown PATH] [--observability-only]
    .venv/bin/python scripts/benchmark.py --soak [--soak-tasks N] [--soak-electrons N] [--soak-server LIST]

For each backend that answers (local, docker, podman, podman-rootless, slurm), every figure is
measured against its floor on the same engine, the two sampled alternately so that the
machine's noise hits both alike, and reported as medians with n and their ratio:

1. cold task (``reuse="never"``, ``add(2, 3)``) vs ``<engine> run --rm IMAGE python3 -c pass``
   (local: a ``python -c pass`` subprocess; slurm: ``srun podman run --rm IMAGE python3 -c pass``
   on the same cluster, a new job step each time);
2. warm task (``reuse="dispatch"``, after a warm-up task) vs the SDK's ``exec_run`` of
   ``python3 -c pass`` in a running container (local: the same subprocess as in 1; slurm:
   ``srun --jobid J --overlap podman exec`` in a job holding a container);
3. a 50-electron fan-out (square each of ``range(50)``, sum in one electron) through a real
   Covalent server with ``executor=OCIExecutor(...)`` vs the same workflow with
   ``executor="local"``, from ``ct.dispatch`` to ``ct.get_result(wait=True)``;
4. 10 MB and 200 MB round trips, each in a fresh Python process: time, and the driver's peak
   extra memory (VmHWM minus VmRSS after creating the payload) over the payload's size;
5. docker only: the seed document's CLI pattern (``docker run -dit``, ``docker exec``,
   ``docker stop``) next to our cold task, for comparison;
6. remote engines (``docker-ssh``, ``podman-rootless-ssh``: the same engines through the test
   sshd of scripts/setup-sshd.sh): the warm task over ssh vs the same warm task on the same
   engine's local socket;
7. observability (docs/observability.md): the live-output latency, from a task's ``print`` to
   its line in the log (the ``oci_executor.live`` logger the server's log gets), and what the
   trace and live log add to a warm task (traced vs ``OCI_EXECUTOR_TRACE=0``, side by side;
   target: under 0.5 ms);
8. slurm, with ``--slurm-ways``: the other ways to a job with a container (salloc, sbatch, a
   job submitted ahead; scripts/bench_slurm.py) vs the same floor as the cold task; with
   ``--slurm-fanout``: a 200-electron fan-out over both nodes and on one node vs Covalent's
   local executor;
9. ``--soak`` (instead of 1-8): 5,000 warm tasks through one process on each backend and 500
   electrons through a real Covalent server (``--soak-server``, docker): tasks per second,
   latency per thousand, and the growth of memory, descriptors and threads (scripts/soak.py).

It ends with a markdown summary table (backend | figure | ours | floor | ratio | target) and
checks that no container of ours was left on any engine. Figures are ratios: on a noisy
machine only values measured side by side in the same run compare.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import os
import platform
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RUN_LABEL = "io.oci-executor.benchmark-run"
"""Every container this run creates (ours and the floors') carries it, with the run's ID: other
containers of ours on the same engines (a test run beside the benchmark) are not counted."""
TASK_META = {"dispatch_id": "bench", "node_id": 0}
MB = 1024 * 1024
FANOUT_WIDTH = 50
FANOUT_RESULT = sum(i * i for i in range(FANOUT_WIDTH))
ALL_BACKENDS = ("local", "docker", "podman", "podman-rootless", "docker-ssh", "podman-rootless-ssh", "slurm")
SLURM_CONF = os.environ.get("OCI_TEST_SLURM_CONF", "/run/oci-executor/slurm/slurm.conf")
"""The test cluster of scripts/setup-slurm.sh; as root, jobs run as the rootless test user."""
SSH_PORT = int(os.environ.get("OCI_TEST_SSH_PORT", "22422"))
SSH_KEYS = os.environ.get("OCI_TEST_SSH_KEYS", "/etc/oci-executor/ssh")
ROOTLESS_USER = os.environ.get("OCI_TEST_ROOTLESS_USER", "ocitest")
SETTLE_TIMEOUT = 60.0
"""Seconds to wait for a Covalent server's warm containers to be removed after a dispatch."""
EXTRA_HINT = "pip install -e '.[bench]'  (or: pip install 'matplotlib>=3.7')"


# -- what runs in the containers (pickled by value) -------------------------------------------


def add(x: int, y: int) -> int:
    return x + y


def reverse(data: bytes) -> bytes:
    return data[::-1]


def ticker(count: int, gap: float) -> int:
    """Print the time ``count`` times, ``gap`` seconds apart (for the live-output latency)."""
    for i in range(count):
        print(f"tick {i} {time.time():.6f}")
        time.sleep(gap)
    return count


# -- targets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A backend to measure: its executor backend name, engine address and engine CLI."""

    id: str
    backend: str
    address: str
    cli: tuple[str, ...] = ()
    """The engine's CLI, pointed at the same engine (empty for local or without a CLI)."""
    run_id: str = ""
    identity: str = ""
    """The ssh key of a remote target."""
    local_address: str = ""
    """A remote target's engine on this machine (the figure's floor, and for listing containers)."""

    @property
    def label(self) -> str:
        """``key=value`` of the label on every container of this run."""
        return f"{RUN_LABEL}={self.run_id}"

    @property
    def is_engine(self) -> bool:
        return self.backend != "local"

    def executor(self, image: str, **options: Any) -> Any:
        from oci_executor import OCIExecutor

        labels = {RUN_LABEL: self.run_id}
        if self.identity:
            options.setdefault("ssh_identity", self.identity)
        return OCIExecutor(image=image, backend=self.backend, address=self.address, labels=labels, **options)

    def client(self) -> Any:
        """An SDK client for the engine (docker-py or podman-py), on its local socket."""
        address = self.local_address or self.address
        if self.backend == "docker":
            import docker

            return docker.DockerClient(base_url=address, timeout=60)
        import podman

        return podman.PodmanClient(base_url=address)


def rootless_address() -> str | None:
    """The rootless Podman socket of the test user, or None when that user does not exist."""
    if "OCI_TEST_PODMAN_ROOTLESS_HOST" in os.environ:
        return os.environ["OCI_TEST_PODMAN_ROOTLESS_HOST"]
    try:
        uid = pwd.getpwnam(ROOTLESS_USER).pw_uid
    except KeyError:
        return None
    return f"unix:///run/user/{uid}/podman/podman.sock"


def make_target(target_id: str, run_id: str) -> Target | str:
    """The target for ``target_id``, or why it cannot be measured."""
    if target_id == "local":
        return Target("local", "local", "", (), run_id)
    if target_id in ("docker-ssh", "podman-rootless-ssh"):
        local = make_target(target_id.removesuffix("-ssh"), run_id)
        if isinstance(local, str):
            return local
        user = "root" if target_id == "docker-ssh" else ROOTLESS_USER
        path = local.address.removeprefix("unix://") if target_id != "docker-ssh" else ""
        address = f"ssh://{user}@127.0.0.1:{SSH_PORT}{path}"
        return Target(target_id, local.backend, address, (), run_id, f"{SSH_KEYS}/id_{user}", local.address)
    if target_id == "docker":
        address = os.environ.get("OCI_TEST_DOCKER_HOST", "unix:///var/run/docker.sock")
        docker = shutil.which("docker")
        return Target("docker", "docker", address, (docker, "-H", address) if docker else (), run_id)
    if target_id == "slurm":
        if not shutil.which("srun"):
            return "no Slurm tools on PATH (sudo bash scripts/setup-slurm.sh)"
        if os.geteuid() == 0:
            user = pwd.getpwnam(ROOTLESS_USER)
            address = f"{ROOTLESS_USER}@{SLURM_CONF}"
            cli = ("srun", f"--uid={user.pw_uid}", f"--gid={user.pw_gid}", "--quiet")
        else:
            address, cli = SLURM_CONF, ("srun", "--quiet")
        return Target("slurm", "slurm", address, cli, run_id)
    if target_id == "podman":
        address = os.environ.get("OCI_TEST_PODMAN_HOST", "unix:///run/podman/podman.sock")
    elif target_id == "podman-rootless":
        found = rootless_address()
        if found is None:
            return f"no user {ROOTLESS_USER!r} for rootless Podman (set OCI_TEST_ROOTLESS_USER)"
        address = found
    else:
        return f"unknown backend (choose from {', '.join(ALL_BACKENDS)})"
    podman = shutil.which("podman")
    return Target(target_id, "podman", address, (podman, "--url", address) if podman else (), run_id)


def slurm_env() -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": SLURM_CONF}


SLURM_NODE_ENV = (
    'export HOME=$(getent passwd $(id -u) | cut -d: -f6) XDG_RUNTIME_DIR=/run/user/$(id -u); exec podman "$@"'
)
"""How the slurm floors run Podman in a step (the backend's own step does the same, with checks)."""


def slurm_podman(target: Target, *args: str, jobid: str = "") -> list[str]:
    """A Slurm step running ``podman ARGS`` as the job's user (a new allocation, or in ``jobid``)."""
    where = [f"--jobid={jobid}", "--overlap"] if jobid else []
    return [*target.cli, *where, "bash", "-c", SLURM_NODE_ENV, "step", *args]


def probe(target: Target, image: str) -> str | None:
    """None when the engine answers and has ``image``; else why not."""
    if not target.is_engine:
        return None
    if target.backend == "slurm":
        found = subprocess.run(
            slurm_podman(target, "image", "exists", image), capture_output=True, text=True, env=slurm_env()
        )
        return (
            None if found.returncode == 0 else f"cluster or image {image} not usable: {found.stderr.strip()}"
        )
    if target.local_address:
        problem = probe(dataclasses.replace(target, address=target.local_address, local_address=""), image)
        if problem:
            return problem
        from oci_executor.backend import BackendConfig
        from oci_executor.registry import default_registry

        backend = default_registry().get(target.backend)(
            BackendConfig(target.address, ssh_identity=target.identity)
        )
        try:
            backend.check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
            return f"{target.address}: {exc} (sudo bash scripts/setup-engines.sh starts the test sshd)"
        finally:
            backend.close()
        return None
    try:
        client = target.client()
        try:
            if client.ping() is False:
                return f"engine at {target.address} does not answer"
            client.images.get(image)
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return f"engine at {target.address} not usable with image {image}: {type(exc).__name__}: {exc}"
    return None


def leftovers(target: Target) -> list[str]:
    """This run's containers on ``target``, running or not (local: every local temp folder)."""
    if not target.is_engine:
        return sorted(glob.glob(os.path.join(tempfile.gettempdir(), "oci-executor-local-*")))
    if target.backend == "slurm":
        jobs = subprocess.run(
            ["squeue", "--noheader", "--name=oci-executor", "--format=%i"],
            capture_output=True,
            text=True,
            env=slurm_env(),
        )
        user = ["runuser", "-u", ROOTLESS_USER, "--"] if os.geteuid() == 0 else []
        uid = pwd.getpwnam(ROOTLESS_USER).pw_uid if user else os.getuid()
        ps = subprocess.run(
            [*user, "env", f"XDG_RUNTIME_DIR=/run/user/{uid}", "podman", "ps", "-a", "-q"]
            + ["--filter", f"label={target.label}"],
            capture_output=True,
            text=True,
        )
        return sorted([f"job:{j}" for j in jobs.stdout.split()] + ps.stdout.split())
    if target.cli:
        found = subprocess.run(
            [*target.cli, "ps", "-a", "-q", "--filter", f"label={target.label}"],
            capture_output=True,
            text=True,
            check=True,
        )
        return found.stdout.split()
    client = target.client()
    try:
        return sorted(c.id[:12] for c in client.containers.list(all=True, filters={"label": target.label}))
    finally:
        client.close()


def wait_until_clean(
    target: Target, before: Sequence[str] = (), timeout: float = SETTLE_TIMEOUT
) -> list[str]:
    """Drain this process's pool, then wait until nothing of ours beyond ``before`` is left."""
    from oci_executor.pool import POOL

    POOL.drain()
    deadline = time.monotonic() + timeout
    while (left := sorted(set(leftovers(target)) - set(before))) and time.monotonic() < deadline:
        time.sleep(0.25)
    return left


# -- measurements ------------------------------------------------------------------------------


@dataclass
class Row:
    """One figure on one backend: our samples, the floor's samples, and the target ratio."""

    backend: str
    figure: str
    ours: list[float]
    floor: list[float] = field(default_factory=list)
    unit: str = "s"
    target: float | None = None
    floor_label: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.ours or not self.floor:
            return None
        return statistics.median(self.ours) / statistics.median(self.floor)

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio <= self.target


def fmt(samples: Sequence[float], unit: str) -> str:
    """A median with its n, in ms or s for times and as-is for other units."""
    if not samples:
        return "–"
    median = statistics.median(samples)
    if unit == "s":
        text = f"{median * 1000:.0f} ms" if median < 1 else f"{median:.2f} s"
    else:
        text = f"{median:.2f} {unit}" if unit == "ms" else f"{median:.1f} {unit}"
    return f"{text} (n={len(samples)})"


def fmt_ratio(row: Row) -> str:
    return "–" if row.ratio is None else f"{row.ratio:.2f}x"


def fmt_target(row: Row) -> str:
    if row.target is None:
        return "–"
    text = f"<= {row.target:g}x"
    return text if row.met is None else f"{text}: {'met' if row.met else 'MISSED'}"


def report(row: Row) -> None:
    print(f"  {row.figure}")
    print(f"      ours   {fmt(row.ours, row.unit)}")
    if row.floor:
        print(f"      floor  {fmt(row.floor, row.unit)}   [{row.floor_label}]")
        print(f"      ratio  {fmt_ratio(row)}   target {fmt_target(row)}")
    sys.stdout.flush()


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def side_by_side(
    ours: Callable[[], Any], floor: Callable[[], Any], n: int, settle: Callable[[], Any] = lambda: None
) -> tuple[list[float], list[float]]:
    """``n`` samples of each, alternating which goes first; ``settle`` (untimed) after each."""
    ours_times: list[float] = []
    floor_times: list[float] = []
    for i in range(n):
        pair = [(ours, ours_times), (floor, floor_times)]
        for fn, times in pair if i % 2 == 0 else reversed(pair):
            times.append(timed(fn))
            settle()
    return ours_times, floor_times


def run_quiet(argv: Sequence[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def run_task(executor: Any, fn: Callable[..., Any], args: list[Any], expected: Any) -> None:
    """One task through ``run_sync``; fails loudly if it did not return ``expected``."""
    outcome = executor.run_sync(fn, args, {}, TASK_META)
    if not outcome.ok or outcome.load_value() != expected:
        raise RuntimeError(f"task {fn.__name__} failed: {outcome.summary()}\n{outcome.traceback}")


def cli_floor(argv: Sequence[str]) -> Callable[[], None]:
    """A floor that runs one command."""
    return lambda: run_quiet(argv)


def local_python_floor() -> Callable[[], None]:
    """The local backend's floor: a subprocess of this interpreter (what its runner starts)."""
    return cli_floor([sys.executable, "-c", "pass"])


# -- 1. cold task ------------------------------------------------------------------------------


def cold_figure(target: Target, image: str, n: int) -> Row:
    from oci_executor.pool import POOL

    executor = target.executor(image, reuse="never")
    if target.backend == "slurm":
        label = "srun podman run --rm IMAGE python3 -c pass"
        argv = slurm_podman(target, "run", "--rm", f"--label={target.label}", image, "python3", "-c", "pass")
        floor: Callable[[], None] = lambda: run_quiet(argv, env=slurm_env())  # noqa: E731
    elif target.is_engine:
        label = f"{Path(target.cli[0]).name} run --rm IMAGE python3 -c pass"
        floor = cli_floor([*target.cli, "run", "--rm", image, "python3", "-c", "pass"])
    else:
        label = "python -c pass subprocess"
        floor = local_python_floor()
    run_task(executor, add, [1, 2], 3)  # untimed: image lookup, engine connection
    floor()
    POOL.drain()
    ours, floors = side_by_side(lambda: run_task(executor, add, [2, 3], 5), floor, n, settle=POOL.drain)
    figure = "cold task vs run --rm" if target.is_engine else "cold task vs python -c pass"
    return Row(target.id, figure, ours, floors, "s", 1.0, label)


def slurm_ways_rows(target: Target, image: str, n: int) -> list[Row]:
    """The other ways to a job with a container (scripts/bench_slurm.py), each vs the floor."""
    import bench_slurm

    run = ["run", "--rm", f"--label={target.label}", image, "python3", "-c", "pass"]
    argv = slurm_podman(target, *run)
    user = [a for a in target.cli if a.startswith(("--uid", "--gid"))]
    found = bench_slurm.measure(
        lambda: run_quiet(argv, env=slurm_env()),
        user,
        lambda job: slurm_podman(target, *run, jobid=job),
        slurm_env(),
        n,
    )
    label = "srun podman run --rm IMAGE python3 -c pass"
    return [
        Row(target.id, f"way: {name}", ours, floors, "s", None, label)
        for name, (ours, floors) in found.items()
    ]


# -- 2. warm task ------------------------------------------------------------------------------


@contextlib.contextmanager
def exec_floor(target: Target, image: str) -> Iterator[tuple[Callable[[], None], str]]:
    """The raw exec floor: ``exec_run`` in one sleeping container, removed afterwards."""
    if not target.is_engine:
        yield local_python_floor(), "python -c pass subprocess (local has no exec)"
        return
    if target.backend == "slurm":
        yield from slurm_exec_floor(target, image)
        return
    client = target.client()
    labels = {RUN_LABEL: target.run_id}
    container = client.containers.run(image, ["sleep", "infinity"], detach=True, labels=labels)
    try:

        def floor() -> None:
            code, output = container.exec_run(["python3", "-c", "pass"])
            if code != 0:
                raise RuntimeError(f"exec_run failed ({code}): {output!r}")

        yield floor, "SDK container.exec_run(python3 -c pass)"
    finally:
        container.remove(force=True)
        client.close()


def slurm_exec_floor(target: Target, image: str) -> Iterator[tuple[Callable[[], None], str]]:
    """``srun --jobid J --overlap podman exec NAME python3 -c pass`` in a job holding a sleeper."""
    name = f"oci-bench-floor-{target.run_id}"
    script = "#!/bin/bash\n" + " ".join(
        slurm_podman(
            target, "run", "--rm", f"--name={name}", f"--label={target.label}", image, "sleep", "600"
        )[len(target.cli) :]
    ).replace("bash -c " + SLURM_NODE_ENV, "bash -c '" + SLURM_NODE_ENV + "'")
    user = [a for a in target.cli if a.startswith(("--uid", "--gid"))]
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--job-name=oci-executor",
            "--output=/dev/null",
            "--chdir=/tmp",
            "--time=30",
            *user,
        ],
        input=script,
        capture_output=True,
        text=True,
        env=slurm_env(),
        check=True,
    )
    jobid = submitted.stdout.strip().split(";")[0]
    probe_argv = slurm_podman(target, "exec", name, "python3", "-c", "pass", jobid=jobid)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(probe_argv, capture_output=True, env=slurm_env()).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the floor's container never started in job {jobid}")
            time.sleep(0.2)
        yield (
            (lambda: run_quiet(probe_argv, env=slurm_env())),
            "srun --jobid J --overlap podman exec NAME python3 -c pass",
        )
    finally:
        subprocess.run(
            slurm_podman(target, "rm", "-f", "-t", "0", name, jobid=jobid),
            capture_output=True,
            env=slurm_env(),
        )
        subprocess.run(["scancel", jobid], env=slurm_env(), check=False)


def warm_figure(target: Target, image: str, n: int) -> Row:
    from oci_executor.pool import POOL

    executor = target.executor(image, reuse="dispatch", keep_warm=600.0)
    try:
        with exec_floor(target, image) as (floor, label):
            run_task(executor, add, [1, 2], 3)  # untimed: starts the warm container
            floor()
            ours, floors = side_by_side(lambda: run_task(executor, add, [2, 3], 5), floor, n)
    finally:
        POOL.drain()
    figure = "warm task vs raw exec" if target.is_engine else "warm task vs python -c pass"
    return Row(target.id, figure, ours, floors, "s", 1.0, label)


def warm_ssh_figure(target: Target, image: str, n: int) -> Row:
    """The warm task over ssh vs the same warm task on the same engine's local socket."""
    from oci_executor.pool import POOL

    remote = target.executor(image, reuse="dispatch", keep_warm=600.0)
    local = dataclasses.replace(target, address=target.local_address, identity="").executor(
        image, reuse="dispatch", keep_warm=600.0
    )
    try:
        run_task(remote, add, [1, 2], 3)  # untimed: the ssh tunnel and the warm containers
        run_task(local, add, [1, 2], 3)
        ours, floors = side_by_side(
            lambda: run_task(remote, add, [2, 3], 5), lambda: run_task(local, add, [2, 3], 5), n
        )
    finally:
        POOL.drain()
    label = f"the same warm task on {target.local_address}"
    return Row(target.id, "warm task over ssh vs local socket", ours, floors, "s", 1.3, label)


# -- 7. observability: live output latency, tracing overhead ---------------------------------


def live_latency_figure(target: Target, image: str, lines: int = 30) -> Row:
    """Seconds from a task's print to its line in the ``oci_executor.live`` log."""
    import logging

    from oci_executor.pool import POOL

    latencies: list[float] = []

    class Arrivals(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            words = record.getMessage().split()
            if len(words) >= 3 and words[-3] == "tick":
                latencies.append(time.time() - float(words[-1]))

    handler, live = Arrivals(), logging.getLogger("oci_executor.live")
    live.addHandler(handler)
    live.setLevel(logging.INFO)
    try:
        executor = target.executor(image, reuse="dispatch", keep_warm=60.0)
        run_task(executor, ticker, [1, 0.0], 1)  # untimed: the warm container
        latencies.clear()
        run_task(executor, ticker, [lines, 0.1], lines)
    finally:
        live.removeHandler(handler)
        POOL.drain()
    return Row(target.id, "live output: print to log line", latencies, unit="s")


def tracing_figure(target: Target, image: str, n: int) -> Row:
    """A warm task traced vs the same with OCI_EXECUTOR_TRACE=0, side by side."""
    from oci_executor.pool import POOL

    executor = target.executor(image, reuse="dispatch", keep_warm=600.0)

    def task(traced: bool) -> Callable[[], None]:
        def run() -> None:
            os.environ["OCI_EXECUTOR_TRACE"] = "1" if traced else "0"
            run_task(executor, add, [2, 3], 5)

        return run

    try:
        run_task(executor, add, [1, 2], 3)  # untimed: the warm container
        traced, untraced = side_by_side(task(True), task(False), n)
    finally:
        os.environ.pop("OCI_EXECUTOR_TRACE", None)
        POOL.drain()
    added = (statistics.median(traced) - statistics.median(untraced)) * 1000
    print(f"      added: {added:.2f} ms (difference of the medians; target: under 0.5 ms)")
    return Row(target.id, "warm task traced vs untraced", traced, untraced, "s", None, "OCI_EXECUTOR_TRACE=0")


def tracing_cpu_figure(n: int = 2000) -> Row:
    """The host's CPU time for one warm task's trace and live log (record, phases, two file
    writes), in process: robust on a busy machine, where wall-clock pairs are noisy."""
    from oci_executor.backend import Container
    from oci_executor.trace import TaskTrace

    container = Container("c" * 64, "docker", "image", "", "/tmp", "python3")
    end = {"exit_code": 0, "signal": None, "rusage": {"max_rss_kb": 1, "user_s": 0.1, "system_s": 0.1}}

    def one() -> None:
        trace = TaskTrace("bench", "0", "add")
        for phase in ("wait", "send", "run", "receive"):
            trace.phase(phase)
            if phase == "wait":
                trace.container(container, warm=True)
        trace.exited(end)
        trace.finish("ok")

    one()
    samples = []
    for _ in range(n // 100):
        start = time.thread_time()
        for _ in range(100):
            one()
        samples.append((time.thread_time() - start) * 1000 / 100)
    return Row("host", "tracing CPU time per warm task (in process)", samples, unit="ms")


# -- 3. fan-out through a Covalent server ------------------------------------------------------


def fanout_workflow(executor: Any) -> Any:
    """Square each of ``range(n)`` in its own electron, then sum them in one electron."""
    import covalent as ct

    @ct.electron(executor=executor)
    def square(x: int) -> int:
        return x * x

    @ct.electron(executor=executor)
    def total(values: list[int]) -> int:
        return sum(values)

    @ct.lattice
    def fanout(n: int) -> int:
        return total([square(i) for i in range(n)])

    return fanout


def dispatch(workflow: Any, width: int = FANOUT_WIDTH) -> None:
    """Dispatch ``workflow`` and wait for its result; fails loudly if it is wrong."""
    import covalent as ct

    dispatch_id = ct.dispatch(workflow)(width)
    result = ct.get_result(dispatch_id, wait=True)
    if str(result.status) != "COMPLETED" or result.result != sum(i * i for i in range(width)):
        raise RuntimeError(
            f"dispatch {dispatch_id} ended {result.status}: {result.error}{failed_nodes(result)}"
        )


def failed_nodes(result: Any) -> str:
    """The error of each failed node of a dispatch's result, one per line."""
    lines = []
    for node_id in result.lattice.transport_graph._graph.nodes:
        node = result.get_node_result(node_id)
        if str(node.get("status")) == "FAILED":
            lines.append(f"\n    node {node_id} {node.get('node_name')}: {node.get('error')}".rstrip())
    return "".join(lines)


def fanout_figure(target: Target, image: str, runs: int) -> Row:
    """The fan-out on ``target`` vs Covalent's local executor, on the running server.

    Between samples (untimed) the server's warm containers are left to expire (their
    ``keep_warm``) and be removed, so that no removal runs during the next sample.
    """
    before = leftovers(target)
    ours_wf = fanout_workflow(target.executor(image))
    local_wf = fanout_workflow("local")

    def settle() -> None:
        left = wait_until_clean(target, before)
        if left:  # locally, the temp folders may be another process's: go on
            print(f"      (still there after {SETTLE_TIMEOUT:g} s, going on: {', '.join(left)})")

    dispatch(ours_wf)  # untimed warm-ups of both
    settle()
    dispatch(local_wf)
    ours, floors = side_by_side(lambda: dispatch(ours_wf), lambda: dispatch(local_wf), runs, settle)
    label = 'same workflow, executor="local"'
    return Row(target.id, f"{FANOUT_WIDTH}-electron fan-out vs Covalent local", ours, floors, "s", 1.3, label)


def slurm_fanout_rows(target: Target, image: str, runs: int, width: int = 200) -> list[Row]:
    """A ``width``-electron fan-out over both nodes (jobs of 2 CPUs, ``max_containers=6``: more
    jobs than one node of 4 CPUs holds) vs Covalent's local executor, and the same pinned to
    one node."""
    nodes = subprocess.run(
        ["sinfo", "--noheader", "--Node", "--format=%N"], capture_output=True, text=True, env=slurm_env()
    ).stdout.split()
    before = leftovers(target)
    both = fanout_workflow(target.executor(image, cpus=2, max_containers=6))
    one = fanout_workflow(
        target.executor(image, cpus=2, max_containers=6, slurm_args=[f"--nodelist={nodes[0]}"])
    )
    local = fanout_workflow("local")

    def settle() -> None:
        wait_until_clean(target, before)

    dispatch(both, width)  # untimed warm-up
    settle()
    times: dict[str, list[float]] = {"both": [], "one": [], "local": []}
    for i in range(runs):
        order = [("both", both), ("one", one), ("local", local)]
        for name, workflow in order if i % 2 == 0 else reversed(order):
            times[name].append(timed(lambda w=workflow: dispatch(w, width)))
            settle()
    label = 'same workflow, executor="local"'
    return [
        Row(
            target.id,
            f"{width}-electron fan-out, {len(nodes)} nodes vs Covalent local",
            times["both"],
            times["local"],
            "s",
            None,
            label,
        ),
        Row(
            target.id,
            f"{width}-electron fan-out, one node ({nodes[0]}) vs Covalent local",
            times["one"],
            times["local"],
            "s",
            None,
            label,
        ),
    ]


@contextlib.contextmanager
def covalent_server(image: str) -> Iterator[str]:
    """One Covalent server (tests/covalent_server.py) for every backend's fan-out."""
    sys.path.insert(0, str(REPO))
    from tests.covalent_server import running_server

    with running_server({"executors.oci.image": image}) as url:
        yield url


# -- 4. payload round trips in fresh processes -------------------------------------------------


def status_kb(field_name: str) -> int:
    """A field of /proc/self/status (VmRSS, VmHWM), in kB."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/self/status")


def roundtrip_child(spec: dict[str, Any]) -> dict[str, float]:
    """In a fresh process: one warm-up task, then one round trip of ``size`` random bytes."""
    import cloudpickle

    from oci_executor.pool import POOL

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    target = Target(spec["id"], spec["backend"], spec["address"], run_id=spec["run_id"])
    executor = target.executor(spec["image"], reuse="dispatch", keep_warm=600.0)
    run_task(executor, add, [1, 2], 3)  # the round trip itself runs on a warm container
    size = int(spec["size"])
    payload = os.urandom(size)
    baseline = status_kb("VmRSS")
    start = time.perf_counter()
    outcome = executor.run_sync(reverse, [payload], {}, TASK_META)
    seconds = time.perf_counter() - start
    peak = status_kb("VmHWM")
    if not outcome.ok or outcome.load_value() != payload[::-1]:  # checked after the peak is read
        raise RuntimeError(f"round trip failed: {outcome.summary()}\n{outcome.traceback}")
    POOL.drain()
    return {"seconds": seconds, "extra_bytes": (peak - baseline) * 1024}


def roundtrip_rows(target: Target, image: str, size_mb: int, runs: int) -> list[Row]:
    """``runs`` round trips of ``size_mb`` MB, each in a fresh Python process."""
    spec = {"id": target.id, "backend": target.backend, "address": target.address, "run_id": target.run_id}
    spec.update(image=image, size=size_mb * MB)
    seconds: list[float] = []
    extra_mb: list[float] = []
    for _ in range(runs):
        child = subprocess.run(
            [sys.executable, __file__, "--roundtrip-child", json.dumps(spec)],
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            raise RuntimeError(f"round-trip process failed:\n{child.stderr.strip()[-2000:]}")
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        seconds.append(measured["seconds"])
        extra_mb.append(measured["extra_bytes"] / MB)
    peak = f"{size_mb} MB round trip, peak RSS / payload"
    return [
        Row(target.id, f"{size_mb} MB round trip (warm), time", seconds),
        Row(target.id, peak, extra_mb, [float(size_mb)] * runs, "MB", 2.0, "payload size"),
    ]


# -- 5. the seed document's CLI pattern --------------------------------------------------------


def seed_figure(target: Target, image: str, n: int) -> Row:
    """``docker run -dit`` + ``docker exec`` + ``docker stop`` next to our cold task."""
    from oci_executor.pool import POOL

    cli = target.cli

    def seed() -> None:
        name = f"oci-bench-seed-{time.monotonic_ns()}"
        run_quiet([*cli, "run", "-dit", "--rm", "--name", name, "--label", target.label, image, "python3"])
        run_quiet([*cli, "exec", name, "python3", "-c", "print(2 + 3)"])
        run_quiet([*cli, "stop", name])

    executor = target.executor(image, reuse="never")
    ours, floors = side_by_side(lambda: run_task(executor, add, [2, 3], 5), seed, n, settle=POOL.drain)
    label = "seed: docker run -dit, exec, stop (not a floor: for comparison)"
    return Row(target.id, "cold task vs seed CLI pattern", ours, floors, "s", None, label)


# -- running it all ----------------------------------------------------------------------------


def guarded(name: str, measure: Callable[[], Row | list[Row]]) -> list[Row]:
    """Run one figure; on failure print why and go on with the next."""
    try:
        rows = measure()
    except Exception as exc:  # noqa: BLE001 - one failed figure must not end the run
        print(f"  {name}: FAILED: {type(exc).__name__}: {exc}")
        return []
    rows = rows if isinstance(rows, list) else [rows]
    for row in rows:
        report(row)
    return rows


def measure_target(target: Target, options: argparse.Namespace, server: bool) -> list[Row]:
    image = options.image
    rows: list[Row] = []
    if options.observability_only:
        rows += guarded("live output", lambda: live_latency_figure(target, image))
        return rows + guarded("tracing", lambda: tracing_figure(target, image, max(options.tasks, 200)))
    if target.local_address:  # a remote engine: what ssh adds to a warm task (and packages there)
        rows += guarded("warm task over ssh", lambda: warm_ssh_figure(target, image, options.tasks))
        if options.environments:
            rows += guarded("environments", lambda: environment_rows(target, image, options.tasks))
        return rows
    if target.is_engine and not target.cli:
        print("  cold task: skipped (no engine CLI on PATH for the `run --rm` floor)")
    else:
        rows += guarded("cold task", lambda: cold_figure(target, image, options.tasks))
    if target.backend == "slurm" and options.slurm_ways:
        rows += guarded("slurm ways", lambda: slurm_ways_rows(target, image, options.tasks))
    rows += guarded("warm task", lambda: warm_figure(target, image, options.tasks))
    sizes = [10] if options.skip_200mb else [10, 200]
    for size in sizes:
        rows += guarded(
            f"{size} MB round trip", lambda s=size: roundtrip_rows(target, image, s, options.roundtrips)
        )
    if server:
        rows += guarded("fan-out", lambda: fanout_figure(target, image, options.fanout_runs))
    if server and target.backend == "slurm" and options.slurm_fanout:
        rows += guarded("slurm fan-out", lambda: slurm_fanout_rows(target, image, options.fanout_runs))
    rows += guarded("live output", lambda: live_latency_figure(target, image))
    rows += guarded("tracing", lambda: tracing_figure(target, image, max(options.tasks, 200)))
    if target.id == "docker" and target.cli:
        rows += guarded("seed pattern", lambda: seed_figure(target, image, 2))
    if options.environments:
        rows += guarded("environments", lambda: environment_rows(target, image, options.tasks))
    return rows


def environment_rows(target: Target, image: str, n: int) -> list[Row]:
    """The environment figures (scripts/bench_environments.py), with this script's helpers."""
    import bench_environments

    helpers = SimpleNamespace(Row=Row, side_by_side=side_by_side, run_task=run_task)
    return bench_environments.figures(target, image, n, helpers)


def summary_table(rows: Sequence[Row]) -> str:
    lines = ["| backend | figure | ours | floor | ratio | target |", "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        cells = [row.backend, row.figure, fmt(row.ours, row.unit), fmt(row.floor, row.unit)]
        cells += [fmt_ratio(row), fmt_target(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw_chart(rows: Sequence[Row], path: str) -> None:
    """One horizontal bar per ratio that has a target (log scale), the target dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"chart: matplotlib is not installed; install the `bench` extra: {EXTRA_HINT}")
        return
    shown = [r for r in rows if r.ratio is not None and r.target is not None]
    if not shown:
        print("chart: nothing to draw")
        return
    ratios = [r.ratio or 0.0 for r in shown]
    targets = [r.target or 0.0 for r in shown]
    low = min(ratios + targets) / 2
    high = max(ratios + targets) * 3
    positions = list(range(len(shown)))[::-1]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(shown) + 1.4))
    ax.set_xscale("log")
    colors = ["tab:green" if r.met else "tab:red" for r in shown]
    ax.barh(positions, [r - low for r in ratios], left=low, color=colors, height=0.6)
    for pos, ratio, target in zip(positions, ratios, targets, strict=True):
        ax.plot([target, target], [pos - 0.4, pos + 0.4], color="black", linestyle="--", linewidth=1)
        ax.text(ratio, pos, f" {ratio:.2f}x", va="center", fontsize=8)
    ax.set_yticks(positions, [f"{r.backend}: {r.figure}" for r in shown], fontsize=8)
    ax.set_xlim(low, high)
    ax.set_xlabel("ratio ours / floor, log scale (dashed: target; green: met, red: missed)")
    ax.set_title("oci-executor vs the floor on the same engine (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"chart written to {path}")


def isolate_covalent_home() -> str:
    """Point HOME and Covalent's config at a temp folder before covalent is imported."""
    home = tempfile.mkdtemp(prefix="oci-bench-home-")
    os.environ["HOME"] = home
    os.environ["COVALENT_CONFIG_DIR"] = os.path.join(home, ".config", "covalent")
    os.environ["COVALENT_DISABLE_DASK"] = "1"
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "COVALENT_CACHE_DIR"):
        os.environ.pop(var, None)
    return home


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    minor = ".".join(platform.python_version_tuple()[:2])
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--image", default=os.environ.get("OCI_TEST_IMAGE", f"oci-executor-test/python:{minor}")
    )
    parser.add_argument("--tasks", type=int, default=20, help="samples of each cold and warm figure (20)")
    parser.add_argument("--backends", default=",".join(ALL_BACKENDS), help="comma list (all)")
    parser.add_argument("--skip-fanout", action="store_true", help="no Covalent server, no fan-out")
    parser.add_argument(
        "--slurm-ways", action="store_true", help="slurm: also time salloc, sbatch and a job submitted ahead"
    )
    parser.add_argument(
        "--slurm-fanout", action="store_true", help="slurm: a 200-electron fan-out on both nodes and on one"
    )
    parser.add_argument(
        "--observability-only", action="store_true", help="only 7.: live-output latency, tracing overhead"
    )
    parser.add_argument("--skip-200mb", action="store_true", help="only the 10 MB round trip")
    parser.add_argument("--fanout-runs", type=int, default=3, help="timed dispatches of each workflow (3)")
    parser.add_argument("--roundtrips", type=int, default=3, help="fresh processes per payload size (3)")
    parser.add_argument("--chart", metavar="PATH", help="draw the ratios as a bar chart (needs matplotlib)")
    parser.add_argument("--markdown", metavar="PATH", help="write the summary table there")
    parser.add_argument("--soak", action="store_true", help="only the soak (scripts/soak.py), nothing else")
    parser.add_argument(
        "--soak-tasks", type=int, default=5000, help="warm tasks per backend in the soak (5000)"
    )
    parser.add_argument(
        "--soak-electrons", type=int, default=500, help="electrons through the server in the soak (500)"
    )
    parser.add_argument(
        "--soak-server", default="docker", help="backends whose electrons go through the server (docker)"
    )
    parser.add_argument(
        "--environments", action="store_true", help="also the environment figures (packages=...)"
    )
    parser.add_argument("--roundtrip-child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def usable_targets(backends: str, image: str, run_id: str) -> list[Target]:
    """The targets named in ``backends`` that answer; a line saying why for each other one."""
    targets: list[Target] = []
    for target_id in [b.strip() for b in backends.split(",") if b.strip()]:
        target = make_target(target_id, run_id)
        problem = target if isinstance(target, str) else probe(target, image)
        if isinstance(target, Target) and problem is None:
            targets.append(target)
        else:
            print(f"{target_id}: skipped: {problem}")
    return targets


def source_version() -> str:
    """The checkout's commit, and whether oci_executor/ has changes not committed."""
    git = ["git", "-C", str(REPO)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "not a git checkout"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "oci_executor"], capture_output=True, text=True
    )
    return f"commit {head.stdout.strip()}" + (" + uncommitted oci_executor/ changes" if dirty.stdout else "")


def run(options: argparse.Namespace) -> int:
    import cloudpickle

    import oci_executor
    from oci_executor.pool import POOL

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # Traces and live logs of this run (dispatch "bench") go to a folder of their own.
    os.environ.setdefault("OCI_EXECUTOR_STATE_DIR", tempfile.mkdtemp(prefix="oci-bench-state-"))
    print(
        f"oci-executor {oci_executor.__version__} ({source_version()}) benchmark: image {options.image}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.platform()}"
    )
    run_id = f"{os.getpid()}-{int(time.time())}"
    targets = usable_targets(options.backends, options.image, run_id)
    before = {target.id: leftovers(target) for target in targets}
    if options.soak:
        ok = run_soak(targets, options)
        return check_clean(targets, before) or (0 if ok else 1)
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        server = False
        if not options.skip_fanout and targets:
            url = stack.enter_context(covalent_server(options.image))
            print(f"Covalent server for the fan-out: {url}")
            server = True
        print("\nhost")
        rows += guarded("tracing CPU", tracing_cpu_figure)
        for target in targets:
            where = f" at {target.address}" if target.is_engine else f" ({sys.executable})"
            print(f"\n{target.id}{where}")
            try:
                rows += measure_target(target, options, server)
            finally:
                POOL.drain()
    POOL.drain()
    if options.environments:
        import bench_environments

        helpers = SimpleNamespace(Row=Row, side_by_side=side_by_side, run_task=run_task)
        print("\nfirst build of an environment")
        rows += guarded("first build", lambda: bench_environments.first_build(helpers))
        print(f"  {bench_environments.disk_line()}")
    table = summary_table(rows)
    print("\nSummary (medians; ratio = ours / floor, measured side by side in this run)\n")
    print(table)
    if options.markdown:
        Path(options.markdown).write_text(table + "\n", encoding="utf-8")
        print(f"\ntable written to {options.markdown}")
    if options.chart:
        draw_chart(rows, options.chart)
    return check_clean(targets, before)


def run_soak(targets: Sequence[Target], options: argparse.Namespace) -> bool:
    """The soak (scripts/soak.py): warm tasks through this process, electrons through a server."""
    sys.path.insert(0, str(REPO / "scripts"))
    import soak

    from oci_executor.pool import POOL

    ok = True
    for target in targets:
        print(f"\n{target.id}: {options.soak_tasks} warm tasks through one process")
        try:
            ok &= soak.warm_soak(
                target.executor(options.image, keep_warm=60.0), add, options.soak_tasks, print
            )
        finally:
            POOL.drain()
    servers = [t for t in targets if t.id in options.soak_server.split(",")]
    if servers and options.soak_electrons:
        sys.path.insert(0, str(REPO))
        from tests.covalent_server import server_pids

        with covalent_server(options.image) as url:

            def server_pid() -> int:
                return max(server_pids(url))  # app.py, started by its shell wrapper

            for target in servers:
                print(
                    f"\n{target.id}: {options.soak_electrons} electrons through the Covalent server at {url}"
                )
                workflow = fanout_workflow(target.executor(options.image))
                ok &= soak.server_soak(workflow, server_pid, options.soak_electrons, print)
    print(f"\nsoak: {'on target' if ok else 'OFF TARGET (see above)'}")
    return ok


def check_clean(targets: Sequence[Target], before: dict[str, list[str]]) -> int:
    """Report anything of this run left on any engine; 1 if something was.

    The Covalent server's pool removes its warm containers after ``keep_warm``, or at its exit,
    so this waits up to ``SETTLE_TIMEOUT`` for them.
    """
    problems = 0
    for target in targets:
        left = wait_until_clean(target, before.get(target.id, []))
        what = f"label {target.label}" if target.is_engine else "local temp folders"
        print(f"left behind on {target.id} ({what}): {', '.join(left) if left else 'nothing'}")
        problems += bool(left)
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if options.roundtrip_child:  # a fresh process for one round trip; HOME is the parent's
        print(json.dumps(roundtrip_child(json.loads(options.roundtrip_child))))
        return 0
    home = isolate_covalent_home()
    # Environments in a store every engine's user can read (rootless Podman mounts as its user).
    envs = tempfile.mkdtemp(prefix="oci-bench-envs-", dir="/tmp")
    os.chmod(envs, 0o755)
    os.environ["OCI_EXECUTOR_ENV_DIR"] = envs
    try:
        return run(options)
    finally:
        prune_environments(envs)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(envs, ignore_errors=True)


def prune_environments(envs: str) -> None:
    """Remove the run's environments, and their copies on remote engines (named volumes there)."""
    from oci_executor.environments import store
    from oci_executor.pool import POOL

    POOL.drain()
    store.release_uses()
    argv = [sys.executable, "-m", "oci_executor.cli", "env", "prune"]
    done = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "OCI_EXECUTOR_ENV_DIR": envs}
    )
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0 or not last.endswith(", 0 in use"):
        print(f"env prune of {envs}: {done.stdout[-500:]} {done.stderr[-500:]}")


if __name__ == "__main__":
    sys.exit(main())
