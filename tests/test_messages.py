"""What users read: every sentence of an error message or a doctor finding starts with a capital.

The messages are read from the source (the literal text of each ``SomeError(...)`` and
``Finding(...)`` call; computed parts count as a capitalized word), so a message the tests
never trigger is checked too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from oci_executor import errors

PACKAGE = Path(errors.__file__).parent
ABBREVIATIONS = ("e.g. ", "i.e. ", "etc. ", "vs. ")


def _text(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "X" for part in node.values)  # type: ignore[misc]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    if isinstance(node, ast.IfExp):
        return _text(node.body) + " X " + _text(node.orelse)
    return "X"


def _messages() -> list[tuple[str, str]]:
    names = {
        name for name, obj in vars(errors).items() if isinstance(obj, type) and issubclass(obj, Exception)
    }
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "testing.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            callee = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if callee in names and node.args:
                texts = [_text(node.args[0])]
            elif callee == "Finding":
                texts = [_text(arg) for arg in node.args[3:5]]
            else:
                continue
            found += [(f"{path.relative_to(PACKAGE)}:{node.lineno}", text) for text in texts]
    return found


def test_every_sentence_of_a_message_starts_with_a_capital() -> None:
    found = _messages()
    assert len(found) > 100, "the messages were not found"
    bad = []
    for where, text in found:
        cleaned = re.sub(r"`[^`]*`", "X", text).replace("...", "X")  # commands keep their case
        for abbreviation in ABBREVIATIONS:
            cleaned = cleaned.replace(abbreviation, "X ")
        match = re.search(r"[.!?] +[a-z]", cleaned)
        if match:
            bad.append(f"{where}: ...{cleaned[max(0, match.start() - 40) : match.end() + 30]}...")
    assert not bad, "sentences starting in lowercase after a full stop:\n" + "\n".join(bad)
