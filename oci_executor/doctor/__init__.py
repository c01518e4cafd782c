"""``oci-executor doctor``: what stands between this host and a task, one finding per line.

:func:`diagnose` checks covalent.conf's ``[executors.oci]`` values and each registered backend
(engine, socket, storage, cgroups and limits, the rootless setup, the configured image and its
Python); :func:`exit_code` says whether the backend the config picks can run a task.
``python -m oci_executor.doctor [--json]`` prints the findings.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from oci_executor.backend import BackendConfig
from oci_executor.doctor.config import (
    check_config,
    config_path,
    configured_backend,
    effective_values,
    read_covalent_config,
)
from oci_executor.doctor.engine import diagnose_backend
from oci_executor.doctor.quiet import quiet_unused
from oci_executor.errors import ConfigurationError
from oci_executor.findings import Finding, Status
from oci_executor.registry import AUTO, default_registry

__all__ = [
    "Finding",
    "Status",
    "configured_backend",
    "diagnose",
    "exit_code",
    "add_arguments",
    "main",
    "read_covalent_config",
    "run",
]


def diagnose(
    backend: str | None = None,
    image: str | None = None,
    address: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> list[Finding]:
    """Check covalent.conf (or ``config``) and each registered backend, or only ``backend``.

    ``image`` defaults to the configured one, ``address`` to the configured one (which applies
    to the configured backend only, or to every backend when that is ``auto``), else each
    backend's default. Nothing is pulled, and the test container is removed.
    """
    if config is None:
        source = config_path()
        try:
            config = read_covalent_config()
        except ConfigurationError as exc:
            findings = [Finding("config", "config", "fail", str(exc), f"fix or remove {source}")]
            config = {}
        else:
            findings = check_config(config, source)
    else:
        findings = check_config(config, "covalent.conf")
    values = effective_values(config)
    image = image or values["image"]
    registry = default_registry()
    if backend is not None and backend != AUTO:
        try:
            registry.get(backend)
        except ConfigurationError as exc:
            return [
                *findings,
                Finding(backend, "engine", "fail", str(exc), "pick one of the backends it lists"),
            ]
        names = [backend]
    else:
        names = registry.auto_order()
    for name in names:
        configured = values["address"] if values["backend"] in (AUTO, name) else ""
        backend_config = BackendConfig(
            address=address or configured or None,
            pull_policy="never",
            ssh_identity=values["ssh_identity"] or None,
        )
        findings += diagnose_backend(registry.get(name)(backend_config), image, {**values, "image": image})
    return quiet_unused(findings, values["backend"], backend)


def exit_code(findings: Sequence[Finding], config_backend: str) -> int:
    """0 when the backend the config picks can run a task, else 1 (also for an invalid config).

    ``auto`` resolves like the registry's: the first isolated backend (by priority) whose
    engine answers; if none answers, failure when one is installed, else the local fallback.
    """
    if any(f.backend == "config" and f.status == "fail" for f in findings):
        return 1  # the executor refuses such a config before it runs anything
    by_backend: dict[str, list[Finding]] = {}
    for finding in findings:
        by_backend.setdefault(finding.backend, []).append(finding)

    def engine_status(name: str) -> str:
        return next((f.status for f in by_backend.get(name, ()) if f.check == "engine"), "skip")

    def runs(name: str) -> bool:
        return engine_status(name) == "ok" and not any(f.status == "fail" for f in by_backend[name])

    if config_backend != AUTO:
        return 0 if runs(config_backend) else 1
    registry = default_registry()
    order = [name for name in registry.auto_order() if name in by_backend]
    isolated = [name for name in order if registry.get(name).isolated]
    picked = next((name for name in isolated if engine_status(name) == "ok"), None)
    if picked is not None:
        return 0 if runs(picked) else 1
    if any(engine_status(name) == "fail" for name in isolated):
        return 1  # installed but broken: auto refuses to fall back to the host
    fallback = next((name for name in order if not registry.get(name).isolated), None)
    return 0 if fallback is not None and runs(fallback) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor's options (``oci-executor doctor`` and ``python -m oci_executor.doctor``)."""
    parser.add_argument("--backend", help="check only this backend (default: every registered one)")
    parser.add_argument("--image", help="the image to check (default: the configured one)")
    parser.add_argument("--address", help="the engine address (default: the configured one)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of findings")


def run(args: argparse.Namespace) -> int:
    """Print the findings for parsed ``args``; return :func:`exit_code`."""
    logging.getLogger("oci_executor").setLevel(logging.ERROR)  # the findings say it (vfs...)
    findings = diagnose(args.backend, args.image, args.address)
    if args.json:
        print(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding.line())
    try:
        configured = configured_backend(read_covalent_config())
    except ConfigurationError:
        configured = AUTO  # not TOML: the config finding fails, and so does exit_code
    return exit_code(findings, args.backend or configured)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m oci_executor.doctor``: print the findings; exit with :func:`exit_code`."""
    parser = argparse.ArgumentParser(prog="oci-executor doctor", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
