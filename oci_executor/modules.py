"""Modules follow the task: which modules its pickles reference, and which of them travel.

:func:`referenced` walks pickle opcodes (never unpickling) for the modules named by reference:
``GLOBAL``/``STACK_GLOBAL`` and cloudpickle's ``subimport``. :func:`plan` compares their
top-level names with what the image can import (:class:`Inventory`, asked of the runner once per
image ID) and decides, per module the image lacks:

- a module of the user's own project (importable here, from no installed distribution) travels
  as source, with the modules it imports, and is put on ``sys.path`` in the task's folder;
- a module from an installed distribution becomes a requirement pinned to this host's version
  (:attr:`ModulePlan.requirements`, the seam for declared environments); until an environment
  provides it, a pure-Python distribution travels as source too, with its own requirements.

An image that has the module keeps its own (logged, with a warning on a major-version mismatch).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pickletools
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

NEVER_SHIPPED = frozenset(
    {
        "__main__",
        "__mp_main__",
        "builtins",
        "__builtin__",
        "cloudpickle",
        "oci_runner",
        "oci_protocol",
        "oci_executor",
    }
)
"""Top-level names that are never provided: the runner's own (``oci_executor`` in a task is the
runner's stand-in holding ``oci_executor.task``), or the interpreter's."""
NOT_AS_SOURCE = frozenset({"covalent", "covalent_dispatcher"})
"""Distributions too large (or compiled underneath) to travel as source: requirements only."""
SCAN_BYTES = 1024 * 1024
"""A function's pickle is walked this far."""
INPUT_SCAN_BYTES = 256 * 1024
"""An input's pickle is walked this far (about 0.1 s of pure-Python opcode walking at most)."""
MAX_SOURCE_BYTES = 64 * 1024 * 1024
"""A task ships at most this much module source; beyond it the plan stops and says so."""
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
_SUBIMPORT = {"subimport", "dynamic_subimport", "_import_module"}


def referenced(pickles: Iterable[bytes], limit: int = SCAN_BYTES) -> set[str]:
    """Dotted names of the modules ``pickles`` reference (classes, functions, modules), each
    walked up to ``limit`` bytes (a class is named where its first instance is)."""
    found: set[str] = set()
    for data in pickles:
        if data:
            found |= _scan(data[:limit])
    return found


def _scan(data: bytes) -> set[str]:
    found: set[str] = set()
    memo: dict[int, object] = {}
    recent: list[object] = []
    want_module = False
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            if name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                found.add(module)
                want_module = attr in _SUBIMPORT
                recent.append(None)
            elif name == "STACK_GLOBAL":
                pair = recent[-2:] if len(recent) >= 2 else [None, None]
                if isinstance(pair[0], str):
                    found.add(pair[0])
                want_module = pair[1] in _SUBIMPORT
                recent.append(None)
            elif name in _STRINGS:
                if want_module and isinstance(arg, str):
                    found.add(arg)
                    want_module = False
                recent.append(arg)
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(str(arg))] = recent[-1] if recent else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                value = memo.get(int(str(arg)))
                if want_module and isinstance(value, str):
                    found.add(value)
                    want_module = False
                recent.append(value)
            elif name not in ("FRAME", "PROTO", "MARK"):
                recent.append(None)
            if len(recent) > 64:
                del recent[:32]
    except Exception:  # noqa: BLE001 - a pickle we cannot walk: what we found so far
        pass
    return found


@dataclass(frozen=True)
class Inventory:
    """What an image can import: top-level module names and its distributions' versions."""

    modules: frozenset[str]
    versions: Mapping[str, str] = field(default_factory=dict)  # top-level name -> version


