"""The docs agree with the code."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

from oci_executor import OCIExecutor
from oci_executor.oci import _EXECUTOR_PLUGIN_DEFAULTS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _documented_options() -> list[str]:
    text = (DOCS / "options.md").read_text(encoding="utf-8")
    section = text.split("## Options", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)


def test_options_page_lists_exactly_the_options_the_code_accepts() -> None:
    documented = _documented_options()
    accepted = [
        name
        for name, param in inspect.signature(OCIExecutor.__init__).parameters.items()
        if name != "self" and param.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    assert len(documented) == len(set(documented)), "an option is documented twice"
    assert set(documented) == set(accepted)
    assert set(accepted) == set(_EXECUTOR_PLUGIN_DEFAULTS), "every option must be settable in covalent.conf"


def test_options_page_shows_the_real_defaults() -> None:
    text = (DOCS / "options.md").read_text(encoding="utf-8")
    for name, default in _EXECUTOR_PLUGIN_DEFAULTS.items():
        if name == "image":
            continue
        row = re.search(rf"^\| `{name}` \| [^|]+ \| ([^|]+) \|", text, flags=re.MULTILINE)
        assert row, name
        shown = row.group(1).strip().strip("`")
        value = int(default) if isinstance(default, float) and default.is_integer() else default
        assert shown == json.dumps(value), f"{name}: docs say {shown}, code says {default!r}"
