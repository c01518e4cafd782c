"""One line of ``oci-executor doctor``: what was checked, what was found, and the fix; and the
findings any backend can give through the contract (:meth:`Backend.diagnose`'s default)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from oci_executor.errors import OCIExecutorError

if TYPE_CHECKING:
    from oci_executor.backend import Backend, ContainerSpec

Status = Literal["ok", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Finding:
    """One check's result.

    ``backend`` is a backend's name, or ``"config"`` for covalent.conf; ``check`` a short id
    (engine, socket, storage, cgroup, limits, subuid, runtime-dir, network, image, python,
    config); ``fix`` is the exact command or config line, empty when there is nothing to fix.
    """

    backend: str
    check: str
    status: Status
    message: str
    fix: str = ""

    def __post_init__(self) -> None:  # one line each, whatever an engine's message held
        object.__setattr__(self, "message", " ".join(self.message.split()))
        object.__setattr__(self, "fix", " ".join(self.fix.split()))

    def to_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in dataclasses.asdict(self).items()}

    def line(self) -> str:
        """``status backend check: message — fix``."""
        return f"{self.status} {self.backend} {self.check}: {self.message}" + (
            f" — {self.fix}" if self.fix else ""
        )


def skipped(backend: str, check: str) -> Finding:
    """A check not made because the engine does not answer."""
    return Finding(backend, check, "skip", "not checked: the engine does not answer")


def engine_failed(backend: Backend, problem: str, fix: str, address: str = "") -> Finding:
    """The engine finding of a backend that cannot run a task (``skip`` when not installed)."""
    name = backend.name
    if not backend.installed():
        return Finding(name, "engine", "skip", f"{backend.describe()} is not installed here")
    hint = backend.start_hint
    message = problem.replace(hint, "").strip() if hint else problem
    if address.startswith("ssh://") or " over ssh" in problem:
        fix = "the message says it (Fix: ...); see docs/remote.md"
    elif "permission denied" in problem.lower():
        fix = "see the socket finding: join the socket's group, or use a socket you may use"
    return Finding(name, "engine", "fail", message, fix)


def basic_findings(backend: Backend, spec: ContainerSpec) -> list[Finding]:
    """What any backend can say of itself through the contract: whether it answers, and
    whether it can honour the configured options."""
    name = backend.name
    problem = backend.problem()
    if problem is not None:
        engine = engine_failed(backend, problem, backend.start_hint)
        return [engine] if engine.status == "skip" else [engine, skipped(name, "limits")]
    what = "runs tasks on the host, without a container" if not backend.isolated else "answers"
    found = [Finding(name, "engine", "ok", f"{backend.describe()} {what}")]
    try:
        unsupported = backend.unsupported(spec)
    except OCIExecutorError as exc:
        return [*found, Finding(name, "limits", "fail", f"cannot tell which options {name} honours: {exc}")]
    if unsupported:
        return [
            *found,
            Finding(
                name,
                "limits",
                "fail",
                f"{name} cannot honour the configured option(s) {', '.join(unsupported)}",
                backend.explain_unsupported(unsupported, spec),
            ),
        ]
    return [*found, Finding(name, "limits", "ok", "no option that this backend cannot honour is configured")]
