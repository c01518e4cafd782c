"""File transfers between local paths (after file_transfer_test, qa_wait_for_file_transfer)."""

from __future__ import annotations

from pathlib import Path

import covalent as ct

from tests.compat._util import completed, run


def test_before_transfer_feeds_the_electron(tmp_path: Path) -> None:
    source = tmp_path / "source.txt"
    source.write_text("hello")

    @ct.electron(files=[ct.fs.FileTransfer(str(source), "/tmp/oci-compat-in/dest.txt")])
    def read(files=None):  # type: ignore[no-untyped-def]
        return open("/tmp/oci-compat-in/dest.txt").read(), files

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return read()

    content, files = completed(run(workflow))
    assert content == "hello"
    assert files == [(str(source), "/tmp/oci-compat-in/dest.txt")]


def test_after_transfer_brings_the_electrons_file_back(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "result.txt"

    @ct.electron(files=[ct.fs.FileTransfer("/tmp/oci-compat-out.txt", str(dest), order=ct.fs.Order.AFTER)])
    def write(files=None):  # type: ignore[no-untyped-def]
        with open("/tmp/oci-compat-out.txt", "w") as handle:
            handle.write("made by the electron")

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return write()

    completed(run(workflow))
    assert dest.read_text() == "made by the electron"


def test_host_to_host_transfer_before(tmp_path: Path) -> None:
    """Copies between two host paths and checks the host: reaches host files by design."""
    source, dest = tmp_path / "a.txt", tmp_path / "b.txt"
    source.write_text("copied")

    @ct.electron(files=[ct.fs.FileTransfer(str(source), str(dest))])
    def nothing(files=None):  # type: ignore[no-untyped-def]
        return None

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        return nothing()

    completed(run(workflow))
    assert dest.read_text() == "copied"


def test_transfers_chain_through_two_electrons(tmp_path: Path) -> None:
    dest = tmp_path / "final.txt"

    @ct.electron(files=[ct.fs.FileTransfer("/tmp/oci-compat-step.txt", str(dest), order=ct.fs.Order.AFTER)])
    def produce(files=None):  # type: ignore[no-untyped-def]
        open("/tmp/oci-compat-step.txt", "w").write("step one")

    @ct.electron(files=[ct.fs.FileTransfer(str(dest), "/tmp/oci-compat-step2.txt")])
    def consume(files=None):  # type: ignore[no-untyped-def]
        return open("/tmp/oci-compat-step2.txt").read() + ", step two"

    @ct.lattice
    def workflow():  # type: ignore[no-untyped-def]
        first = produce()
        second = consume()
        ct.wait(child=second, parents=[first])
        return second

    assert completed(run(workflow)) == "step one, step two"
