"""The docs agree with the code."""

from __future__ import annotations

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
