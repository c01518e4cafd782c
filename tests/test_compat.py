"""The compatibility suite (scripts/compat.py on tests/compat): every one of our rewrites of
Covalent's functional tests that passes on Covalent's local executor passes with every electron
and lattice on oci, on each engine, except the ones that reach host files by design and the
ones listed as needing Covalent in the image (until environments provide it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import engines

pytestmark = pytest.mark.covalent

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(1500)
def test_what_passes_on_local_passes_on_every_engine(tmp_path: Path) -> None:
    for target in engines.ENGINE_TARGETS:
        engines.require_engine(target)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from compat import HOST_FILES, NEEDS_COVALENT  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    report = tmp_path / "compat.json"
    modes = ",".join(["local", *engines.ENGINE_TARGETS])
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "COVALENT_CONFIG_DIR")}
    done = subprocess.run(
        [sys.executable, "scripts/compat.py", "--modes", modes, "--json", str(report)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(report.read_text())
    passed_locally = {t for t, v in results["local"].items() if v == "passed"}
    assert len(passed_locally) >= len(results["local"]) - 2, results["local"]
    for target in engines.ENGINE_TARGETS:
        lost = {t for t in passed_locally if results[target].get(t) != "passed"}
        by_design = {t for t in lost if any(key in t for key in (*HOST_FILES, *NEEDS_COVALENT))}
        assert lost == by_design, f"{target}: {sorted(lost - by_design)}\n{done.stdout}"
