"""Every executor option, defined once: name, type, default, parser, and what it does.

From :data:`OPTIONS` come the covalent.conf defaults (:func:`defaults`), validation with
errors naming the option (:func:`parse`), the :class:`ContainerSpec` (:func:`container_spec`)
and the options table of ``docs/options.md`` (:func:`markdown_table`; a test checks the page).
Run ``python -m oci_executor.settings`` to print the table.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from oci_executor import options as o
from oci_executor.backend import BackendConfig, ContainerSpec, PullPolicy
from oci_executor.errors import ConfigurationError
from oci_executor.task import host_python_version

PULL_POLICIES: tuple[str, ...] = typing.get_args(PullPolicy)
REUSE_SCOPES: tuple[str, ...] = ("dispatch", "never", "process")


@dataclass(frozen=True)
class Option:
    """One option: its parser returns the stored (JSON-able) value or raises naming it."""

    name: str
    type: str
    default: Any
    parse: Callable[[Any], Any]
    docker: str
    podman: str = "same"
    local: str = "unused"
    slurm: str = "as Podman (rootless, on the node)"


def _text(name: str, *, empty_ok: bool = True) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        value = "" if value is None else value
        if not isinstance(value, str) or not (value or empty_ok):
            raise ConfigurationError(f"{name}={value!r} must be a{'' if empty_ok else ' non-empty'} string")
        return value

    return parse


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ConfigurationError(f"{name}={value!r} is not one of {', '.join(choices)}")
        return str(value)

    return parse


def _flag(name: str) -> Callable[[Any], bool]:
    def parse(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ConfigurationError(f"{name}={value!r} must be true or false")
        return value

    return parse


def _checked(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Check with ``parse`` but store the value as given (JSON-able, as the user wrote it)."""

    def check(value: Any) -> Any:
        parse(value)
        return value

    return check


