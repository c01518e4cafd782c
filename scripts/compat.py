"""Compatibility suite: Covalent workflow tests with every electron on oci, against local.

    python scripts/compat.py                      # our rewrites of Covalent's functional tests
    python scripts/compat.py --upstream           # Covalent 0.240.0's own tests/functional_tests
    python scripts/compat.py --modes local,docker -k file_transfer

Starts one Covalent server (in a temporary HOME), then runs the tests once per mode in a pytest
subprocess: ``local`` as written, and for each engine with scripts/compat_plugin.py switching
every ``local``/``dask`` executor (electrons and lattices) to ``OCIExecutor(backend=...)``.
Prints the pass counts side by side and each test that passes on local but not on a backend.

``--upstream`` reads Covalent's tests from ``$COVALENT_SRC`` (a checkout at v0.240.0), else
downloads the v0.240.0 source archive once into ~/.cache/oci-executor/ (needs the internet);
nothing of Covalent's is kept in this repository. Without it, the tests are our own rewrites in
tests/compat/ (run in CI, offline). Run from the repository root, as root for every engine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_TAG = "v0.240.0"
UPSTREAM_URL = f"https://github.com/AgnostiqHQ/covalent/archive/refs/tags/{UPSTREAM_TAG}.tar.gz"
MODES = ("local", "docker", "podman", "podman-rootless")
HOST_FILES = {
    "test_local_file_transfer[": 'both ends are host paths, checked on the host: volumes=["/tmp:/tmp"]',
    "test_local_file_transfer_with_kwargs_": 'deletes the destination on the host: volumes=["/tmp:/tmp"]',
    "test_local_file_transfer_collected_nodes": 'deletes the destinations on the host: volumes=["/tmp:/tmp"]',
    "test_host_to_host_transfer_before": 'both ends are host paths, checked on the host: volumes=["/tmp:/tmp"]',
    "test_electron_deps_bash": 'DepsBash touches a file that the test checks on the host: volumes=["/tmp:/tmp"]',
    "test_bash_decorator": 'the bash lepton writes a file that the test reads on the host: volumes=["/tmp:/tmp"]',
}
"""Tests that reach host files by design (see docs/compatibility.md), with the volumes= form
that makes them pass."""
NEEDS_COVALENT = {
    "test_return_value_kinds_and_their_parts": "returns an instance of a class defined in a module that imports covalent",
}
"""Tests whose task loads a module importing Covalent: they need Covalent in the image (an
image with it, or the environments of issue #19 once they provide it)."""


def upstream_tests() -> tuple[Path, Path]:
    """(folder to run pytest in, test folder) of Covalent's functional tests."""
    src = os.environ.get("COVALENT_SRC")
    if src:
        return Path(src), Path(src) / "tests" / "functional_tests"
    cache = Path.home() / ".cache" / "oci-executor" / f"covalent-{UPSTREAM_TAG.lstrip('v')}"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        archive = cache.parent / "covalent.tar.gz"
        urllib.request.urlretrieve(UPSTREAM_URL, archive)
        with tarfile.open(archive) as tar:
            tar.extractall(cache.parent, filter="data")
        (cache.parent / f"covalent-{UPSTREAM_TAG.lstrip('v')}").rename(cache) if not cache.exists() else None
        archive.unlink()
    return cache, cache / "tests" / "functional_tests"


def run_mode(mode: str, cwd: Path, tests: Path, env: dict[str, str], extra: list[str]) -> dict[str, str]:
    """{test id: passed/failed/skipped} of one pytest run."""
    from tests import engines

    report = Path(env["HOME"]) / f"compat-{mode}.xml"
    env = {**env, "OCI_COMPAT_MODE": "local" if mode == "local" else mode.split("-")[0]}
    if mode != "local":
        env["OCI_COMPAT_ADDRESS"] = engines.address(mode)
    argv = [sys.executable, "-m", "pytest", str(tests), "-p", "compat_plugin", "-p", "no:cacheprovider"]
    argv += [f"--confcutdir={tests}", f"--rootdir={cwd}", "--continue-on-collection-errors"]
    argv += ["-q", "-x" if "-x" in extra else "", f"--junitxml={report}", "--timeout=300", "-o", "addopts="]
    argv += [a for a in extra if a != "-x"]
    subprocess.run([a for a in argv if a], cwd=cwd, env=env, check=False, stdout=sys.stderr)
    outcomes: dict[str, str] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcomes[name] = (
            "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        )
    return outcomes


def table(results: dict[str, dict[str, str]]) -> str:
    modes = list(results)
    lines = ["| | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    total = len(set().union(*(set(r) for r in results.values())))
    counts = [sum(v == "passed" for v in results[m].values()) for m in modes]
    lines.append("| passed of " + str(total) + " | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upstream", action="store_true", help="run Covalent's own functional tests")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", help="also write the outcomes to this file")
    parser.add_argument(
        "--volumes", default="", help='volumes= for the oci runs, comma-separated, e.g. "/tmp:/tmp"'
    )
    args, extra = parser.parse_known_args()
    home = tempfile.mkdtemp(prefix="oci-compat-home-")
    os.environ.update(HOME=home, COVALENT_CONFIG_DIR=f"{home}/.config/covalent", COVALENT_DISABLE_DASK="1")
    sys.path.insert(0, str(ROOT))
    from tests import engines
    from tests.covalent_server import running_server

    cwd, tests = upstream_tests() if args.upstream else (ROOT, ROOT / "tests" / "compat")
    # The server imports test modules that define electrons at module level, as Covalent's
    # local executor must: their package root goes on its path (a link, not the checkout, whose
    # covalent/ would shadow the installed one).
    shim = Path(home) / "shim"
    shim.mkdir()
    (shim / "tests").symlink_to(cwd / "tests")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ)
    env["OCI_COMPAT_IMAGE"] = engines.test_image()
    env["OCI_COMPAT_VOLUMES"] = args.volumes
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "scripts"), str(ROOT), env.get("PYTHONPATH", "")])
    results: dict[str, dict[str, str]] = {}
    with running_server({"executors.oci.image": engines.test_image()}):
        for mode in args.modes.split(","):
            results[mode] = run_mode(mode, cwd, tests, env, extra)
    print(table(results))
    baseline = results.get("local", {})
    for mode, outcome in results.items():
        lost = sorted(t for t, v in baseline.items() if v == "passed" and outcome.get(t) != "passed")
        for test in lost:
            why = next((v for k, v in HOST_FILES.items() if k in test), "")
            print(
                f"{mode}: {test} passes on local, not here"
                + (f" (host files by design: {why})" if why else "")
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
