"""Every executor option, defined once: the shared ones here (:data:`OPTIONS`), and each
backend's own in its ``Backend.options`` (found through the registry).

From them come the covalent.conf defaults (:func:`defaults`), validation with errors naming the
option (:func:`parse`), the :class:`ContainerSpec` (:func:`container_spec`; a backend's own
options travel in its ``backend_options``) and the options table of ``docs/options.md``
(:func:`markdown_table`: one column per backend, from each backend's ``option_notes``; a test
checks the page). Run ``python -m oci_executor.settings`` to print the table.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from oci_executor import parsing as o
from oci_executor import secrets as s
from oci_executor.backend import PULL_POLICIES, Backend, BackendConfig, ContainerSpec
from oci_executor.errors import ConfigurationError
from oci_executor.parsing import Option
from oci_executor.pool import REUSE_SCOPES
from oci_executor.task import host_python_version

DEFAULT_PIDS_LIMIT = 2048
"""Processes (and threads) a container may hold by default: Podman's own default, everywhere."""

OPTIONS: tuple[Option, ...] = (
    Option(
        "image",
        "str",
        f"python:{host_python_version()}-slim",
        o.check_image,
        "the image tasks run in (any image with the host's Python major.minor)",
    ),
    Option(
        "backend",
        "str",
        "auto",
        o.text("backend", empty_ok=False),
        'which backend runs the tasks: a registered name, or `"auto"` (tries the registered backends by priority: podman, docker, local)',
    ),
    Option(
        "address",
        "str",
        "",
        o.text("address"),
        "where the backend's engine answers; empty: the backend's default",
    ),
    Option(
        "ssh_identity",
        "str",
        "",
        o.text("ssh_identity"),
        "private key file for an `ssh://` address (`ssh -i`)",
    ),
    Option(
        "pull_policy",
        "str",
        "missing",
        o.choice("pull_policy", PULL_POLICIES),
        "`missing`: pull if absent; `always`: pull for each new container; `never`: local only",
    ),
    Option(
        "python",
        "str",
        "python3",
        o.text("python", empty_ok=False),
        "interpreter in the image: the container's main process, the resident runner",
    ),
    Option(
        "idle_timeout",
        "float",
        60.0,
        lambda v: o.check_seconds(v, "idle_timeout"),
        "the runner ends if no host attaches within this many seconds (after that, it ends the moment its host's attach stream closes)",
    ),
    Option(
        "max_lifetime",
        "float",
        86400.0,
        lambda v: o.check_seconds(v, "max_lifetime"),
        "the runner (and so the container) ends after this long in any case; the pool hands no task to a runner within 30 s of it",
    ),
    Option(
        "env",
        "dict[str, str]",
        {},
        lambda v: o.check_string_map(v, "env"),
        "environment variables of the task",
    ),
    Option(
        "secrets",
        "list[str]",
        [],
        s.check_names,
        "names of variables whose values the task's process alone sees in its environment: read when the task runs from `secrets_file`, else from the environment of the process that runs it (the Covalent server), and sent over the runner's channel; never in the container's configuration (see docs/secrets.md)",
    ),
    Option(
        "secrets_file",
        "str",
        "",
        o.text("secrets_file"),
        "a file of `NAME=VALUE` lines on the host that runs the task, read for `secrets` at each task; empty: the environment only",
    ),
    Option(
        "pids_limit",
        "int",
        DEFAULT_PIDS_LIMIT,
        o.check_pids_limit,
        "processes and threads the container may hold; a task that forks past it fails with `ProcessLimitError`; `-1`: no limit (see docs/options.md)",
    ),
    Option(
        "volumes",
        "list",
        [],
        o.checked(o.parse_volumes),
        "host folders mounted into the container: `host:container[:ro]`",
    ),
    Option(
        "selinux_relabel",
        "bool",
        False,
        o.flag("selinux_relabel"),
        "relabel each volume for SELinux (`z`)",
    ),
    Option(
        "userns",
        "str",
        "",
        o.text("userns"),
        "user namespace mode; empty: the engine's default (see `volumes` for rootless engines)",
    ),
    Option(
        "workdir",
        "str",
        "",
        o.text("workdir"),
        "the folder tasks run in, created if missing",
    ),
    Option(
        "user",
        "str",
        "",
        lambda v: "" if v in (None, "") else str(v),
        'the user tasks run as (`"uid[:gid]"` or a name in the image)',
    ),
    Option(
        "cpus",
        "float",
        0,
        o.checked(o.parse_cpus),
        "CPU limit (fractions allowed)",
    ),
    Option(
        "memory",
        "int or str",
        "",
        o.checked(lambda v: o.parse_size(v, "memory")),
        '`"512m"`, `"2g"` or bytes: the memory limit, with no swap beyond it',
    ),
    Option(
        "gpus",
        '`"all"`, int, or list of IDs',
        "",
        o.checked(o.parse_gpus),
        "GPUs for the container: all, a count, or device IDs",
    ),
    Option(
        "network",
        "str",
        "",
        o.text("network"),
        "`none`, `host`, `bridge` or a network's name; empty: the engine's default",
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
        o.checked(lambda v: o.parse_size(v, "shm_size")),
        "size of `/dev/shm`",
    ),
    Option(
        "read_only",
        "bool",
        False,
        o.flag("read_only"),
        "a read-only root file system, with a writable tmpfs at `/tmp` (`rw,nosuid,nodev`, mode 1777)",
    ),
    Option(
        "reuse",
        "str",
        "dispatch",
        o.choice("reuse", REUSE_SCOPES),
        'which tasks a warm container serves: `"dispatch"` (tasks of one dispatch with identical options), `"process"` (any task with identical options in this process), `"never"` (a fresh container per task)',
    ),
    Option(
        "max_containers",
        "int",
        0,
        lambda v: o.check_count(v, "max_containers"),
        "containers alive at once per pool key (same options and scope); more tasks wait, first come first served; `0`: the host's CPU count",
    ),
    Option(
        "keep_warm",
        "float",
        10.0,
        lambda v: o.check_seconds(v, "keep_warm", allow_zero=True),
        "seconds an idle warm container waits for another task before it is removed (in the background); `0`: removed after each task",
    ),
    Option(
        "ship_modules",
        "bool",
        True,
        o.flag("ship_modules"),
        "modules the task's pickles reference that the image lacks travel with it: your project's modules and pure-Python distributions as source (see [what runs where](what-runs-where.md)); `False`: only the image's",
    ),
    Option(
        "extra_modules",
        "list[str]",
        [],
        lambda v: o.check_string_list(v, "extra_modules"),
        'modules to ship as source with every task whatever the image has, e.g. `["mypkg"]` (a module imported only inside a function is not in the pickle)',
    ),
    Option(
        "packages",
        "list[str]",
        [],
        lambda v: o.check_string_list(v, "packages"),
        "packages the task needs, as pip takes them (`[\"numpy==2.1.*\"]`): resolved and downloaded on the host with its pip configuration, installed once per content key into a read-only folder mounted at `/opt/oci-executor/env` (local: named directly, never the host's site-packages) and put first on `sys.path`; merged with the task's `DepsPip` (see docs/environments.md)",
    ),
    Option(
        "requirements",
        "str",
        "",
        o.text("requirements"),
        "path of a requirements file (package lines only), read on the machine that runs the tasks; merged with `packages`",
    ),
    Option(
        "wheels_only",
        "bool",
        True,
        o.flag("wheels_only"),
        "install wheels only (a package without a wheel for the image is an error naming it); `false`: pip may build wheels from source distributions on the host",
    ),
    Option(
        "queue_timeout",
        "float",
        600.0,
        lambda v: o.check_seconds(v, "queue_timeout"),
        "seconds a container may wait for a batch scheduler to start it; then creation fails",
    ),
)
"""The options every backend shares, in the order the docs list them (the backends' own follow)."""


