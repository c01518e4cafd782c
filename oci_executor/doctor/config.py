"""covalent.conf's ``[executors.oci]``: where it is, what it says, and whether each value is valid.

The file is read as TOML without importing Covalent (the engine core never does); its path
follows Covalent's own rule. Values are checked with :func:`oci_executor.settings.parse`, so a
finding says exactly what the executor would raise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from oci_executor import settings
from oci_executor.errors import ConfigurationError
from oci_executor.findings import Finding
from oci_executor.registry import AUTO, default_registry

SECTION = "executors.oci"


def config_path() -> str:
    """Where Covalent reads its config: ``COVALENT_CONFIG_DIR`` (else ``XDG_CONFIG_DIR``, else
    ``~/.config/covalent``) ``/covalent.conf``, as ``covalent._shared_files.defaults`` says."""
    folder = (
        os.environ.get("COVALENT_CONFIG_DIR")
        or os.environ.get("XDG_CONFIG_DIR")
        or os.path.join(os.path.expanduser("~"), ".config", "covalent")
    )
    return os.path.join(folder, "covalent.conf")


def _load_toml(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10: Covalent's own TOML library
        import toml

        with open(path, encoding="utf-8") as handle:
            return dict(toml.load(handle))
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def read_covalent_config() -> dict[str, Any]:
    """The ``[executors.oci]`` section of covalent.conf; ``{}`` if the file or section is absent.

    Raises :class:`ConfigurationError` if the file is not valid TOML.
    """
    path = config_path()
    try:
        data = _load_toml(path)
    except FileNotFoundError:
        return {}
    except Exception as exc:  # noqa: BLE001 - any parse error: name the file and the fix
        raise ConfigurationError(
            f"{path} is not valid TOML ({exc}); fix the line it names, or move the file away and "
            "let `covalent start` write a fresh one"
        ) from exc
    section = data.get("executors", {}).get("oci", {})
    return dict(section) if isinstance(section, Mapping) else {}


def _fix(name: str, where: str) -> str:
    if name not in settings.NAMES:
        return f"remove `{name}` from [{SECTION}] in {where}"
    default = json.dumps(settings.defaults()[name])
    return f"set a valid `{name}` in [{SECTION}] of {where}, or its default: {name} = {default}"


def check_config(values: Mapping[str, Any], source: str) -> list[Finding]:
    """One ``fail`` finding per invalid value (the executor's own error), else one ``ok``; a
    ``warn`` for each name that is not an option (the executor ignores those)."""
    findings = []
    for name, value in values.items():
        if name not in settings.NAMES:  # the executor reads only its own names
            findings.append(
                Finding(
                    "config",
                    "config",
                    "warn",
                    f"{name} = {json.dumps(value, default=str)} in [{SECTION}] is not an option of this "
                    "oci-executor (left by another version?): the executor ignores it",
                    _fix(name, source),
                )
            )
            continue
        try:
            settings.parse({name: value})
            if name == "backend" and value != AUTO:
                default_registry().get(value)
        except ConfigurationError as exc:
            findings.append(Finding("config", "config", "fail", str(exc), _fix(name, source)))
    if not any(f.status == "fail" for f in findings):
        if values:
            known = len(set(values) & set(settings.NAMES))
            message = f"{source}: {known} value(s) in [{SECTION}], all valid"
        else:
            message = f"{source}: no [{SECTION}] values, the defaults apply"
        findings.append(Finding("config", "config", "ok", message))
    return findings


def configured_backend(values: Mapping[str, Any]) -> str:
    """The backend covalent.conf's values pick (``auto`` unless a valid name is set)."""
    return str(effective_values(values)["backend"])


def effective_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults, with every valid value of ``values`` over them (invalid ones are reported
    by :func:`check_config` and left at their default here)."""
    merged = settings.defaults()
    for name, value in values.items():
        try:
            merged.update(settings.parse({name: value}))
        except ConfigurationError:
            pass
    return merged
