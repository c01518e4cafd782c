"""The slurm backend's findings for ``oci-executor doctor``: the controller, the job's request
(partition, account, qos, limits: ``sbatch --test-only``), ``srun --overlap``, and one node
that runs rootless Podman and holds the image (a one-second job), or this host's store from
which a task would stream it there."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from oci_executor.backend import ContainerSpec
from oci_executor.backends.slurm import cli as s
from oci_executor.backends.slurm import images
from oci_executor.errors import OCIExecutorError
from oci_executor.findings import Finding, skipped

if TYPE_CHECKING:
    from oci_executor.backends.slurm import SlurmBackend

NAME = "slurm"
PROBE = """
img=$1
echo "node $SLURMD_NODENAME"
echo "rootless $(podman info --format '{{.Host.Security.Rootless}}' 2>&1 | tail -n 1)"
echo "version $(podman --version 2>&1 | awk '{print $NF}')"
if podman image exists "$img"; then echo "image yes"; else echo "image no"; fi
"""


def diagnose(backend: SlurmBackend, spec: ContainerSpec, pull_policy: str) -> list[Finding]:
    """Each finding with its fix, in the order a user fixes them."""
    if not s.installed():
        return [Finding(NAME, "engine", "skip", "Slurm's command line tools are not installed here")]
    try:
        backend.check()
    except OCIExecutorError as exc:
        fix = "`scontrol ping`; `munge -n | unmunge`; set SLURM_CONF (or the address option) to the cluster's slurm.conf"
        return [
            Finding(NAME, "engine", "fail", str(exc), fix),
            skipped(NAME, "request"),
            skipped(NAME, "node"),
        ]
    found = [Finding(NAME, "engine", "ok", f"{backend.describe()}: the controller answers")]
    found.append(_overlap(backend.cli))
    request = _request(backend.cli, spec)
    found.append(request)
    if request.status == "fail":
        return [*found, Finding(NAME, "node", "skip", "not checked: Slurm refuses the job's request")]
    return found + _node(backend.cli, spec, pull_policy)


def _overlap(cli: s.Cli) -> Finding:
    result = cli.run(["srun", "--help"])
    if "--overlap" in s.decode(result.stdout + result.stderr):
        return Finding(
            NAME, "overlap", "ok", "srun supports --overlap (the steps that exec and copy share the job)"
        )
    version = s.decode(cli.run(["srun", "--version"]).stdout).strip()
    return Finding(
        NAME,
        "overlap",
        "fail",
        f"srun has no --overlap ({version or 'version unknown'}): the backend needs Slurm 20.11 or later",
        "ask the cluster's admin to upgrade Slurm (20.11+)",
    )


def _request(cli: s.Cli, spec: ContainerSpec) -> Finding:
    """``sbatch --test-only`` with the job's options: partition, account, qos, size, time."""
    argv = [
        "sbatch",
        "--test-only",
        f"--job-name={s.JOB_NAME}",
        "--nodes=1",
        "--ntasks=1",
        "--output=/dev/null",
    ]
    argv += [f"--time={s.job_minutes(spec)}", *s.request_args(spec), *cli.as_user(), "--wrap=true"]
    result = cli.run(argv)
    text = " ".join(s.decode(result.stderr + result.stdout).split())
    if result.returncode == 0:
        return Finding(NAME, "request", "ok", f"Slurm accepts the job's request ({s.request(spec)}): {text}")
    error = s.alloc_error(text, spec, cli)
    message = str(error)
    fix = next(
        (part.strip() for part in message.split(". ")[1:2]), "see docs/slurm.md, Errors and their fixes"
    )
    return Finding(NAME, "request", "fail", message, fix)


def _node(cli: s.Cli, spec: ContainerSpec, pull_policy: str) -> list[Finding]:
    """One short job: its node's runtime folder, rootless Podman, and the image in the store."""
    argv = [
        *cli.run_as(),
        "srun",
        f"--job-name={s.JOB_NAME}",
        "--comment=oci-executor doctor",
        "--nodes=1",
        "--ntasks=1",
        "--quiet",
        "--time=1",
        *s.request_args(spec),
        "bash",
        "-c",
        s.NODE_PRELUDE + PROBE,
        "oci-executor-doctor",
        spec.image,
    ]
    try:
        result = subprocess.run(argv, capture_output=True, env=cli.env(), cwd="/", timeout=120)
    except subprocess.TimeoutExpired:
        return [
            Finding(
                NAME, "node", "fail", "a one-minute probe job did not run within 120 s", "`squeue` says why"
            )
        ]
    out = dict(line.split(" ", 1) for line in s.decode(result.stdout).splitlines() if " " in line)
    node = out.get("node", "?")
    if result.returncode != 0 and "rootless" not in out:
        error = s.node_error(s.decode(result.stderr), result.returncode, spec.image, node)
        message = str(error) if error else " ".join(s.decode(result.stderr).split())[-500:]
        return [
            Finding(NAME, "node", "fail", message, "the message says what the node lacks; see docs/slurm.md")
        ]
    findings = []
    if out.get("rootless") == "true":
        findings.append(
            Finding(NAME, "node", "ok", f"node {node} runs rootless Podman {out.get('version', '?')}")
        )
    else:
        findings.append(
            Finding(
                NAME,
                "node",
                "fail",
                f"Podman on node {node} does not run rootless: {out.get('rootless', '?')}",
                "the admin's checklist in docs/slurm.md (subuid/subgid, runtime folder, storage)",
            )
        )
        return findings
    if out.get("image") == "yes":
        findings.append(
            Finding(NAME, "image", "ok", f"image {spec.image} is in the rootless store on node {node}")
        )
    else:
        findings.append(_missing_image(cli, spec.image, node, pull_policy))
    return findings


def _missing_image(cli: s.Cli, image: str, node: str, pull_policy: str) -> Finding:
    """The node lacks the image: the first task there pulls it, or streams it from this host."""
    size, _ = images.local_size(cli, image)
    pull = "pulls it (pull_policy='missing') or, if it cannot, " if pull_policy != "never" else ""
    if size is not None:
        return Finding(
            NAME,
            "image",
            "warn",
            f"image {image} is not in the rootless store on node {node}: the first task there "
            f"{pull}streams it from this host's store ({size / 1e6:.0f} MB), once per node",
            f"`srun -w {node} podman load -i image.tar` (or `podman pull {image}` there) saves the first task that time",
        )
    return Finding(
        NAME,
        "image",
        "warn" if pull else "fail",
        f"image {image} is not in the rootless store on node {node}, nor in this host's store to stream it "
        f"from{': the first task there must pull it' if pull else ', and pull_policy is never'}",
        f"`podman pull {image}` (or `podman load -i image.tar`) here as the jobs' user: it is then streamed "
        "to the nodes that lack it",
    )
