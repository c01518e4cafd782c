"""The options the slurm backend adds (partition, account, qos, slurm_args), how it treats the
shared ones, and how it reads its own from a spec (``ContainerSpec.backend_options["slurm"]``)."""

from __future__ import annotations

from dataclasses import dataclass

from oci_executor.backend import ContainerSpec
from oci_executor.parsing import Option, check_string_list, text

NAME = "slurm"

OPTIONS: tuple[Option, ...] = (
    Option("partition", "str", "", text("partition"), "`srun -p`; empty: the cluster's default partition"),
    Option("account", "str", "", text("account"), "`srun -A`"),
    Option("qos", "str", "", text("qos"), "`srun --qos`"),
    Option(
        "slurm_args",
        "list[str]",
        [],
        lambda v: check_string_list(v, "slurm_args"),
        'extra `srun` arguments (of the job allocation), e.g. `["--constraint=avx2"]`',
    ),
)

NOTES: dict[str, str] = {
    "image": "image in the node user's rootless store, pullable there, or streamed there from the user's store on the submit host",
    "backend": '`"slurm"` (never picked by `"auto"`)',
    "pids_limit": "`podman run --pids-limit` and `--ulimit nproc` (rootless, see docs/options.md)",
    "address": "path of the cluster's `slurm.conf` (as `SLURM_CONF`); empty: `SLURM_CONF`, else Slurm's default; root only: `USER@PATH` runs the jobs as USER",
    "ssh_identity": "not used (the Slurm command line tools reach the cluster)",
    "python": "yes (its version is checked on the node)",
    "packages": "yes, built into the shared folder `OCI_EXECUTOR_ENV_DIR` names (every node mounts it)",
    "max_lifetime": "yes, and the job's `--time` (whole minutes); with a `time_limit`, at most `time_limit` + 60 s",
    "cpus": "`srun -c` (rounded up; Slurm enforces it, not Podman)",
    "memory": "`srun --mem` (MiB, rounded up; Slurm enforces it, not Podman)",
    "gpus": "`srun --gpus` (count), plus Podman's CDI devices",
    "keep_warm": "yes (the job ends with its container)",
    "queue_timeout": "seconds a job may stay pending; then it is cancelled and the error gives squeue's reason",
}


@dataclass(frozen=True)
class SlurmOptions:
    """The slurm backend's own options of one spec."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    slurm_args: tuple[str, ...] = ()


def slurm_options(spec: ContainerSpec) -> SlurmOptions:
    """This backend's options in ``spec`` (absent ones: the cluster's defaults)."""
    given = spec.backend_options.get(NAME, {})
    return SlurmOptions(
        partition=given.get("partition") or None,
        account=given.get("account") or None,
        qos=given.get("qos") or None,
        slurm_args=tuple(given.get("slurm_args") or ()),
    )
