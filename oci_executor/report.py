"""``oci-executor report``: a dispatch's trace as one self-contained HTML page.

A timeline (inline SVG: a lane per container, a bar per task coloured by phase, the
container's removal at the end of its lane, the node ID and name on each bar, the host in
the lane's label) and a summary: tasks, cold vs warm, time spent waiting for containers and
creating them, the slowest tasks, peak memory. Inline CSS, no script, no network. A task's
wait for its container is a thin strip above the lane (it does not hold the container yet).
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from typing import Any

from oci_executor.trace import PHASES

COLOURS = {
    "wait": "#c7c7c7",
    "create": "#e6550d",
    "attach": "#fd8d3c",
    "hello": "#fdae6b",
    "environment": "#9467bd",
    "send": "#6baed6",
    "run": "#31a354",
    "receive": "#3182bd",
    "removal": "#843c39",
}
LANE, BAR, WAIT, LEFT, WIDTH, TOP = 40, 22, 5, 230, 900, 36
"""Lane height, bar height, wait strip height, label column, timeline width, axis height (pixels)."""
STYLE = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
svg text { font: 11px system-ui, sans-serif; } svg .lane-label { fill: #333; }
svg .bar-label { fill: #fff; pointer-events: none; } .status-error, .status-failed { color: #b00; }
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _secs(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return ""
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _phase_total(task: dict[str, Any], name: str) -> float:
    return sum(p.get("duration", 0.0) for p in task.get("phases") or [] if p.get("phase") == name)


def _lanes(tasks: Sequence[dict[str, Any]], removals: Sequence[dict[str, Any]]) -> list[str]:
    lanes: list[str] = []
    for item in [*tasks, *removals]:
        key = item.get("container") or ""
        if key not in lanes:
            lanes.append(key)
    return lanes


def timeline(tasks: Sequence[dict[str, Any]], removals: Sequence[dict[str, Any]]) -> str:
    """The SVG timeline."""
    lanes = _lanes(tasks, removals)
    t0 = min([t["start"] for t in tasks] + [r["start"] for r in removals])
    t1 = max([t.get("end") or t["start"] for t in tasks] + [r["start"] + r["duration"] for r in removals])
    span = max(t1 - t0, 1e-3)
    scale = WIDTH / span
    height = TOP + LANE * len(lanes) + 10
    out = [
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{LEFT + WIDTH + 20}" '
        f'height="{height}" role="img" aria-label="timeline of {len(tasks)} tasks">'
    ]
    for i in range(6):  # the time axis
        x = LEFT + WIDTH * i / 5
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{height}" stroke="#eee"/>')
        out.append(
            f'<text x="{x:.1f}" y="{TOP - 14}" text-anchor="middle">{_secs(span * i / 5) if i else "0 s"}</text>'
        )
    hosts = {t.get("container") or "": t.get("host") or "" for t in [*removals, *tasks]}
    engines = {t.get("container") or "": t.get("engine") or "" for t in [*removals, *tasks]}
    for row, key in enumerate(lanes):
        y = TOP + row * LANE
        label = f"{hosts.get(key, '')} · {engines.get(key, '')} {_short(key)}" if key else "no container"
        out.append(f'<text class="lane-label" x="4" y="{y + BAR / 2 + 4}">{_esc(label)}</text>')
    for task in tasks:
        y = TOP + lanes.index(task.get("container") or "") * LANE
        held = None  # where the task got its container (after waiting)
        for phase in task.get("phases") or []:
            x = LEFT + (phase["start"] - t0) * scale
            w = max(phase["duration"] * scale, 1.0)
            tip = f"node {task.get('node')} {task.get('name') or ''}: {phase['phase']} {_secs(phase['duration'])}"
            waiting = phase["phase"] == "wait"  # not yet on the container: a thin strip above its bar
            top, tall = (y - WAIT - 1, WAIT) if waiting else (y, BAR)
            if not waiting and held is None:
                held = x
            out.append(
                f'<rect class="bar phase-{_esc(phase["phase"])}" data-node="{_esc(task.get("node"))}" '
                f'x="{x:.2f}" y="{top}" width="{w:.2f}" height="{tall}" '
                f'fill="{COLOURS.get(phase["phase"], "#999")}"><title>{_esc(tip)}</title></rect>'
            )
        if held is not None:
            label = f"{task.get('node')} {task.get('name') or ''}".strip()
            out.append(
                f'<text class="bar-label" x="{held + 3:.1f}" y="{y + BAR / 2 + 4}">{_esc(label)}</text>'
            )
    for removal in removals:
        y = TOP + lanes.index(removal.get("container") or "") * LANE
        x = LEFT + (removal["start"] - t0) * scale
        w = max(removal["duration"] * scale, 1.0)
        tip = f"removal {_secs(removal['duration'])}"
        out.append(
            f'<rect class="bar phase-removal" x="{x:.2f}" y="{y}" width="{w:.2f}" height="{BAR}" '
            f'fill="{COLOURS["removal"]}"><title>{_esc(tip)}</title></rect>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _short(container: str) -> str:
    return container.rsplit("/", 1)[-1][:12]


def summary(tasks: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """The summary table's rows: (what, value)."""
    cold = [t for t in tasks if t.get("warm") is False]
    warm = [t for t in tasks if t.get("warm") is True]
    statuses: dict[str, int] = {}
    for task in tasks:
        statuses[task.get("status") or "?"] = statuses.get(task.get("status") or "?", 0) + 1
    wall = max(t.get("end") or t["start"] for t in tasks) - min(t["start"] for t in tasks)
    peak = max(tasks, key=lambda t: t.get("max_rss_kb") or 0)
    cpu = sum((t.get("cpu_user_s") or 0) + (t.get("cpu_system_s") or 0) for t in tasks)
    rows = [
        ("tasks", f"{len(tasks)} (" + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + ")"),
        ("cold / warm", f"{len(cold)} cold (new container), {len(warm)} warm (reused)"),
        ("containers", str(len({t.get('container') for t in tasks if t.get('container')}))),
        ("wall time", _secs(wall)),
        ("total wait for containers", _secs(sum(_phase_total(t, "wait") for t in tasks))),
        ("total container start (create, attach, hello)",
         _secs(sum(_phase_total(t, p) for t in tasks for p in ("create", "attach", "hello")))),
        ("total run", _secs(sum(_phase_total(t, "run") for t in tasks))),
        ("task CPU time (user + system)", _secs(cpu)),
        ("peak memory", f"{(peak.get('max_rss_kb') or 0) / 1024:.1f} MiB (node {peak.get('node')})"),
    ]  # fmt: skip
    return rows