OPTIONS: tuple[Option, ...] = (
    Option(
        "image",
        "str",
        f"python:{host_python_version()}-slim",
        o.check_image,
        "image to create from",
        local="ignored (runs the host's Python)",
        slurm="image in the node user's rootless store (or pullable there)",
    ),
    Option(
        "backend",
        "str",
        "auto",
        _text("backend", empty_ok=False),
        '`"docker"`',
        '`"podman"`',
        '`"local"`; `"auto"` tries the registered backends by priority: podman, docker, local',
        '`"slurm"` (never picked by `"auto"`)',
    ),
    Option(
        "address",
        "str",
        "",
        _text("address"),
        "Engine URL (`unix://`, `tcp://`, `ssh://user@host[:port]`, see docs/remote.md); empty: `DOCKER_HOST`, else `unix:///var/run/docker.sock`",
        "service URL (`unix://`, `tcp://`, `ssh://user@host[:port]/path/to/podman.sock`) or a connection name (`podman system connection add`); empty: `CONTAINER_HOST`, else your rootless socket (`$XDG_RUNTIME_DIR/podman/podman.sock`, `/run/user/UID/...` or `/tmp/podman-run-UID/...`), else (root only) `unix:///run/podman/podman.sock`; with neither set and no socket answering, a transient service",
        slurm="path of the cluster's `slurm.conf` (as `SLURM_CONF`); empty: `SLURM_CONF`, else Slurm's default; root only: `USER@PATH` runs the jobs as USER",
    ),
    Option(
        "ssh_identity",
        "str",
        "",
        _text("ssh_identity"),
        "private key file for an `ssh://` address (`ssh -i`); empty: your ssh agent and `~/.ssh` keys",
        "same; empty: the connection's identity, else `CONTAINER_SSHKEY`, else your ssh agent and `~/.ssh` keys",
        slurm="not used (the Slurm command line tools reach the cluster)",
    ),
    Option(
        "pull_policy",
        "str",
        "missing",
        _choice("pull_policy", PULL_POLICIES),
        "`missing`: pull if absent; `always`: pull for each new container; `never`: local only",
    ),
    Option(
        "python",
        "str",
        "python3",
        _text("python", empty_ok=False),
        "interpreter in the image: the container's main process, the resident runner",
        local="unused (the host's `sys.executable`)",
        slurm="same (its version is checked on the node)",
    ),
    Option(
        "idle_timeout",
        "float",
        60.0,
        lambda v: o.check_seconds(v, "idle_timeout"),
        "the runner ends if no host attaches within this many seconds (after that, it ends the moment its host's attach stream closes)",
        local="same, for the runner subprocess",
    ),
    Option(
        "max_lifetime",
        "float",
        86400.0,
        lambda v: o.check_seconds(v, "max_lifetime"),
        "the runner (and so the container) ends after this long in any case; the pool hands no task to a runner within 30 s of it",
        local="same",
        slurm="same, and the job's `--time` (whole minutes); with a `time_limit`, at most `time_limit` + 60 s",
    ),
    Option(
        "env",
        "dict[str, str]",
        {},
        lambda v: o.check_string_map(v, "env"),
        "`environment`",
        "`environment`",
        "added to the runner's environment",
    ),
    Option(
        "volumes",
        "list",
        [],
        _checked(o.parse_volumes),
        "`volumes={host: {bind, mode: ro/rw}}` (bind mounts)",
        '`volumes={host: {bind, extended_mode: [ro/rw]}}`; rootless: `userns_mode="keep-id"` unless `userns` is set',
        "error",
    ),
    Option(
        "selinux_relabel",
        "bool",
        False,
        _flag("selinux_relabel"),
        "adds `z` to each volume's mode",
        "adds `z` to each volume's options",
    ),
    Option(
        "userns",
        "str",
        "",
        _text("userns"),
        "`userns_mode` (e.g. `host`)",
        "`userns_mode` (e.g. `keep-id`, `auto`); empty: automatic, see `volumes`",
        "error",
    ),
    Option(
        "workdir",
        "str",
        "",
        _text("workdir"),
        "`working_dir` (created by Docker)",
        "`working_dir`, created owned by `user` if missing",
        "the runner creates it and runs the task there",
    ),
    Option(
        "user",
        "str",
        "",
        lambda v: "" if v in (None, "") else str(v),
        '`user` (`"uid[:gid]"` or a name in the image)',
        "`user`",
        "error",
    ),
    Option(
        "cpus",
        "float",
        0,
        _checked(o.parse_cpus),
        "`cpu_period=100000`, `cpu_quota=cpus*100000`",
        "same; rootless on cgroup v1: error",
        "error",
        "`sbatch -c` (rounded up; Slurm enforces it, not Podman)",
    ),
    Option(
        "memory",
        "int or str",
        "",
        _checked(lambda v: o.parse_size(v, "memory")),
        '`mem_limit` and `memswap_limit` (no swap beyond it); `"512m"`, `"2g"` or bytes',
        "same; rootless on cgroup v1: error",
        "error",
        "`sbatch --mem` (MiB, rounded up; Slurm enforces it, not Podman)",
    ),
    Option(
        "gpus",
        '`"all"`, int, or list of IDs',
        "",
        _checked(o.parse_gpus),
        '`device_requests=[DeviceRequest(count or device_ids, capabilities=[["gpu"]])]` (`--gpus`)',
        "CDI `devices`: `nvidia.com/gpu=all`, `=0..N-1`, or `=ID` each",
        "error",
        "`sbatch --gpus` (count), plus Podman's CDI devices",
    ),
    Option(
        "network",
        "str",
        "",
        _text("network"),
        "`network_mode`: `none`, `host`, `bridge` or a network's name",
        "`none`/`host`/`bridge` as `network_mode`; a name as `networks={name: {}}`",
        "error",
    ),
    Option(
        "labels",
        "dict[str, str]",
        {},
        lambda v: o.check_string_map(v, "labels"),
        "added to ours (`io.oci-executor.*`, which win on conflict)",
    ),
    Option(
        "shm_size",
        "int or str",
        "",
        _checked(lambda v: o.parse_size(v, "shm_size")),
        "`shm_size` in bytes",
        local="error",
    ),
    Option(
        "read_only",
        "bool",
        False,
        _flag("read_only"),
        "`read_only=True` and a tmpfs at `/tmp` (mode 1777)",
        "`read_only=True` and a tmpfs mount at `/tmp`",
        "error",
    ),
    Option(
        "reuse",
        "str",
        "dispatch",
        _choice("reuse", REUSE_SCOPES),
        'which tasks a warm container serves: `"dispatch"` (tasks of one dispatch with identical options), `"process"` (any task with identical options in this process), `"never"` (a fresh container per task)',
        local="same (the runner subprocess)",
    ),
    Option(
        "max_containers",
        "int",
        0,
        lambda v: o.check_count(v, "max_containers"),
        "containers alive at once per pool key (same options and scope); more tasks wait, first come first served; `0`: the host's CPU count",
        local="same",
    ),
    Option(
        "keep_warm",
        "float",
        10.0,
        lambda v: o.check_seconds(v, "keep_warm", allow_zero=True),
        "seconds an idle warm container waits for another task before it is removed (in the background); `0`: removed after each task",
        local="same",
        slurm="same (the job ends with its container)",
    ),
    Option(
        "packages",
        "list[str]",
        [],
        lambda v: o.check_string_list(v, "packages"),
        'packages the task needs, as pip takes them (`["numpy==2.1.*"]`): resolved and downloaded on the host, installed once per content key into a read-only folder mounted at `/opt/oci-executor/env` and put first on `sys.path` (see docs/environments.md); merged with the task\'s `DepsPip`',
        local="same, the folder named directly (not the host's site-packages)",
        slurm="same, from the shared folder `OCI_EXECUTOR_ENV_DIR` names (see docs/environments.md)",
    ),
    Option(
        "requirements",
        "str",
        "",
        _text("requirements"),
        "path of a requirements file (package lines only), read on the machine that runs the tasks; merged with `packages`",
        local="same",
        slurm="same, from the shared folder `OCI_EXECUTOR_ENV_DIR` names (see docs/environments.md)",
    ),
    Option(
        "wheels_only",
        "bool",
        True,
        _flag("wheels_only"),
        "install wheels only (a package without a wheel for the image is an error naming it); `false`: pip may build wheels from source distributions on the host",
        local="same",
        slurm="same, from the shared folder `OCI_EXECUTOR_ENV_DIR` names (see docs/environments.md)",
    ),
    Option(
        "partition",
        "str",
        "",
        _text("partition"),
        "error (slurm only)",
        "error (slurm only)",
        "error (slurm only)",
        "`sbatch -p`; empty: the cluster's default partition",
    ),
    Option(
        "account",
        "str",
        "",
        _text("account"),
        "error (slurm only)",
        "error (slurm only)",
        "error (slurm only)",
        "`sbatch -A`",
    ),
    Option(
        "qos",
        "str",
        "",
        _text("qos"),
        "error (slurm only)",
        "error (slurm only)",
        "error (slurm only)",
        "`sbatch --qos`",
    ),
    Option(
        "slurm_args",
        "list[str]",
        [],
        lambda v: o.check_string_list(v, "slurm_args"),
        "error (slurm only)",
        "error (slurm only)",
        "error (slurm only)",
        'extra `sbatch` arguments, e.g. `["--constraint=avx2"]`',
    ),
    Option(
        "queue_timeout",
        "float",
        600.0,
        lambda v: o.check_seconds(v, "queue_timeout"),
        "unused (no queue)",
        "unused (no queue)",
        "unused (no queue)",
        "seconds a job may stay pending; then it is cancelled and the error gives squeue's reason",
    ),
)
"""Every option, in the order the docs list them."""

