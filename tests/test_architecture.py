"""The shape of the package: no import cycles, the engine core imports no Covalent, and one
package per backend over a shared floor (no backend imports another; the floor imports none)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "oci_executor"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the modules it imports at run time (``if TYPE_CHECKING:`` blocks excluded)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
        graph[name] |= {d for d in deps if d == "covalent" or d.startswith("covalent.")}
    return graph


def test_no_import_cycles() -> None:
    graph = _imports()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, "import cycle: " + " -> ".join([*path[path.index(name) :], name])
        if name in done:
            return
        for dep in graph.get(name, ()):
            visit(dep, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_only_the_covalent_adapter_imports_covalent() -> None:
    graph = _imports()
    importers = {
        name
        for name, deps in graph.items()
        if any(d == "covalent" or d.startswith("covalent.") for d in deps)
    }
    assert importers and all(name.startswith("oci_executor.covalent") for name in importers), importers


def test_importing_the_package_does_not_import_covalent() -> None:
    import subprocess
    import sys

    code = "import sys, oci_executor, oci_executor.backends.docker; print('covalent' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


BACKENDS = "oci_executor.backends"
FLOOR = f"{BACKENDS}.shared"


def _backend_of(module: str) -> str | None:
    """The backend a module belongs to (``docker``, ``podman``, ``slurm``, ``local``), or None."""
    if not module.startswith(f"{BACKENDS}.") or module.startswith(f"{FLOOR}.") or module == FLOOR:
        return None
    return module.split(".")[2]


def test_one_package_per_backend_over_a_shared_floor() -> None:
    rooms = {
        p.name.removesuffix(".py") for p in (PACKAGE / "backends").iterdir() if not p.name.startswith("__")
    }
    assert rooms == {"docker", "podman", "slurm", "local", "shared"}, rooms
    assert all(
        (PACKAGE / "backends" / name / "__init__.py").exists() for name in ("docker", "podman", "slurm")
    )


def test_no_backend_imports_another() -> None:
    crossings = sorted(
        f"{name} -> {dep}"
        for name, deps in _imports().items()
        for dep in deps
        if _backend_of(name) and _backend_of(dep) and _backend_of(name) != _backend_of(dep)
    )
    assert crossings == []


def test_the_shared_floor_imports_no_backend() -> None:
    graph = _imports()
    floor = [name for name in graph if name == FLOOR or name.startswith(f"{FLOOR}.")]
    assert len(floor) > 5
    upward = sorted(f"{name} -> {dep}" for name in floor for dep in graph[name] if _backend_of(dep))
    assert upward == []
