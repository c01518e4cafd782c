"""Covalent's own tasks, told apart from the user's before anything is sent.

Covalent hands an executor some tasks that are its own machinery, not the user's code:

- **post-processing** (``:postprocess:``, a bound method of ``Postprocessor``) and
  **sublattice building** (``:sublattice:``, ``_build_sublattice_graph``) run on a lattice's
  ``workflow_executor``. They need the exact Covalent of the server and every executor plugin it
  has (a sublattice's graph is built with its electrons' executors), and take milliseconds:
  :func:`runs_on_host` says so, and the executor runs them in the server's process, as
  Covalent's local executor would, instead of in a container.
- **leptons** (``ct.Lepton``, ``ct.leptons.bash``): their task function is a closure over the
  Lepton electron. :func:`lepton_function` rewrites it into a standard-library function of
  :mod:`oci_executor.lepton_tasks` (pickled by value) so the image needs no Covalent.

Only a function whose pickle references Covalent is unpickled here (the client pickled it; the
host never unpickles what a container wrote).
"""

from __future__ import annotations

import base64
import functools
import logging
from typing import Any

import cloudpickle

from oci_executor import lepton_tasks, modules

log = logging.getLogger(__name__)


def _covalent_function(raw: bytes) -> Any | None:
    """The task function, unpickled, if its pickle references Covalent; else None."""
    if not any(name.split(".")[0] == "covalent" for name in modules.referenced([raw])):
        return None
    try:
        return cloudpickle.loads(raw)
    except Exception:  # noqa: BLE001 - not loadable here: treat it as the user's
        return None


def runs_on_host(task: Any) -> bool:
    """Whether ``task`` (Covalent's ``partial(wrapper_fn, fn, ...)``) is Covalent's
    post-processing or sublattice building."""
    from covalent.executor.utils.wrappers import wrapper_fn

    if not (isinstance(task, functools.partial) and task.func is wrapper_fn):
        return False
    raw = base64.b64decode(task.args[0]._object.encode("utf-8"))
    function = _covalent_function(raw)
    if function is None:
        return False
    from covalent._workflow.electron import _build_sublattice_graph
    from covalent._workflow.postprocessing import Postprocessor

    return function is _build_sublattice_graph or isinstance(
        getattr(function, "__self__", None), Postprocessor
    )


def lepton_function(raw: bytes) -> bytes | None:
    """A Covalent-free pickle of a python or shell lepton's task function, else None."""
    function = _covalent_function(raw)
    if function is None or not getattr(function, "__qualname__", "").startswith("Lepton."):
        return None
    from covalent._workflow.lepton import Lepton

    cells = [c.cell_contents for c in (getattr(function, "__closure__", None) or ())]
    lepton = next((c for c in cells if isinstance(c, Lepton)), None)
    if lepton is None:
        return None
    if lepton.language in Lepton._LANG_PY:
        replacement = functools.partial(lepton_tasks.python_lepton, lepton.library_name, lepton.function_name)
    elif lepton.language in Lepton._LANG_SHELL:
        spec = {
            "command": lepton.command,
            "library_name": lepton.library_name,
            "function_name": lepton.function_name,
            "argtypes": [list(a) for a in lepton.argtypes],
            "named_outputs": list(lepton.named_outputs or []),
        }
        replacement = functools.partial(lepton_tasks.shell_lepton, spec)
    else:  # C leptons load a shared library of the host: they need Covalent in the image
        return None
    cloudpickle.register_pickle_by_value(lepton_tasks)
    return cloudpickle.dumps(replacement)
