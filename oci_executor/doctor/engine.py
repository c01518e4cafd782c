"""The diagnosis of one backend: the backend's own findings (:meth:`Backend.diagnose`: its
engine, socket, storage, limits, rootless setup, image...), then whether the configured image
starts a runner with the host's Python, through the executor's own start path
(:func:`oci_executor.lifecycle.start_runner`), so a finding says what a task would meet.

Nothing here knows a backend by name: each one answers for itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oci_executor import settings
from oci_executor.backend import Backend, ContainerSpec
from oci_executor.core import our_labels
from oci_executor.errors import (
    ImageHasNoPythonError,
    OCIExecutorError,
    PythonVersionMismatchError,
    RunnerError,
)
from oci_executor.findings import Finding, skipped
from oci_executor.lifecycle import discard, start_runner
from oci_executor.task import host_python_version

DOCTOR_DISPATCH = "oci-executor-doctor"
"""The dispatch label of the doctor's test container (it is removed at once)."""
PYTHON_VERSION = "import platform; print(platform.python_version())"


def diagnose_backend(backend: Backend, image: str, values: Mapping[str, Any]) -> list[Finding]:
    """Every check of ``backend`` (closed afterwards), in the order a user fixes them."""
    try:
        spec = settings.container_spec({**values, "image": image}, {})
        findings = backend.diagnose(spec, values["pull_policy"])
        engine = next((f for f in findings if f.check == "engine"), None)
        if engine is not None and engine.status == "skip":  # not installed: nothing else to say
            return findings
        if engine is not None and engine.status == "fail":
            return [*findings, skipped(backend.name, "python")]
        image_finding = next((f for f in findings if f.check == "image"), None)
        if image_finding is not None and image_finding.status != "ok":
            return [
                *findings,
                Finding(backend.name, "python", "skip", f"image {image} is not in the store: cannot run it"),
            ]
        return [*findings, _python(backend, image, values)]
    finally:
        backend.close()


def _python(backend: Backend, image: str, values: Mapping[str, Any]) -> Finding:
    """Start a runner from the image exactly as a task would, then remove it."""
    name = backend.name
    host_version = host_python_version()
    spec = ContainerSpec(
        image=image,
        labels=our_labels(DOCTOR_DISPATCH, "python"),
        python=values["python"],
        idle_timeout=60.0,
        max_lifetime=300.0,
        network=(values["network"] or None) if "network" in backend.supported_options else None,
    )
    image_fix = (
        f'use an image with Python {host_version}: image = "python:{host_version}-slim" in [executors.oci]'
    )
    try:
        runner = start_runner(backend, spec)
    except PythonVersionMismatchError as exc:
        return Finding(
            name,
            "python",
            "fail",
            f"image {image} has Python {exc.image_version}, this host {exc.host_version}: tasks need the same major.minor",
            image_fix,
        )
    except ImageHasNoPythonError:
        return Finding(
            name,
            "python",
            "fail",
            f"image {image} has no Python at {values['python']!r}",
            f'{image_fix}, or set python = "/path/to/python{host_version}" to the image\'s interpreter',
        )
    except RunnerError as exc:
        return Finding(name, "python", "fail", str(exc).splitlines()[0], image_fix)
    except OCIExecutorError as exc:
        return Finding(
            name,
            "python",
            "fail",
            f"cannot start a container from {image}: {' '.join(str(exc).split())[:400]}",
        )
    try:
        result = backend.exec(runner.container, [runner.container.python, "-c", PYTHON_VERSION])
        version = result.stdout.decode(errors="replace").strip() or host_version
    except OCIExecutorError:
        version = host_version
    finally:
        discard(runner)
    where = "the host's own interpreter" if not backend.isolated else f"image {image}"
    return Finding(
        name, "python", "ok", f"Python {version} in {where} runs the runner (host: {host_version})"
    )