NAMES: tuple[str, ...] = tuple(option.name for option in OPTIONS)
_BY_NAME = {option.name: option for option in OPTIONS}


def defaults() -> dict[str, Any]:
    """Every option's default, as written into covalent.conf (a fresh copy each call)."""
    import copy

    return {option.name: copy.deepcopy(option.default) for option in OPTIONS}


def parse(values: Mapping[str, Any]) -> dict[str, Any]:
    """Check every option in ``values`` (unknown names are an error); return the stored values."""
    unknown = sorted(set(values) - set(NAMES))
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)}; the options are: {', '.join(NAMES)}"
        )
    return {name: _BY_NAME[name].parse(value) for name, value in values.items()}


def backend_config(values: Mapping[str, Any]) -> BackendConfig:
    """The engine address and pull policy handed to the backend."""
    return BackendConfig(
        address=values["address"] or None,
        pull_policy=values["pull_policy"],
        ssh_identity=values["ssh_identity"] or None,
    )


def container_spec(values: Mapping[str, Any], labels: Mapping[str, str]) -> ContainerSpec:
    """The container to create, from checked option ``values`` plus ``labels`` of ours."""
    return ContainerSpec(
        image=values["image"],
        labels={**values["labels"], **labels},
        env=dict(values["env"]),
        python=values["python"],
        idle_timeout=float(values["idle_timeout"]),
        max_lifetime=float(values["max_lifetime"]),
        volumes=o.parse_volumes(values["volumes"]),
        selinux_relabel=values["selinux_relabel"],
        userns=values["userns"] or None,
        workdir=values["workdir"] or None,
        user=values["user"] or None,
        cpus=o.parse_cpus(values["cpus"]),
        memory=o.parse_size(values["memory"], "memory"),
        shm_size=o.parse_size(values["shm_size"], "shm_size"),
        gpus=o.parse_gpus(values["gpus"]),
        network=values["network"] or None,
        read_only=values["read_only"],
        partition=values["partition"] or None,
        account=values["account"] or None,
        qos=values["qos"] or None,
        slurm_args=tuple(values["slurm_args"]),
        queue_timeout=float(values["queue_timeout"]),
    )


def _shown(option: Option) -> str:
    import json

    if option.name == "image":
        return "`python:<host X.Y>-slim`"
    value = option.default
    value = int(value) if isinstance(value, float) and value.is_integer() else value
    return f"`{json.dumps(value)}`"


def markdown_table() -> str:
    """The options table of ``docs/options.md``."""
    rows = ["| option | type | default | Docker | Podman | local | Slurm |", "|---|---|---|---|---|---|---|"]
    rows += [
        f"| `{x.name}` | {x.type} | {_shown(x)} | {x.docker} | {x.podman} | {x.local} | {x.slurm} |"
        for x in OPTIONS
    ]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
