"""A backend the user never configured, and that ``auto`` passes over, is one quiet line.

A Podman user on a host with Docker installed should not read ``fail docker socket ...`` and a
``sudo usermod -aG docker`` fix (a root-equivalent group) when Podman runs their tasks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from oci_executor.findings import Finding
from oci_executor.registry import AUTO, default_registry


def _cause(message: str) -> str:
    """The first sentence (or clause) of a finding's message."""
    return re.split(r"(?<=[^.])\. |; ", message, maxsplit=1)[0].rstrip(".")


def quiet_unused(findings: Sequence[Finding], configured: str, asked: str | None) -> list[Finding]:
    """``findings`` with each unused, unconfigured, failing engine folded into one ``skip`` line.

    Only under ``backend="auto"`` (configured and asked), and only when another container
    backend's engine answers: that one runs the tasks, so the others' failures block nothing.
    """
    if configured != AUTO or (asked not in (None, AUTO)):
        return list(findings)
    registry = default_registry()
    names = [name for name in registry.auto_order() if registry.get(name).isolated]
    status = {f.backend: f.status for f in findings if f.check == "engine"}
    picked = next((name for name in names if status.get(name) == "ok"), None)
    if picked is None:
        return list(findings)
    result: list[Finding] = []
    folded: set[str] = set()
    for finding in findings:
        name = finding.backend
        if name not in names or name == picked or status.get(name) == "ok":
            result.append(finding)
            continue
        if name in folded:
            continue
        folded.add(name)
        failing = [f for f in findings if f.backend == name and f.status == "fail"]
        why = _cause(failing[0].message) if failing else "its engine does not answer here"
        result.append(Finding(name, "engine", "skip", f"not used ({why}); {picked} runs your tasks"))
    return result
