"""Slurm figures of scripts/benchmark.py: the ways to get a job that starts a container, side by side.

A cold task on ``backend="slurm"`` needs an allocation on a node and a container in it. Each
way below ends with ``podman run --rm IMAGE python3 -c pass`` having run in its job, and is
timed against the floor, the same command run by one ``srun`` (which allocates and starts its
step at once):

- ``salloc --no-shell`` then one ``srun --jobid J --overlap`` step;
- ``sbatch`` a job script, ``squeue`` until it runs, then one step in it (the first slurm
  backend's way; Slurm starts a batch job from its scheduler loop, not at submission);
- a job submitted ahead (``sbatch`` while the previous task ran), so only its step is timed:
  the best any "spare job" scheme can do, paid for with a job held idle.

The backend's own cold task (one ``srun`` whose step starts the container and carries the
channel) is the ``cold task vs run --rm`` row of scripts/benchmark.py.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

JOB_NAME = "oci-executor"
HOLD = "#!/bin/bash\nsleep 600 & wait $!\n"


def _run(argv: Sequence[str], env: dict[str, str], stdin: str | None = None) -> str:
    """Run a Slurm tool; its stdout and stderr joined (salloc reports the job on stderr)."""
    done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, env=env, cwd="/tmp")
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {done.stderr.strip()[-500:]}")
    return done.stdout + done.stderr


def _wait_running(job: str, env: dict[str, str]) -> None:
    """Poll ``squeue`` (20 ms, growing to 100 ms) until ``job`` runs: what the backend did."""
    delay = 0.02
    deadline = time.monotonic() + 120
    while _run(["squeue", "--noheader", f"--jobs={job}", "--format=%T"], env).strip() != "RUNNING":
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job} did not start within 120 s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


def ways(
    user_args: Sequence[str], step: Callable[[str], list[str]], env: dict[str, str]
) -> dict[str, Callable[[], str]]:
    """Each way as a callable that returns its job id (cancelled afterwards, untimed).

    ``step(job)`` is the argv of an ``srun --jobid job --overlap`` step running the container.
    """

    def salloc() -> str:
        out = _run(["salloc", "--no-shell", f"--job-name={JOB_NAME}", "--time=5", *user_args], env)
        job = out.split("Granted job allocation ")[1].split()[0]
        _run(step(job), env)
        return job

    def sbatch() -> str:
        argv = ["sbatch", "--parsable", f"--job-name={JOB_NAME}", "--output=/dev/null", "--time=5"]
        job = _run([*argv, *user_args], env, stdin=HOLD).strip().split(";")[0]
        _wait_running(job, env)
        _run(step(job), env)
        return job

    spare: list[str] = []

    def ahead() -> str:
        job = spare.pop()
        _wait_running(job, env)
        _run(step(job), env)
        return job

    def submit_ahead() -> None:
        argv = ["sbatch", "--parsable", f"--job-name={JOB_NAME}", "--output=/dev/null", "--time=5"]
        spare.append(_run([*argv, *user_args], env, stdin=HOLD).strip().split(";")[0])
        time.sleep(1.0)  # a task's worth of time for it to start (untimed)

    ahead.prepare = submit_ahead  # type: ignore[attr-defined]
    return {
        "salloc --no-shell, then a step": salloc,
        "sbatch, squeue until it runs, then a step": sbatch,
        "a job submitted ahead, then a step": ahead,
    }


def measure(
    floor: Callable[[], Any],
    user_args: Sequence[str],
    step: Callable[[str], list[str]],
    env: dict[str, str],
    n: int,
) -> dict[str, tuple[list[float], list[float]]]:
    """``n`` samples of each way and of the floor, alternating; jobs cancelled (untimed)."""
    found = ways(user_args, step, env)
    results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in found}
    for i in range(n):
        for name, way in found.items():
            prepare = getattr(way, "prepare", None)
            if prepare is not None:
                prepare()
            ours, floors = results[name]
            pair: list[tuple[Callable[[], Any], list[float]]] = [(way, ours), (floor, floors)]
            for fn, times in pair if i % 2 == 0 else reversed(pair):
                start = time.perf_counter()
                job = fn()
                times.append(time.perf_counter() - start)
                if isinstance(job, str):
                    subprocess.run(["scancel", job], env=env, capture_output=True, check=False)
    return results
