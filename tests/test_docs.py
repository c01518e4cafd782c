"""The docs agree with the code."""

from __future__ import annotations

import ast
import builtins
import inspect
import re
from pathlib import Path

import pytest

from oci_executor import OCIExecutor, errors, settings
from oci_executor.covalent.oci import COVALENT_OPTIONS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_options_page_shows_the_table_generated_from_the_options() -> None:
    text = (DOCS / "options.md").read_text(encoding="utf-8")
    section = text.split("## Options", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|")) + "\n"
    assert table == settings.markdown_table(), (
        "docs/options.md is out of date: paste the output of `python -m oci_executor.settings`"
    )


def test_every_option_is_a_keyword_of_the_executor_and_a_covalent_conf_default() -> None:
    from oci_executor.covalent.oci import _EXECUTOR_PLUGIN_DEFAULTS

    accepted = [
        name
        for name, param in inspect.signature(OCIExecutor).parameters.items()
        if param.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    assert accepted == list(settings.NAMES)
    assert set(_EXECUTOR_PLUGIN_DEFAULTS) == set(settings.NAMES)
    assert not set(COVALENT_OPTIONS) & set(settings.NAMES)


def test_an_unknown_option_is_refused_naming_it() -> None:
    with pytest.raises(errors.ConfigurationError, match="unknown option.*imag"):
        OCIExecutor(imag="python:3.11-slim")


def _error_classes() -> list[str]:
    return sorted(
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, errors.OCIExecutorError)
    )


def test_the_error_tree_in_errors_docstring_names_every_error() -> None:
    drawn = set(re.findall(r"[─└├] ([A-Z][A-Za-z]+Error)\b", errors.__doc__ or "")) | {"OCIExecutorError"}
    assert drawn == set(_error_classes())


# -- the site: every page in the nav and linked from the index ---------------------------

ROOT = DOCS.parent


def _pages() -> set[str]:
    return {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}


def _nav_pages() -> list[str]:
    """The pages listed under ``nav:`` in mkdocs.yml (``- Title: page.md`` or ``- page.md``)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = text.split("\nnav:\n", 1)[1]
    return re.findall(r"^\s+-\s+(?:[^:\n]+:\s+)?(\S+\.md)\s*$", nav, flags=re.MULTILINE)


def _links(text: str) -> set[str]:
    """Relative .md targets of the markdown links in ``text`` (anchors dropped)."""
    return {target for target in re.findall(r"\]\(([^)\s#:]+\.md)(?:#[^)]*)?\)", text)}


def test_every_docs_page_is_in_the_nav_and_linked_from_the_index() -> None:
    pages = _pages()
    nav = _nav_pages()
    linked = _links((DOCS / "index.md").read_text(encoding="utf-8"))
    assert sorted(set(nav)) == sorted(nav), f"mkdocs.yml lists a page twice: {nav}"
    assert not set(nav) - pages, f"mkdocs.yml's nav lists pages that do not exist: {sorted(set(nav) - pages)}"
    assert not pages - set(nav), f"add these pages to the nav in mkdocs.yml: {sorted(pages - set(nav))}"
    missing = pages - linked - {"index.md"}
    assert not missing, f"link these pages from docs/index.md: {sorted(missing)}"
    assert not linked - pages, f"docs/index.md links pages that do not exist: {sorted(linked - pages)}"


def test_the_readme_links_only_docs_pages_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = {t for t in _links(readme) if t.startswith("docs/")}
    assert targets, "the README links the docs"
    assert {t.removeprefix("docs/") for t in targets} <= _pages()


# -- troubleshooting.md: one section per error class, with a message the code can produce --

TROUBLESHOOTING = DOCS / "troubleshooting.md"
FOREIGN_ERRORS = {
    # Errors the docs may name that are not ours (besides built-in ones): name -> module (checked).
    "TaskRuntimeError": "covalent._shared_files.exceptions",
    "TaskCancelledError": "covalent._shared_files.exceptions",
}
_ANY = ".*?"


def _public_error_classes() -> dict[str, type[BaseException]]:
    return {
        name: obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
        and not name.startswith("_")
    }


def _pattern(node: ast.expr) -> str:
    """A regex matching every text the message expression ``node`` can evaluate to: string
    literals must appear as written, anything computed (``{...}`` in an f-string, a variable,
    a call) matches any text, ``a if c else b`` either branch."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return re.escape(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(
            re.escape(part.value) if isinstance(part, ast.Constant) else _ANY for part in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _pattern(node.left) + _pattern(node.right)
    if isinstance(node, ast.IfExp):
        return f"(?:{_pattern(node.body)}|{_pattern(node.orelse)})"
    return _ANY


def _literal_length(pattern: str) -> int:
    return len(re.sub(r"\(\?:|\||\)|\.\*\?|\\", "", pattern))


def _callee(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _message_templates() -> dict[str, list[str]]:
    """For each error class, a regex per place in oci_executor/ that builds one with a message
    of its own (``ErrorClass("text ...")``, ``super().__init__("text ...")`` inside the class, or
    a call of a factory function in the same module that passes its first argument on).
    Places that pass on a message from elsewhere (a variable) add no template."""
    names = set(_public_error_classes())
    templates: dict[str, list[str]] = {name: [] for name in names}
    package = Path(errors.__file__).parent
    paths = [
        p for p in sorted(package.rglob("*.py")) if p.name != "testing.py"
    ]  # FakeBackend's are not what users see
    # Factories: functions that pass their first parameter on as an error's message
    # (``def ssh_error(message, ...): return SshConnectionError(message, ...)``).
    factories = {
        fn.name: call.func.id
        for path in paths
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(fn, ast.FunctionDef) and fn.args.args
        for call in ast.walk(fn)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id in names
        and call.args
        and isinstance(call.args[0], ast.Name)
        and call.args[0].id == fn.args.args[0].arg
    }
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        owners = {
            id(call): cls.name
            for cls in ast.walk(tree)
            if isinstance(cls, ast.ClassDef) and cls.name in names
            for call in ast.walk(cls)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in names:
                name = func.id
            elif isinstance(func, (ast.Name, ast.Attribute)) and _callee(func) in factories:
                name = factories[_callee(func)]
            elif (
                isinstance(func, ast.Attribute)
                and func.attr == "__init__"
                and isinstance(func.value, ast.Call)
                and isinstance(func.value.func, ast.Name)
                and func.value.func.id == "super"
                and id(node) in owners
            ):
                name = owners[id(node)]
            else:
                continue
            message = (
                node.args[0]
                if node.args
                else next((k.value for k in node.keywords if k.arg == "message"), None)
            )
            if message is None:
                continue
            pattern = _pattern(message)
            if _literal_length(pattern) >= 10:
                templates[name].append(pattern)
    return templates


def _sections() -> dict[str, str]:
    """``## `ClassName` `` sections of troubleshooting.md by class name."""
    text = TROUBLESHOOTING.read_text(encoding="utf-8")
    sections = {}
    for chunk in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        heading, _, body = chunk.partition("\n")
        match = re.fullmatch(r"`(\w+)`", heading.strip())
        assert match, (
            f"troubleshooting.md: a section heading must be one error class in backticks: {heading!r}"
        )
        sections[match.group(1)] = body
    return sections


def _examples(body: str) -> list[str]:
    return re.findall(r"^```text\n(.*?)\n```$", body, flags=re.MULTILINE | re.DOTALL)


def test_troubleshooting_has_a_section_for_every_error_class_and_no_other() -> None:
    classes = set(_public_error_classes())
    sections = set(_sections())
    assert not classes - sections, (
        f"add a section to docs/troubleshooting.md for: {sorted(classes - sections)}"
    )
    assert not sections - classes, (
        f"docs/troubleshooting.md has sections for no class: {sorted(sections - classes)}"
    )


def test_the_docs_name_only_errors_that_exist() -> None:
    import importlib

    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        prose = re.sub(r"^```text\n.*?\n```$", "", text, flags=re.MULTILINE | re.DOTALL)  # not the examples
        named = set(re.findall(r"\b[A-Z][A-Za-z]*Error\b", prose))
        for name in sorted(named - set(_public_error_classes()) - set(dir(builtins))):
            assert name in FOREIGN_ERRORS, (
                f"{path.name} names {name}, which oci_executor/errors.py does not define"
            )
            assert hasattr(importlib.import_module(FOREIGN_ERRORS[name]), name), name


def test_troubleshooting_shows_each_class_as_errors_py_defines_it() -> None:
    classes = _public_error_classes()
    for name, body in _sections().items():
        cls = classes[name]
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        assert summary and summary in body, f"{name}: quote its docstring's first line: {summary!r}"
        bases = re.search(r"^\*Subclass of (.+?)\.\*$", body, flags=re.MULTILINE)
        assert bases, f"{name}: state its base classes as '*Subclass of `Base`.*'"
        shown = re.findall(r"`(\w+)`", bases.group(1))
        assert shown == [base.__name__ for base in cls.__bases__], f"{name}: bases are {cls.__bases__}"


def test_troubleshooting_examples_are_messages_the_code_produces() -> None:
    templates = _message_templates()
    for name, body in _sections().items():
        examples = _examples(body)
        if not templates[name]:
            assert not examples, (
                f"{name}: no code builds this error with a message of its own; show no example"
            )
            assert "never raised" in body, f"{name}: say that it is never raised itself"
            continue
        assert examples, f"{name}: show an example message (a ```text block) the code produces"
        for example in examples:
            assert any(re.fullmatch(t, example, flags=re.DOTALL) for t in templates[name]), (
                f"{name}: this example is not a message oci_executor produces (its literal text must "
                f"appear as in the code, in order):\n{example}"
            )


def test_the_readme_lists_every_option() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = readme.split("\nOptions (", 1)[1].split("plus\nCovalent's", 1)[0]
    assert re.findall(r"`(\w+)`", paragraph) == list(settings.NAMES)


def _python_blocks() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for block in re.findall(r"^```python\n(.*?)^```$", path.read_text(encoding="utf-8"), re.M | re.S):
            found.append((path.name, block))
    return found


def test_code_examples_parse_and_pass_only_real_options() -> None:
    allowed = set(settings.NAMES) | set(COVALENT_OPTIONS)
    calls = 0
    for page, block in _python_blocks():
        tree = ast.parse(block, filename=page)  # a SyntaxError names the page
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "OCIExecutor":
                calls += 1
                unknown = {k.arg for k in node.keywords} - allowed
                assert not unknown, f"{page}: OCIExecutor(...) example passes unknown options {unknown}"
    assert calls >= 3


def _architecture_tree() -> set[str]:
    """The module paths the tree at the top of docs/architecture.md draws (``a/b.py``, ``a/``)."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    block = text.split("```", 2)[1]
    paths: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        name = line.strip().split(" ", 1)[0]
        if not name.endswith((".py", "/")):
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "".join(folder for _, folder in stack) + name
        paths.add(path)
        if name.endswith("/"):
            stack.append((indent, name))
    return paths


def test_the_architecture_tree_draws_every_module_and_no_other() -> None:
    package = DOCS.parent / "oci_executor"
    modules = {
        str(p.relative_to(package.parent))
        for p in package.rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    }
    modules |= {str(p.parent.relative_to(package.parent)) + "/" for p in package.rglob("__init__.py")}
    drawn = _architecture_tree()
    drawn -= {p for p in drawn if p.endswith("/__init__.py") and (package.parent / p).exists()}
    assert sorted(modules - drawn) == [], "modules missing from docs/architecture.md's tree"
    assert sorted(drawn - modules) == [], "docs/architecture.md's tree draws modules that do not exist"


def test_the_backend_template_page_shows_the_tested_template() -> None:
    text = (DOCS / "backends.md").read_text(encoding="utf-8")
    shown = text.split("```python\n", 1)[1].split("```", 1)[0]
    template = (DOCS.parent / "tests" / "cli_backend" / "oci_cli_backend.py").read_text(encoding="utf-8")
    assert shown == template, "docs/backends.md must show tests/cli_backend/oci_cli_backend.py as it is"


def test_the_observability_page_documents_every_trace_field_and_phase() -> None:
    from oci_executor import trace

    text = (DOCS / "observability.md").read_text(encoding="utf-8")
    rows = " ".join(line.split("|")[1] for line in text.splitlines() if line.startswith("| `"))
    documented = set(re.findall(r"`(\w+)`", rows))
    assert set(trace.TASK_FIELDS) <= documented, set(trace.TASK_FIELDS) - documented
    assert set(trace.PHASES) <= documented, set(trace.PHASES) - documented
    assert (DOCS / "observability-report.png").exists(), "the report's screenshot"
