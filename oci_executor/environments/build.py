"""Resolve, download and install a requirement set on the host, for an image's Python.

pip runs on the host, with the host's own configuration (index, extra indexes, find-links,
certificates, constraints: pip.conf and ``PIP_*``), asked for the image's Python version, ABI
and platform, wheels only by default. The wheels are then installed with
``pip install --target`` into a build folder, which :mod:`.store` publishes by one rename.
The image needs no pip and the container no network.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from oci_executor.environments import store
from oci_executor.environments.image import ImageFacts
from oci_executor.errors import EnvironmentBuildError

log = logging.getLogger(__name__)

Progress = Callable[[str, str], None]
"""``progress(step, detail)``: ``("resolve", "numpy")``, ``("download", file)``, ``("install", name)``..."""

_NOT_FOUND = re.compile(r"(?:No matching distribution found for|satisfies the requirement) (\S+)")
_SKIPPED_SDIST = re.compile(r"Skipping link: No sources permitted for ([^:]+):")
_COLLECTING = re.compile(r"^\s*Collecting (\S+)")
_SAVED = re.compile(r"^\s*(?:Saved|File was already downloaded) (\S+)")
_PROCESSING = re.compile(r"^\s*Processing \S*?([^/\s]+\.whl)")
KEPT = (
    "Looking in",
    "ERROR",
    "WARNING",
    "Collecting",
    "  ",
    "Saved",
    "File was",
    "Processing",
    "Installing",
    "Successfully",
)
_LOOKING = re.compile(r"^\s*Looking in (?:indexes|links): (.*)")


@dataclass(frozen=True)
class Environment:
    """A finished environment: its key, its folder on this machine, what it holds."""

    key: str
    path: str
    requirements: tuple[str, ...]
    volume: str = ""
    """The named volume holding a copy on a remote engine (mounted instead of ``path``), if any."""


def installer_version() -> str:
    return f"pip {importlib.metadata.version('pip')}"


def target_args(facts: ImageFacts) -> list[str]:
    """pip's options that make it pick wheels for the image instead of this machine."""
    argv = ["--python-version", facts.python, "--implementation", facts.impl, "--abi", facts.abi]
    for platform_tag in facts.platforms():
        argv += ["--platform", platform_tag]
    return argv


def _pip(argv: Sequence[str], progress: Progress | None) -> tuple[int, list[str], list[str]]:
    """Run pip, streaming its output into ``progress``; return status, last lines, index lines."""
    command = [sys.executable, "-m", "pip", *argv]
    tail: collections.deque[str] = collections.deque(maxlen=40)
    indexes: list[str] = []
    skipped: list[str] = []
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip("\n")
        if _SKIPPED_SDIST.search(line):
            skipped.append(_SKIPPED_SDIST.search(line).group(1).strip())  # type: ignore[union-attr]
            continue
        if not line.startswith(KEPT):
            continue  # -vv noise, kept out of the error's last lines
        if line.startswith("  ") and not line.strip().startswith(
            ("Using cached", "Downloading", "Obtaining")
        ):
            continue
        tail.append(line)
        for pattern, step in ((_COLLECTING, "resolve"), (_SAVED, "download"), (_PROCESSING, "install")):
            match = pattern.search(line)
            if match and progress is not None:
                progress(step, os.path.basename(match.group(1)))
        looking = _LOOKING.search(line)
        if looking:
            indexes.append(looking.group(1))
    status = process.wait()
    return status, list(tail) + [f"(sdist only: {name})" for name in skipped], indexes


def _resolve_error(
    requirements: Sequence[str], facts: ImageFacts, lines: list[str], indexes: list[str]
) -> str:
    text = "\n".join(lines)
    asked = "; ".join(indexes) or "pip's default index (https://pypi.org/simple) and its configuration"
    sdist_only = [line[len("(sdist only: ") : -1] for line in lines if line.startswith("(sdist only: ")]
    matches = list(_NOT_FOUND.finditer(text))
    match = matches[-1] if matches else None
    last = "\n".join(f"    {line}" for line in [x for x in lines if not x.startswith("(sdist only")][-12:])
    if match is not None:
        name = match.group(1).strip()
        bare = re.split(r"[<>=!~\[; ]", name, maxsplit=1)[0].lower()
        if any(re.split(r"[-_.]", s.lower())[0] == re.split(r"[-_.]", bare)[0] for s in sdist_only):
            return (
                f"package {name!r} has no wheel for {facts.describe()}, only a source distribution "
                f"(asked: {asked}). Environments install wheels only, so that nothing compiles in "
                f"your image. Fix: build the wheel once on a machine like the image "
                f"(`pip wheel --no-deps {bare} -w WHEELDIR`) and add WHEELDIR to pip's find-links, "
                "or pin a version that has a wheel, or set wheels_only=False to let pip build it "
                f"on this host (same Python {facts.python}).\npip said:\n{last}"
            )
        return (
            f"no release of {name!r} matches {facts.describe()} on the indexes asked ({asked}): "
            "check the name and the version, and that the index pip uses here has it (pip.conf, "
            f"PIP_INDEX_URL, PIP_FIND_LINKS).\npip said:\n{last}"
        )
    return f"pip could not resolve {', '.join(requirements)} for {facts.describe()} (asked: {asked}).\npip said:\n{last}"


