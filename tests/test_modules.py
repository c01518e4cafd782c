"""Our own logic, without an engine: which modules a pickle names and which of them travel,
the host side of file transfers, the host-path warning. (Engines: tests/test_workflows.py.)"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from pathlib import Path

import cloudpickle
import pytest

from oci_executor import modules
from oci_executor.backend import Volume
from oci_executor.covalent.hostpaths import host_paths, warn_host_paths
from oci_executor.errors import FileTransferError
from oci_executor.transfer import FileSinks, file_source

PROJECT = str(Path(__file__).parent / "workflow_project")


@pytest.fixture
def project() -> object:
    sys.path.insert(0, PROJECT)
    import wf_helper  # type: ignore[import-not-found]

    yield wf_helper
    sys.path.remove(PROJECT)


def test_the_modules_a_pickle_names_by_reference_are_found_without_unpickling(project: object) -> None:
    from collections import OrderedDict

    def uses_module(x):  # type: ignore[no-untyped-def]
        return project.scaled(x)  # type: ignore[attr-defined]

    names = modules.referenced(
        [cloudpickle.dumps(uses_module), pickle.dumps(OrderedDict), pickle.dumps(Path("/x"), protocol=2)]
    )
    assert {"wf_helper", "collections", "pathlib"} <= names


def test_a_project_module_travels_with_what_it_imports_and_the_image_keeps_its_own(project: object) -> None:
    plan = modules.plan({"wf_helper", "json"}, modules.Inventory(frozenset()))
    assert sorted(plan.files) == ["wf_helper.py", "wf_helper_math.py"]
    assert plan.shipped == ["wf_helper", "wf_helper_math"] and not plan.missing and not plan.requirements
    assert not modules.plan({"wf_helper"}, modules.Inventory(frozenset({"wf_helper"}))).files


def test_an_installed_distribution_is_a_pinned_requirement_and_pure_python_travels(project: object) -> None:
    import pluggy

    plan = modules.plan({"pluggy._hooks"}, modules.Inventory(frozenset()))
    assert f"pluggy=={pluggy.__version__}" in plan.requirements
    assert "pluggy/__init__.py" in plan.files
    assert not plan.missing


def test_a_compiled_distribution_the_image_lacks_is_missing_and_a_major_mismatch_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plan = modules.plan({"pydantic_core"}, modules.Inventory(frozenset()))
    assert plan.missing == ["pydantic_core"] and not plan.files
    assert any(r.startswith("pydantic_core==") for r in plan.requirements)
    with caplog.at_level(logging.WARNING, logger="oci_executor.modules"):
        modules.plan({"pluggy"}, modules.Inventory(frozenset({"pluggy"}), {"pluggy": "0.1"}))
    assert "the image's pluggy 0.1 is used" in caplog.text


def test_a_missing_host_file_is_a_file_transfer_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FileTransferError, match=r"FileTransfer x -> y: cannot read .*nope.* No such file"):
        file_source(str(tmp_path / "nope"), "FileTransfer x -> y")
    (tmp_path / "here").write_bytes(b"abc")
    assert file_source(str(tmp_path / "here"), "t").size == 3


def test_sinks_write_files_in_order_and_report_an_unwritable_one(tmp_path: Path) -> None:
    sinks = FileSinks([str(tmp_path / "a" / "one"), str(tmp_path / "two")], ["first", "second"])
    sinks.expect([3, 2])
    sinks.write(b"abcd")
    sinks.write(b"e")
    assert (tmp_path / "a" / "one").read_bytes() == b"abc" and (tmp_path / "two").read_bytes() == b"de"
    assert not sinks.pending() and sinks.error is None
    (tmp_path / "ro").mkdir(mode=0o500)
    blocked = FileSinks([str(tmp_path / "ro" / "x")], ["FileTransfer a -> b (AFTER)"])
    blocked.expect([2])
    blocked.write(b"zz")
    if os.geteuid() != 0:
        assert blocked.error is not None and "FileTransfer a -> b (AFTER): cannot write" in str(blocked.error)
    assert not blocked.pending()


def test_a_deps_bash_naming_a_host_path_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    command = f"touch {tmp_path}/x && ls /usr/bin"
    assert host_paths(command, []) == [f"{tmp_path}/x"]
    assert host_paths(command, [Volume(str(tmp_path), str(tmp_path))]) == []
    with caplog.at_level(logging.WARNING, logger="oci_executor.covalent"):
        warn_host_paths([command], [])
        warn_host_paths([command], [])
    assert caplog.text.count("names") == 1 and f"volumes=['{tmp_path}:{tmp_path}']" in caplog.text


def test_a_shipped_module_that_imports_covalent_on_load_needs_it_in_the_image() -> None:
    plan = modules.plan({"tests.compat.test_basic"}, modules.Inventory(frozenset()))
    assert "tests/compat/test_basic.py" in plan.files
    assert plan.missing == ["covalent"] and modules.pin("covalent").startswith("covalent==0.240")
    assert not modules.plan({"tests.compat.test_basic"}, modules.Inventory(frozenset({"covalent"}))).missing


def test_extra_modules_travel_even_when_the_image_has_them(project: object) -> None:
    inventory = modules.Inventory(frozenset({"wf_helper", "wf_helper_math"}))
    assert not modules.plan({"wf_helper"}, inventory).files
    plan = modules.plan(set(), inventory, extra=["wf_helper"])
    assert "wf_helper.py" in plan.files and plan.shipped == ["wf_helper"]