@functools.cache
def all_options() -> tuple[Option, ...]:
    """The shared options, then each registered backend's own (``Backend.options``)."""
    from oci_executor.registry import default_registry

    registry = default_registry()
    added = [option for name in registry.names() for option in registry.get(name).options]
    return OPTIONS + tuple(added)


@functools.cache
def owners() -> dict[str, str]:
    """The backend each backend-added option belongs to, by option name."""
    from oci_executor.registry import default_registry

    registry = default_registry()
    return {option.name: name for name in registry.names() for option in registry.get(name).options}


def __getattr__(name: str) -> tuple[str, ...]:
    if name == "NAMES":  # every option's name; needs the registry, so computed on first use
        return tuple(option.name for option in all_options())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _by_name() -> dict[str, Option]:
    return {option.name: option for option in all_options()}


def defaults() -> dict[str, Any]:
    """Every option's default, as written into covalent.conf (a fresh copy each call)."""
    import copy

    return {option.name: copy.deepcopy(option.default) for option in all_options()}


def parse(values: Mapping[str, Any]) -> dict[str, Any]:
    """Check every option in ``values`` (unknown names are an error); return the stored values."""
    known = _by_name()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)}; the options are: {', '.join(known)}"
        )
    checked = {name: known[name].parse(value) for name, value in values.items()}
    both = sorted(set(checked.get("secrets", ())) & set(checked.get("env", {})))
    if both:
        raise ConfigurationError(
            f"{', '.join(both)} in both env and secrets: env values are visible in the container's "
            "configuration (inspect); keep it in secrets only"
        )
    return checked