def download(
    requirements: Sequence[str],
    facts: ImageFacts,
    wheelhouse: str,
    wheels_only: bool,
    progress: Progress | None,
) -> list[str]:
    """Resolve ``requirements`` and put every wheel of the result into ``wheelhouse``."""
    common = ["--no-input", "--progress-bar", "off", "-vv"]  # -vv: pip names the sdists it skipped
    if wheels_only:
        argv = ["download", *common, "--only-binary=:all:", *target_args(facts), "-d", wheelhouse]
    else:
        argv = ["wheel", *common, "-w", wheelhouse]  # sdists built here: same Python X.Y as the image
    status, lines, indexes = _pip([*argv, *requirements], progress)
    if status != 0:
        raise EnvironmentBuildError(_resolve_error(requirements, facts, lines, indexes))
    wheels = sorted(name for name in os.listdir(wheelhouse) if name.endswith(".whl"))
    if len(wheels) != len(os.listdir(wheelhouse)):
        extra = sorted(set(os.listdir(wheelhouse)) - set(wheels))
        raise EnvironmentBuildError(f"pip left files that are not wheels: {', '.join(extra)}")
    return wheels


def content_key(image_id: str, facts: ImageFacts, wheelhouse: str, wheels: Sequence[str]) -> str:
    """The key: image, ABI, platform, the resolved wheels (names and contents), the installer."""
    digest = hashlib.sha256()
    head = {
        "image": image_id,
        "abi": facts.abi,
        "platform": facts.platforms()[0],
        "installer": installer_version(),
    }
    digest.update(json.dumps(head, sort_keys=True).encode())
    for name in wheels:
        digest.update(name.encode() + b"\0")
        with open(os.path.join(wheelhouse, name), "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def install(
    key: str,
    wheelhouse: str,
    wheels: Sequence[str],
    facts: ImageFacts,
    meta: Mapping[str, object],
    progress: Progress | None,
) -> str:
    """Install ``wheels`` into a fresh build folder and publish it as ``envs/<key>``; caller holds the build lock."""
    folder = store.new_build_dir(key)
    try:
        argv = ["install", "--no-input", "--progress-bar", "off", "--no-deps", "--no-index"]
        # Byte-compiled here, by this Python (the image's X.Y, which the runner checks): a
        # read-only mount cannot take the .pyc files, and without them every task recompiles.
        host = "{}.{}".format(*sys.version_info[:2])
        argv += ["--compile" if facts.python == host else "--no-compile"]
        argv += ["--only-binary=:all:", "--target", folder, *target_args(facts)]
        status, lines, _ = _pip([*argv, *(os.path.join(wheelhouse, w) for w in wheels)], progress)
        if status != 0:
            text = "\n".join(lines)
            if "No space left on device" in text:
                raise OSError(errno.ENOSPC, "No space left on device")
            raise EnvironmentBuildError(
                "installing the wheels failed:\n" + "\n".join(f"    {x}" for x in lines[-12:])
            )
        shutil.rmtree(os.path.join(folder, "bin"), ignore_errors=True)  # scripts name the host's Python
        meta = {**meta, "built": time.time(), "installer": installer_version()}
        return store.publish(folder, key, meta)
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            free = shutil.disk_usage(store.root()).free
            raise EnvironmentBuildError(
                f"no space left on the disk of {store.root()} while building environment {key} "
                f"({free // 2**20} MiB free now; the half-built copy was removed). See what the "
                "environments take with `oci-executor env ls`, remove unused ones with "
                "`oci-executor env prune`, or point OCI_EXECUTOR_ENV_DIR at a larger disk."
            ) from None
        raise
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