def render(records: Sequence[dict[str, Any]], dispatch_id: str) -> str:
    """The whole page for a dispatch's trace records."""
    tasks = sorted((r for r in records if r.get("kind") == "task"), key=lambda r: r["start"])
    if not tasks:
        raise ValueError(f"the trace of dispatch {dispatch_id} has no finished task yet")
    containers = {t.get("container") for t in tasks}
    removals = [r for r in records if r.get("kind") == "removal" and r.get("container") in containers]
    legend = "".join(f'<span><i style="background:{COLOURS[p]}"></i>{p}</span>' for p in [*PHASES, "removal"])
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in summary(tasks))
    slow = sorted(tasks, key=lambda t: t.get("duration") or 0, reverse=True)
    head = [
        "node",
        "name",
        "status",
        "warm",
        "wait",
        "start",
        "run",
        "total",
        "peak RSS",
        "CPU",
        "container",
        "host",
    ]
    body = []
    for t in slow:
        start = sum(_phase_total(t, p) for p in ("create", "attach", "hello"))
        cells = [
            _esc(t.get("node")), _esc(t.get("name")),
            f'<span class="status-{_esc(t.get("status"))}">{_esc(t.get("status"))}</span>',
            "warm" if t.get("warm") else "cold",
        ]  # fmt: skip
        nums = [
            _secs(_phase_total(t, "wait")),
            "–" if t.get("warm") else _secs(start),
            _secs(_phase_total(t, "run")),
            _secs(t.get("duration")),
        ]
        nums += [
            f"{(t.get('max_rss_kb') or 0) / 1024:.1f} MiB",
            _secs((t.get("cpu_user_s") or 0) + (t.get("cpu_system_s") or 0)),
        ]
        row = "".join(f"<td>{c}</td>" for c in cells) + "".join(
            f'<td class="num">{_esc(n)}</td>' for n in nums
        )
        row += f"<td>{_esc(_short(t.get('container') or ''))}</td><td>{_esc(t.get('host'))}</td>"
        body.append(f"<tr>{row}</tr>")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(tasks[0]["start"]))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dispatch {_esc(dispatch_id)}: oci-executor report</title>
<style>{STYLE}</style></head><body>
<h1>Dispatch {_esc(dispatch_id)}</h1>
<p>{len(tasks)} task(s), first started {_esc(when)}. Hover a bar for its phase and duration; the thin grey strips above a lane are tasks waiting for that container.</p>
<div class="legend">{legend}</div>
{timeline(tasks, removals)}
<h2>Summary</h2>
<table id="summary">{rows}</table>
<h2>Tasks, slowest first</h2>
<table id="tasks"><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>
{"".join(body)}</table>
</body></html>
"""