def backend_config(values: Mapping[str, Any]) -> BackendConfig:
    """The engine address and pull policy handed to the backend."""
    return BackendConfig(
        address=values["address"] or None,
        pull_policy=values["pull_policy"],
        ssh_identity=values["ssh_identity"] or None,
    )


def backend_options(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The backend-added options set to other than their default, by the backend that adds them."""
    found: dict[str, dict[str, Any]] = {}
    for option in all_options()[len(OPTIONS) :]:
        value = values.get(option.name, option.default)
        if value != option.default:
            found.setdefault(owners()[option.name], {})[option.name] = value
    return found


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
        pids_limit=None if values["pids_limit"] == -1 else values["pids_limit"],
        queue_timeout=float(values["queue_timeout"]),
        backend_options=backend_options(values),
    )


def _shown(option: Option) -> str:
    import json

    if option.name == "image":
        return "`python:<host X.Y>-slim`"
    value = option.default
    value = int(value) if isinstance(value, float) and value.is_integer() else value
    return f"`{json.dumps(value)}`"


def markdown_table() -> str:
    """The options table of ``docs/options.md``: the built-in backends' registry, one column
    per backend (its ``option_notes``, else its ``option_note_default``)."""
    from oci_executor.registry import builtin_registry

    registry = builtin_registry()
    backends = [registry.get(name) for name in registry.names()]
    backends.sort(key=lambda b: (not b.isolated, -b.priority))
    added = {option.name: b.name for b in backends for option in b.options}
    options = OPTIONS + tuple(option for b in backends for option in b.options)

    def cell(backend: type[Backend], option: Option) -> str:
        owner = added.get(option.name)
        if owner is not None and owner != backend.name:
            return f"error ({owner} only)"
        return backend.option_notes.get(option.name, backend.option_note_default)

    rows = [
        "| option | type | default | what it does | " + " | ".join(b.name for b in backends) + " |",
        "|---|---|---|---|" + "---|" * len(backends),
    ]
    rows += [
        f"| `{x.name}` | {x.type} | {_shown(x)} | {x.doc} | "
        + " | ".join(cell(b, x) for b in backends)
        + " |"
        for x in options
    ]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
