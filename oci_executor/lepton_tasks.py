"""Covalent's lepton wrappers, rewritten to need nothing but the standard library.

A Covalent lepton's task function is a closure over the ``Lepton`` electron itself, so running
it needs Covalent in the image. :mod:`oci_executor.covalent.tasks` replaces it with one of these
functions (pickled by value, with the lepton's settings as plain arguments), which behave as
``Lepton.wrap_task``'s ``python_wrapper`` and ``shell_wrapper`` of Covalent 0.240.0 (Apache-2.0,
Agnostiq Inc.). No imports from ``oci_executor``: this module travels by value.
"""

from __future__ import annotations

from typing import Any


def python_lepton(library_name: str, function_name: str, *args: Any, **kwargs: Any) -> Any:
    """Import ``library_name`` in the container and call its ``function_name``."""
    import importlib

    module = importlib.import_module(library_name)
    return getattr(module, function_name)(*args, **kwargs)


def shell_lepton(spec: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    """Run a bash/sh lepton: ``spec`` holds command, library_name, function_name, argtypes
    (``[type name, 0 INPUT / 1 OUTPUT / 2 INPUT_OUTPUT]``) and named_outputs, as the Lepton had them."""
    import builtins
    import shutil
    import subprocess

    shell = shutil.which("bash") or shutil.which("sh")
    if not shell:
        raise Exception("Could not find a shell on remote.")
    exports = "".join(f"export {k}={v} && " for k, v in kwargs.items())
    attrs = [a[1] for a in spec["argtypes"]]
    outputs = spec["named_outputs"] or []
    if attrs.count(2) + attrs.count(1) != len(outputs):
        raise Exception(f"Expecting {attrs.count(2) + attrs.count(1)} named outputs.")
    if attrs.count(2) != len(kwargs):
        raise Exception(f"Expecting {attrs.count(2)} keyword arguments.")
    echo = "".join(f" && echo COVALENT-LEPTON-OUTPUT-{name}: ${name}" for name in outputs)
    command = spec["command"]
    if command:
        if isinstance(command, list):
            command = " && ".join(command)
        command = command.format(**kwargs)
        proc = subprocess.run([shell, "-c", f"{exports} {command} {echo}", "_", *args], capture_output=True)
    else:
        quoted = "".join(f'"{arg}" ' for arg in args)
        line = f"{exports} source {spec['library_name']} && {spec['function_name']} {quoted} {echo}"
        proc = subprocess.run([shell, "-c", line], capture_output=True)
    if proc.returncode != 0:
        raise Exception(proc.stderr.decode("utf-8").strip())
    values = []
    lines = proc.stdout.decode("utf-8").strip().split("\n")
    for index, name in enumerate(outputs):
        marker = f"COVALENT-LEPTON-OUTPUT-{name}: "
        for line in lines:
            if marker in line:
                values.append(getattr(builtins, spec["argtypes"][index][0])(line.split(marker)[1]))
                break
    if values:
        return tuple(values) if len(values) > 1 else values[0]
    return None
