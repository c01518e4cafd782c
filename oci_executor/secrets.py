"""Secrets: values only the task's process sees, in its environment.

``secrets=["API_TOKEN"]`` names the variables; their values are read when a task runs, in
the process that drives it (the Covalent server): from ``secrets_file`` (``NAME=VALUE``
lines) if it is set and names them, else from that process's environment. They travel over
the runner's channel with the task and are set in the task process's environment only, so
they are in no container configuration, command line, label, job handle, log line, error
message or Slurm job record, and not in what Covalent stores of the executor (names only).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from oci_executor.errors import ConfigurationError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_seen: set[str] = set()
"""Every secret name this process has resolved: kept out of environments we hand on."""


def check_names(value: object, env: Mapping[str, str] | None = None) -> list[str]:
    """The ``secrets`` option: a list of environment variable names, none also in ``env``."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigurationError(f'secrets={value!r} must be a list of variable names, e.g. ["API_TOKEN"]')
    for name in value:
        if not isinstance(name, str) or not NAME.match(name):
            raise ConfigurationError(
                f"secrets has {name!r}: each item must be an environment variable name "
                "(letters, digits and _, not starting with a digit); the value is read at run time"
            )
    return list(value)


def read_file(path: str) -> dict[str, str]:
    """``NAME=VALUE`` lines (blank lines and ``#`` comments skipped); values taken as written."""
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ConfigurationError(
            f"secrets_file {path!r} cannot be read ({exc.strerror}): create it (NAME=VALUE lines, "
            "readable by the user that runs the Covalent server) or unset secrets_file"
        ) from None
    values: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip().removeprefix("export ").strip()
        if not sep or not NAME.match(name):
            # Never quote the line: it may hold a value.
            raise ConfigurationError(
                f"secrets_file {path!r}, line {number}: not NAME=VALUE; write one variable per line"
            )
        values[name] = value
    return values


def resolve(names: Sequence[str], path: str = "") -> dict[str, str]:
    """The values of ``names``: from ``path`` if given and it has them, else this process's
    environment. A missing one is a :class:`ConfigurationError` naming it (never a value)."""
    if not names:
        return {}
    _seen.update(names)
    from_file = read_file(path) if path else {}
    values: dict[str, str] = {}
    for name in names:
        value = from_file.get(name, os.environ.get(name))
        if value is None:
            where = f"in secrets_file {path!r} nor " if path else ""
            raise ConfigurationError(
                f"secret {name!r} is not set {where}in the environment of the process that runs "
                "the task (the Covalent server): export it in the shell that starts the server, "
                "add it to secrets_file, or remove it from secrets"
            )
        values[name] = value
    return values


def scrubbed_environ() -> dict[str, str]:
    """This process's environment without the secrets it resolved (for processes we start)."""
    return {key: value for key, value in os.environ.items() if key not in _seen}
