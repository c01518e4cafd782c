"""The declared packages of a task, normalized: from our options and from Covalent's DepsPip.

A requirement set is a sorted tuple of canonical requirement strings (``numpy==2.1.*``,
names lower-cased and normalized per PEP 503), so that the same packages written in another
order, case or spacing give the same set, and so the same environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from oci_executor.errors import ConfigurationError


def normalize(lines: Iterable[str], source: str) -> tuple[str, ...]:
    """Canonical requirement strings from requirement-file ``lines`` (comments, blanks dropped)."""
    found: set[str] = set()
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            raise ConfigurationError(
                f"{source}: {line!r} is a pip option, not a package. Put index, find-links and "
                "constraint options in pip's configuration (pip.conf or PIP_* variables) on the "
                "machine that runs the tasks: environments are resolved there, with that configuration."
            )
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise ConfigurationError(
                f"{source}: {line!r} is not a valid requirement ({exc}). Write it as pip would take it, "
                "e.g. 'numpy', 'numpy==2.1.*' or 'requests>=2.31'."
            ) from None
        if requirement.url:
            raise ConfigurationError(
                f"{source}: {line!r} names a URL; declare packages by name and version, and put "
                "the wheel's folder in pip's find-links instead."
            )
        requirement.name = canonicalize_name(requirement.name)
        found.add(str(requirement))
    return tuple(sorted(found))


def read_requirements_file(path: str) -> list[str]:
    """The lines of a requirements file named by the ``requirements`` option."""
    full = os.path.abspath(os.path.expanduser(path))
    try:
        with open(full, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except OSError as exc:
        raise ConfigurationError(
            f"requirements={path!r}: cannot read {full} ({exc.strerror}). The file is read on the "
            "machine that runs the tasks (the Covalent server's): give an absolute path that exists "
            "there, or list the packages with packages=[...]."
        ) from None


def declared(
    packages: Iterable[str], requirements: str, deps_pip: Iterable[tuple[list[str], str]]
) -> tuple[str, ...]:
    """Every package a task declares: ``packages``, the ``requirements`` file, and DepsPip steps
    (each a package list and a requirements text, as Covalent stores them)."""
    lines = list(packages)
    if requirements:
        lines += read_requirements_file(requirements)
    for names, text in deps_pip:
        lines += list(names) + text.splitlines()
    return normalize(lines, "declared packages")
