"""One line of ``oci-executor doctor``: what was checked, what was found, and the fix."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

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
