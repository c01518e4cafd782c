"""Covalent's FileTransfer steps, made to cross the host/container boundary.

``@ct.electron(files=[ct.fs.FileTransfer(a, b)])`` adds two call steps per transfer: a
pre-transfer hook (creates temp files, returns the paths for the ``files`` keyword) and the
strategy's copy. For a transfer between local paths (``file://`` or plain), Covalent's local
strategy (``Shutil``) copies on the machine the task runs on; here the task runs in a
container, so :func:`transfer_step` turns it into a step that crosses over: a BEFORE transfer
reads the file on the host and writes it in the container (a ``put`` step), an AFTER transfer
reads it in the container and writes it on the host (a ``get`` step), streamed over the
runner's channel. Other strategies (HTTP, rsync, S3...) run in the container, as on any executor.
"""

from __future__ import annotations

from typing import Any

from oci_executor.task import Step
from oci_executor.transfer import file_source


def step_label(function: Any) -> str:
    """How a call step is named in errors: its transfer, or the hook's function name."""
    qualname = getattr(function, "__qualname__", "") or ""
    files = _files(function)
    if files is not None:
        source, dest = files
        return f"FileTransfer {source.uri} -> {dest.uri}"
    if qualname.startswith("FileTransferStrategy.pre_transfer_hook"):
        return "FileTransfer pre-transfer hook"
    return repr(getattr(function, "__name__", "") or qualname or type(function).__name__)


def _closure(function: Any) -> dict[str, Any]:
    code = getattr(function, "__code__", None)
    cells = getattr(function, "__closure__", None) or ()
    if code is None:
        return {}
    return {name: cell.cell_contents for name, cell in zip(code.co_freevars, cells, strict=False)}


def _files(function: Any) -> tuple[Any, Any] | None:
    closure = _closure(function)
    if "from_file" in closure and "to_file" in closure:
        return closure["from_file"], closure["to_file"]
    return None


def transfer_step(function: Any, after: bool) -> tuple[Step, tuple[str, str] | None] | None:
    """A ``put`` (BEFORE) or ``get`` (AFTER) step for a local-to-local Shutil transfer, with the
    host path an AFTER transfer writes to; None for any other step."""
    if not (getattr(function, "__qualname__", "") or "").endswith("Shutil.cp.<locals>.callable"):
        return None
    files = _files(function)
    if files is None:
        return None
    source, dest = files
    if source.is_remote or dest.is_remote:
        return None
    label = f"FileTransfer {source.uri} -> {dest.uri} ({'AFTER' if after else 'BEFORE'})"
    if after:
        return Step("get", {"src": source.filepath, "label": label}), (dest.filepath, label)
    return Step(
        "put", {"source": file_source(source.filepath, label), "dest": dest.filepath, "label": label}
    ), None
