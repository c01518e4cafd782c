"""``oci-executor logs``, ``trace`` and ``report``: watch a dispatch run, and look back at it.

They read the files the tasks' host writes (:mod:`oci_executor.trace`): run them as the user
of the Covalent server, on its machine. No Covalent and no engine needed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from oci_executor import livelog, report, trace


def _dispatch_dir(dispatch_id: str) -> Path:
    try:
        return trace.dispatch_dir(dispatch_id)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def cmd_logs(args: argparse.Namespace) -> int:
    path = _dispatch_dir(args.dispatch) / "live.jsonl"
    node = None if args.node is None else str(args.node)
    if args.follow:
        records = livelog.follow(path, node)
    elif path.exists():
        records = livelog.read(path, node)
    else:
        print(
            f"error: no live log for dispatch {args.dispatch} at {path}: check the dispatch ID, run this as the "
            "user of the Covalent server (same OCI_EXECUTOR_STATE_DIR / XDG_STATE_HOME), or add -f to wait for it",
            file=sys.stderr,
        )
        return 1
    try:
        for record in records:
            print(livelog.format_record(record), flush=True)
    except KeyboardInterrupt:
        return 130
    return 0


def _records(dispatch_id: str) -> list[dict[str, Any]] | None:
    _dispatch_dir(dispatch_id)
    try:
        return trace.read(dispatch_id)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _ms(value: Any) -> str:
    return f"{value * 1000:.0f}" if isinstance(value, (int, float)) else "-"


def cmd_trace(args: argparse.Namespace) -> int:
    records = _records(args.dispatch)
    if records is None:
        return 1
    if args.json:
        for record in records:
            print(json.dumps(record))
        return 0
    tasks = list(trace.tasks(records))
    if not tasks:
        print(f"no finished task in the trace of dispatch {args.dispatch} yet")
        return 0
    rows = [["NODE", "NAME", "STATUS", "WARM", "WAIT_MS", "START_MS", "RUN_MS", "TOTAL_MS", "RSS_MIB", "CPU_MS",
             "EXIT", "CONTAINER", "ENGINE", "HOST"]]  # fmt: skip
    for t in tasks:
        phases = {p["phase"]: p["duration"] for p in t.get("phases") or []}
        start = sum(phases.get(p, 0.0) for p in ("create", "attach", "hello")) if not t.get("warm") else None
        cpu = (t.get("cpu_user_s") or 0) + (t.get("cpu_system_s") or 0)
        exit_text = f"sig {t['signal']}" if t.get("signal") else str(t.get("exit_code", "-"))
        rows.append([
            str(t.get("node")), t.get("name") or "-", t.get("status") or "?", "warm" if t.get("warm") else "cold",
            _ms(phases.get("wait")), _ms(start), _ms(phases.get("run")), _ms(t.get("duration")),
            f"{(t.get('max_rss_kb') or 0) / 1024:.1f}", _ms(cpu), exit_text,
            (t.get("container") or "-").rsplit("/", 1)[-1][:12], t.get("engine") or "-", t.get("host") or "-",
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"trace: {_dispatch_dir(args.dispatch) / 'trace.jsonl'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    records = _records(args.dispatch)
    if records is None:
        return 1
    try:
        page = report.render(records, args.dispatch)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    Path(args.output).write_text(page, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``logs``, ``trace`` and ``report`` to the command line's subparsers."""
    logs = sub.add_parser(
        "logs", help="a dispatch's live task output (stdout, stderr, events); -f follows it"
    )
    logs.add_argument("dispatch", help="the dispatch ID")
    logs.add_argument("node", nargs="?", help="only this node (with -f: until its task ends)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing lines as they come")
    logs.set_defaults(func=cmd_logs)

    tr = sub.add_parser("trace", help="a dispatch's tasks: phases, warm or cold, memory, CPU, container")
    tr.add_argument("dispatch", help="the dispatch ID")
    tr.add_argument("--json", action="store_true", help="print the trace's JSON lines")
    tr.set_defaults(func=cmd_trace)

    rep = sub.add_parser("report", help="a dispatch's timeline and summary as one self-contained HTML file")
    rep.add_argument("dispatch", help="the dispatch ID")
    rep.add_argument("-o", "--output", default="report.html", help="where to write it (report.html)")
    rep.set_defaults(func=cmd_report)