@dataclass
class ModulePlan:
    """What a task needs beyond its image."""

    files: dict[str, bytes] = field(default_factory=dict)
    """Relative path -> content, written into a folder put first on the task's ``sys.path``."""
    requirements: list[str] = field(default_factory=list)
    """``name==version`` pins for distributions the image lacks (the environments' seam)."""
    shipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Referenced top-level names nothing here can provide."""
    stamps: dict[str, int] = field(default_factory=dict)
    """Source file -> its mtime in ns when read (a changed file makes the plan stale)."""
    _digest: str = field(default="", repr=False)
    wanted: set[str] = field(default_factory=set, repr=False)
    """The referenced modules and their parent packages: importing them runs their files."""

    def digest(self) -> str:
        """A content hash of the files: the folder's name in the container (computed once)."""
        if self._digest:
            return self._digest
        h = hashlib.sha256()
        for path, data in sorted(self.files.items()):
            h.update(path.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
        self._digest = h.hexdigest()[:24]
        return self._digest

    def fresh(self) -> bool:
        """Whether every source file is as it was read."""
        try:
            return all(os.stat(path).st_mtime_ns == stamp for path, stamp in self.stamps.items())
        except OSError:
            return False


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def pin(top: str) -> str:
    """``dist==version`` of the installed distribution providing ``top`` here, else ``top``."""
    dists = _distributions().get(top, [])
    return f"{dists[0]}=={_version(dists[0])}" if dists else top


def _stdlib(top: str) -> bool:
    return top in sys.stdlib_module_names or top in sys.builtin_module_names


def plan(names: Iterable[str], inventory: Inventory, *, extra: Iterable[str] = ()) -> ModulePlan:
    """What to provide for the modules ``names`` (dotted) given the image's ``inventory``.

    ``extra`` names modules to ship as source whatever the image has.
    """
    result = ModulePlan()
    done: set[str] = set()
    size = [0]
    names = [n for n in names if n]
    result.wanted = {".".join(n.split(".")[: i + 1]) for n in names for i in range(n.count(".") + 1)}
    for top in sorted({n.split(".")[0] for n in names}):
        _provide(top, inventory, result, done, size, direct=True)
    for name in extra:
        top = name.split(".")[0]
        if top not in result.shipped:
            path = _source_root(top)
            if path is None:
                result.missing.append(top)
            else:
                _ship(top, path, inventory, result, done, size)
    return result


def _provide(
    top: str, inventory: Inventory, result: ModulePlan, done: set[str], size: list[int], *, direct: bool
) -> None:
    if top in done or top in NEVER_SHIPPED or _stdlib(top):
        return
    done.add(top)
    dists = _distributions().get(top, [])
    host_version = _version(dists[0]) if dists else ""
    if top in inventory.modules:
        _compare(top, host_version, inventory.versions.get(top, ""))
        return
    if dists:
        dist = dists[0]
        pin = f"{dist}=={host_version}" if host_version else dist
        if pin not in result.requirements:
            result.requirements.append(pin)
        if dist.lower().replace("_", "-") in {n.replace("_", "-") for n in NOT_AS_SOURCE} or not _pure(dist):
            if direct:
                result.missing.append(top)
            return
        for root in _dist_tops(dist):
            path = _source_root(root)
            if path is not None:
                done.add(root)
                _ship(root, path, inventory, result, done, size, scan=False)
        for dep in _dist_requires(dist):
            for dep_top in tops_of(dep):
                _provide(dep_top, inventory, result, done, size, direct=False)
        return
    path = _source_root(top)
    if path is None:
        if direct:
            result.missing.append(top)
        return
    _ship(top, path, inventory, result, done, size)


def _ship(
    top: str,
    path: Path,
    inventory: Inventory,
    result: ModulePlan,
    done: set[str],
    size: list[int],
    scan: bool = True,
) -> None:
    """Add ``top``'s files (a package folder or one module file) and, with ``scan``, its imports."""
    files = (
        sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        if path.is_dir()
        else [path]
    )
    imports: set[str] = set()
    required: set[str] = set()
    for file in files:
        data = file.read_bytes()
        size[0] += len(data)
        if size[0] > MAX_SOURCE_BYTES:
            log.warning("module sources over %d MiB; %s is not shipped", MAX_SOURCE_BYTES >> 20, top)
            return
        result.files[file.relative_to(path.parent).as_posix()] = data
        result.stamps[str(file)] = file.stat().st_mtime_ns
        if scan and file.suffix == ".py":
            imports |= _imports(data)
            dotted = list(file.relative_to(path.parent).with_suffix("").parts)
            if dotted[-1] == "__init__":
                dotted.pop()
            if file == path or ".".join(dotted) in result.wanted:  # run when the task loads
                required |= _imports(data, top_level=True)
    result.shipped.append(top)
    for name in sorted(imports):
        _provide(name, inventory, result, done, size, direct=name in required)


def _imports(source: bytes, top_level: bool = False) -> set[str]:
    """Top-level names of absolute imports in ``source`` (relative ones stay in the package);
    with ``top_level``, only the module body's own import statements (run on import, not
    guarded by ``try``): a module the task cannot do without."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return set()
    names: set[str] = set()
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def _source_root(top: str) -> Path | None:
    """The package folder or module file ``top`` is imported from here, if it is source."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
        return Path(locations[0]) if len(locations) == 1 else None
    if spec.origin and spec.origin.endswith(".py"):
        return Path(spec.origin)
    return None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _pure(dist: str) -> bool:
    files = importlib.metadata.files(dist) or []
    return not any(str(f).endswith((".so", ".pyd", ".dylib")) for f in files)


def _dist_tops(dist: str) -> list[str]:
    return sorted(top for top, dists in _distributions().items() if dist in dists)


def tops_of(dist: str) -> list[str]:
    key = dist.lower().replace("_", "-")
    return sorted(
        top for top, dists in _distributions().items() if key in {d.lower().replace("_", "-") for d in dists}
    )


def _dist_requires(dist: str) -> list[str]:
    """The names of ``dist``'s unconditional requirements (markers evaluated when possible)."""
    names = []
    for line in importlib.metadata.requires(dist) or []:
        requirement, _, marker = line.partition(";")
        if "extra" in marker:
            continue
        if marker.strip():
            try:
                from packaging.markers import Marker

                if not Marker(marker.strip()).evaluate():
                    continue
            except Exception:  # noqa: BLE001 - no packaging here: keep the requirement
                pass
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if match:
            names.append(match.group(1))
    return names


def _compare(top: str, host: str, image: str) -> None:
    if not image or not host:
        return
    if image.split(".")[0] != host.split(".")[0]:
        log.warning(
            "the image's %s %s is used, not this host's %s: a different major version; "
            "pin the image's version or use an image with %s %s",
            top,
            image,
            host,
            top,
            host,
        )
    elif image != host:
        log.info("the image's %s %s is used (this host has %s)", top, image, host)
