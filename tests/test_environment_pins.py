"""Modules follow the task into its environment: a compiled distribution of this host that the
image lacks becomes a pin of the task's environment, with no packages declared.

The host's distribution is the test index's ``ocitest-beta`` 1.0 wheel, unpacked into a folder
put on this process's ``sys.path``, with a compiled file named in its RECORD as a compiled
wheel's is, so it cannot travel as source. The engines and pip are real (see test_environments.py).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from oci_executor import modules, provide
from tests import tasks
from tests.conftest import Target, _leaving_nothing
from tests.test_environments import META, Index, env_store, index  # noqa: F401 - fixtures

WHEEL = "ocitest_beta-1.0-py3-none-any.whl"


@pytest.fixture
def host_beta(index: Index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:  # noqa: F811
    """``ocitest_beta`` 1.0 installed on this host only, as a compiled distribution."""
    site = tmp_path / "site"
    with zipfile.ZipFile(index.files / WHEEL) as wheel:
        wheel.extractall(site)
    compiled = "ocitest_beta/_speedups.cpython-3-x86_64-linux-gnu.so"  # never imported
    (site / compiled).write_bytes(b"")
    with open(site / "ocitest_beta-1.0.dist-info" / "RECORD", "a", encoding="utf-8") as record:
        record.write(f"{compiled},,\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    modules._distributions.cache_clear()
    for cache in ("_INVENTORIES", "_BY_NAME", "_PLANS"):  # the first runner of the image is asked
        monkeypatch.setattr(provide, cache, {})
    import ocitest_beta  # type: ignore[import-not-found]

    yield ocitest_beta
    sys.modules.pop("ocitest_beta", None)
    modules._distributions.cache_clear()


@pytest.fixture(params=["local", "docker"])
def pin_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from _leaving_nothing(request.param)


def test_a_compiled_host_distribution_the_image_lacks_joins_the_environment(
    env_store: Path,  # noqa: F811
    index: Index,  # noqa: F811
    host_beta: object,
    pin_target: Target,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "oci_executor.core")
    executor = pin_target.executor()  # no packages declared
    first = executor.run_sync(tasks.module_value, [host_beta], {}, META)
    assert first.ok, first.traceback
    value, folder = first.load_value().split("|")
    assert value == "ocitest-beta 1.0"  # this host's version, from the environment
    if pin_target.is_engine:
        assert folder == "/opt/oci-executor/env"
    else:
        assert folder.startswith(str(env_store / "envs"))
    assert [os.path.basename(p) for p in index.wheel_downloads()] == [WHEEL]

    # The image's inventory is known now: the pin is added up front, the environment reused.
    second = executor.run_sync(tasks.module_value, [host_beta], {}, META)
    assert second.ok, second.traceback
    assert second.load_value() == first.load_value()
    assert [os.path.basename(p) for p in index.wheel_downloads()] == [WHEEL]
    assert len(os.listdir(env_store / "envs")) == 1
    turned_away = [r for r in caplog.records if "adding them to the task's environment" in r.message]
    assert len(turned_away) == 1  # only the first runner of the image lacked it
