"""Watching tasks: live output, the trace, events from inside a task, the timeline report.

The live output through a real Covalent server is in tests/test_covalent_e2e.py; here tasks
run through the engine core on every contract target, and the report opens in real headless
Chromium.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest

from oci_executor import livelog, settings, trace
from oci_executor.core import run_task
from oci_executor.task import payload_from_callable
from tests import engines
from tests.conftest import Target


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OCI_EXECUTOR_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def _values(target: Target, **options: Any) -> dict[str, Any]:
    values = {**settings.defaults(), "image": target.image, "backend": target.backend, "keep_warm": 2.0}
    values.update(address=target.address, **options)
    if target.identity:
        values["ssh_identity"] = target.identity
    return settings.parse(values)


def busy(n: int) -> int:
    import oci_executor.task  # the runner's stand-in inside a container

    print("starting")
    data = bytearray(40 * 1024 * 1024)
    for i in range(len(data) // 4096):
        data[i * 4096] = 1  # touch every page: the peak RSS must show it
    oci_executor.task.progress(0.5, "half way", step=n)
    print("oops", file=sys.stderr)
    total = sum(range(2_000_000))
    oci_executor.task.event("done", total=total)
    return n * 2


def _run(target: Target, dispatch: str, node: int, fn: Any = busy, **options: Any) -> Any:
    payload = payload_from_callable(fn, [node], {})
    return run_task(
        _values(target, **options), payload, dispatch_id=dispatch, node_id=str(node), name=fn.__name__
    )


def test_every_task_is_traced_with_phases_resources_and_events(target: Target) -> None:
    dispatch = f"t-{uuid.uuid4().hex[:8]}"
    first = _run(target, dispatch, 0)
    second = _run(target, dispatch, 1)
    assert (first.load_value(), second.load_value()) == (0, 2)
    assert first.stdout == "starting\n" and first.stderr == "oops\n"  # whole, in order

    records = trace.read(dispatch)
    tasks = list(trace.tasks(records))
    assert [t["node"] for t in tasks] == ["0", "1"]
    cold, warm = tasks
    assert list(cold) == list(trace.TASK_FIELDS)
    assert [p["phase"] for p in cold["phases"]] == [
        "wait",
        "create",
        "attach",
        "hello",
        "send",
        "run",
        "receive",
    ]
    assert [p["phase"] for p in warm["phases"]] == ["wait", "send", "run", "receive"]
    assert (cold["warm"], warm["warm"]) == (False, True)
    assert cold["container"] == warm["container"] == first.container_id
    if target.backend == "slurm":  # the node's name, for the report's lanes
        assert cold["container"].endswith(f"-{cold['host']}"), cold
    assert cold["host"]
    for task in tasks:
        assert task["status"] == "ok" and task["exit_code"] == 0 and task["signal"] is None
        assert task["engine"] == target.backend and task["image"] == target.image and task["name"] == "busy"
        assert task["max_rss_kb"] > 40 * 1024, task  # the 40 MiB it touched
        assert task["cpu_user_s"] > 0.01  # it summed two million numbers
        assert task["stdout_bytes"] == len("starting\n")
        starts = [p["start"] for p in task["phases"]]
        assert starts == sorted(starts) and all(p["duration"] >= 0 for p in task["phases"])
        run = next(p for p in task["phases"] if p["phase"] == "run")
        assert run["duration"] < task["duration"]
    events = [r for r in records if r["kind"] == "event"]
    assert [(e["node"], e["event"], e["fraction"], e["message"]) for e in events] == [
        ("0", "progress", 0.5, "half way"),
        ("0", "event", None, "done"),
        ("1", "progress", 0.5, "half way"),
        ("1", "event", None, "done"),
    ]
    assert events[0]["data"] == {"step": 0} and events[1]["data"] == {"total": sum(range(2_000_000))}

    live = list(livelog.read(trace.dispatch_dir(dispatch) / "live.jsonl", node="1"))
    shown = [(r["stream"], r.get("text")) for r in live]
    # Each stream in order; output and events travel through different pipes, so an event and
    # a line printed right after it may come in either order.
    assert [s for s in shown if s[0] in ("progress", "event")] == [
        ("progress", '50% half way {"step": 1}'),
        ("event", 'done {"total": 1999999000000}'),
    ]
    assert [s for s in shown if s[0] in ("stdout", "stderr")] in (
        [("stdout", "starting"), ("stderr", "oops")],
        [("stderr", "oops"), ("stdout", "starting")],
    )
    assert shown[-1] == ("end", None)


def test_a_failing_task_and_a_timeout_are_traced(target: Target) -> None:
    from oci_executor.errors import TaskTimeoutError
    from tests import tasks

    dispatch = f"t-{uuid.uuid4().hex[:8]}"
    outcome = _run(target, dispatch, 0, fn=tasks.fail, reuse="never")
    assert not outcome.ok
    with pytest.raises(TaskTimeoutError):
        run_task(
            _values(target, reuse="never"),
            payload_from_callable(time.sleep, [30], {}),
            dispatch_id=dispatch,
            node_id="1",
            time_limit=1,
        )
    failed, timed_out = trace.tasks(trace.read(dispatch))
    assert failed["status"] == "failed" and "ValueError" in failed["error"]
    assert timed_out["status"] == "error" and timed_out["error"].startswith("TaskTimeoutError")
    assert timed_out["signal"] == 9


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "oci_executor.cli", *args], capture_output=True, text=True)


def test_trace_and_logs_commands(state_dir: Path) -> None:
    dispatch = f"t-{uuid.uuid4().hex[:8]}"
    _run(Target("local", "local", "", engines.test_image()), dispatch, 3)
    table = _cli("trace", dispatch)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:4] == ["NODE", "NAME", "STATUS", "WARM"]
    assert row.split()[:4] == ["3", "busy", "ok", "cold"]
    kinds = [json.loads(line)["kind"] for line in _cli("trace", dispatch, "--json").stdout.splitlines()]
    assert "task" in kinds and "event" in kinds
    logs = _cli("logs", dispatch, "3")
    assert "node 3 busy stdout  | starting" in logs.stdout and "task ended: ok" in logs.stdout
    missing = _cli("trace", "no-such-dispatch")
    assert missing.returncode == 1 and "no trace for dispatch no-such-dispatch at" in missing.stderr
    assert _cli("logs", "../etc").returncode != 0


# -- live output: lines, rate limit (our own logic, with a real file and logger) -----------------


def test_live_output_joins_split_lines_and_holds_back_a_flood(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="oci_executor.live")
    out = livelog.LiveOutput("d1", "7", "flood", tmp_path / "live.jsonl")
    out.output("stdout", b"hel")
    out.output("stdout", b"lo\nwor")
    out.output("stdout", b"ld\n")
    line = b"x" * 99 + b"\n"
    started = time.perf_counter()
    for _ in range(50):  # 50 MB, as 1 MB chunks the runner relays
        out.output("stdout", line * (1024 * 1024 // 100))
    spent = time.perf_counter() - started
    out.close("ok")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:2] == [
        "[dispatch d1 node 7 (flood) stdout] hello",
        "[dispatch d1 node 7 (flood) stdout] world",
    ]
    allowed = livelog.LOG_BURST + livelog.LOG_RATE * (spent + 1) + 10  # burst, refill, held-back lines
    assert len(messages) <= allowed, "the server's log was flooded"
    held = [m for m in messages if "held back" in m]
    assert held and "of stdout from this log" in held[-1]
    assert (
        sum(int(m.split("held back ")[1].split()[0]) for m in held) + len(messages) - len(held) - 2
        >= 50 * 10485
    )
    assert spent < 5, f"relaying 50 MB of lines took {spent:.1f} s"
    records = list(livelog.read(tmp_path / "live.jsonl"))
    assert records[0]["text"] == "hello" and records[-1]["stream"] == "end"
    assert any(r.get("held_back_lines") for r in records)  # the file is bounded too


def test_the_events_api_works_on_the_host_too(caplog: pytest.LogCaptureFixture) -> None:
    import oci_executor.task

    caplog.set_level(logging.INFO, logger="oci_executor.task")
    oci_executor.task.progress(0.25, "a quarter", epoch=1)
    oci_executor.task.event("checkpoint", path="/tmp/x")
    assert '"fraction": 0.25' in caplog.text and '"checkpoint"' in caplog.text
    with pytest.raises(ValueError, match="progress fraction must be a number from 0 to 1, got 1.5"):
        oci_executor.task.progress(1.5)


# -- the report, in a real browser --------------------------------------------------------------


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if engines.in_ci():
            pytest.fail("CI needs chromium (scripts/setup-engines.sh installs it)", pytrace=False)
        pytest.skip("no chromium: sudo bash scripts/setup-engines.sh installs it")
    return exe


def _browser(exe: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    profile = tempfile.mkdtemp(prefix="oci-chromium-")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"]  # fmt: skip
    try:
        return subprocess.run([exe, *flags, *args], capture_output=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit, non-interlaced PNG."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(png):
        (length,), kind = struct.unpack(">I", png[pos : pos + 4]), png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", data[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * channels, [], bytearray(width * channels)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(b"".join(bytes(line[j : j + 3]) for j in range(0, stride, channels)))
        prev = line
    return width, height, rows


def test_the_report_draws_a_bar_per_task_in_headless_chromium(tmp_path: Path) -> None:
    exe = _chromium()
    local = Target("local", "local", "", engines.test_image())
    dispatch = f"t-{uuid.uuid4().hex[:8]}"
    for node in range(3):
        _run(local, dispatch, node, reuse="never")
    deadline = time.monotonic() + 10
    while (
        len([r for r in trace.read(dispatch) if r["kind"] == "removal"]) < 3 and time.monotonic() < deadline
    ):
        time.sleep(0.1)  # removals are recorded in the background
    page = tmp_path / "report.html"
    result = _cli("report", dispatch, "-o", str(page))
    assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in text

    dom = _browser(exe, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    html = dom.stdout.decode()
    run_bars = html.count('class="bar phase-run"')
    assert run_bars == 3, html[:3000]
    assert html.count('class="bar phase-create"') == 3 and html.count('class="bar phase-removal"') == 3
    assert "<th>cold / warm</th><td>3 cold (new container), 0 warm (reused)</td>" in html
    for node in range(3):
        assert f'data-node="{node}"' in html

    shot = tmp_path / "shot.png"
    taken = _browser(exe, f"--screenshot={shot}", "--window-size=1200,600", page.as_uri())
    assert taken.returncode == 0 and shot.exists(), taken.stderr.decode(errors="replace")[-2000:]
    width, height, rows = _pixels(shot.read_bytes())
    assert (width, height) == (1200, 600)
    colours = {row[i : i + 3] for row in rows for i in range(0, len(row), 3)}
    assert len(colours) > 10, "the screenshot is blank"
    run_green = bytes.fromhex("31a354")  # the run phase's colour
    assert run_green in colours, "no run bar in the screenshot"
    if os.environ.get("OCI_TEST_SAVE_SCREENSHOT"):
        shutil.copy(shot, os.environ["OCI_TEST_SAVE_SCREENSHOT"])
