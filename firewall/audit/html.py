"""One self-contained HTML file a reviewer opens in a browser: decisions over time per
agent, violations per rule, drift alerts, the lineage graph, and a searchable table of
blocked exchanges. No network, no external script or style: the charts are inline SVG
drawn here, the search a few lines of inline JavaScript.
"""

from __future__ import annotations

import html
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from firewall.audit.reader import rule_ids
from firewall.audit.report import edges, stats

__all__ = ["html_report"]

_PALETTE = ("#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477", "#66aa00")
_WIDTH, _BAR = 720, 18


def html_report(records: Iterable[dict[str, Any]], title: str = "agent-firewall audit report") -> str:
    records = list(records)
    exchanges = [r for r in records if r.get("direction") in ("request", "response") and "action" in r]
    _, rules = stats(records)
    sections = [
        _summary(records, exchanges),
        _section("Decisions over time, per agent", _timeline(exchanges), "timeline"),
        _section("Rules that fired (blocks, tags, redactions)", _bars(rules), "rules"),
        _section("Drift: each agent's detector scores over time, and the alerts",
                 _curves(exchanges) + _drift([r for r in records if r.get("event") == "drift"]), "drift"),
        _section("Lineage: who passed words to whom", _graph(records), "lineage"),
        _section("Blocked exchanges", _blocked(records), "blocked"),
    ]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 2em; }}
table {{ border-collapse: collapse; width: 100%; }} td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
th {{ background: #f4f4f4; }} .empty {{ color: #888; font-style: italic; }} #search {{ width: 30em; padding: 4px; }}
svg text {{ font: 11px system-ui, sans-serif; }}
</style></head><body>
<h1>{_e(title)}</h1>
{''.join(sections)}
<script>
const box = document.getElementById("search");
if (box) box.addEventListener("input", () => {{
  const needle = box.value.toLowerCase();
  let shown = 0;
  for (const row of document.querySelectorAll("#blocked-table tbody tr")) {{
    const hit = row.textContent.toLowerCase().includes(needle);
    row.style.display = hit ? "" : "none";
    shown += hit;
  }}
  document.getElementById("shown").textContent = shown;
}});
</script>
</body></html>
"""


def _summary(records: list[dict[str, Any]], exchanges: list[dict[str, Any]]) -> str:
    actions = Counter(str(r.get("action")) for r in exchanges)
    moments = sorted(str(r["ts"]) for r in records if r.get("ts"))
    span = f"{moments[0][:19]} to {moments[-1][:19]} UTC" if moments else "no timestamps"
    counts = ", ".join(f"{n} {a}" for a, n in sorted(actions.items())) or "none"
    return (f'<p id="summary">{len(records)} records ({span}); inspected exchanges by action: {_e(counts)}; '
            f'{sum(r.get("event") == "lineage" for r in records)} lineage edges, '
            f'{sum(r.get("event") == "quarantine" for r in records)} quarantine changes.</p>')


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _timeline(exchanges: list[dict[str, Any]]) -> str:
    """Per agent, a row of bars: exchanges per time bucket, the blocked part in red."""
    if not exchanges:
        return '<p class="empty">No inspected exchanges.</p>'
    moments = sorted(str(r.get("ts", "")) for r in exchanges)
    buckets = sorted({m[:16] for m in moments})  # by minute (YYYY-MM-DDTHH:MM)
    if len(buckets) > 60:
        buckets = sorted({m[:13] for m in moments})  # by hour
    width = len(buckets[0])
    index = {bucket: i for i, bucket in enumerate(buckets)}
    per_agent: dict[str, list[list[int]]] = defaultdict(lambda: [[0, 0] for _ in buckets])
    for record in exchanges:
        cell = per_agent[str(record.get("agent") or "-")][index[str(record.get("ts", ""))[:width]]]
        cell[0] += 1
        cell[1] += record.get("action") == "block"
    peak = max(cell[0] for cells in per_agent.values() for cell in cells) or 1
    row, label_w = 46, 130
    step = (_WIDTH - label_w) / len(buckets)
    parts = []
    for r, (agent, cells) in enumerate(sorted(per_agent.items())):
        top = r * row
        parts.append(f'<text x="0" y="{top + 30}">{_e(agent)}</text>')
        for i, (total, blocked) in enumerate(cells):
            if not total:
                continue
            x, h = label_w + i * step, 36 * total / peak
            hb = 36 * blocked / peak
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{top + 40 - h:.1f}" width="{max(step - 2, 1):.1f}" '
                         f'height="{h:.1f}" fill="#3366cc"><title>{_e(agent)} {buckets[i]}: {total} '
                         f'({blocked} blocked)</title></rect>')
            if blocked:
                parts.append(f'<rect class="bar blocked" x="{x:.1f}" y="{top + 40 - hb:.1f}" '
                             f'width="{max(step - 2, 1):.1f}" height="{hb:.1f}" fill="#dc3912"/>')
    height = row * len(per_agent) + 20
    axis = f'<text x="{label_w}" y="{height - 4}">{_e(buckets[0])}</text>' + (
        f'<text x="{_WIDTH}" y="{height - 4}" text-anchor="end">{_e(buckets[-1])}</text>' if len(buckets) > 1 else "")
    return (f'<svg id="timeline-chart" width="{_WIDTH + 10}" height="{height}" role="img">{"".join(parts)}{axis}</svg>'
            '<p>Blue: exchanges; red: blocked.</p>')


def _bars(counts: dict[str, int]) -> str:
    if not counts:
        return '<p class="empty">No rule fired.</p>'
    label_w, peak = 220, max(counts.values())
    parts = []
    for i, (rule, count) in enumerate(counts.items()):
        y = i * (_BAR + 6)
        w = (_WIDTH - label_w - 40) * count / peak
        parts.append(f'<text x="0" y="{y + 13}">{_e(rule)}</text>'
                     f'<rect class="bar" x="{label_w}" y="{y}" width="{w:.1f}" height="{_BAR}" fill="{_PALETTE[i % 8]}"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 13}">{count}</text>')
    return f'<svg id="rules-chart" width="{_WIDTH}" height="{len(counts) * (_BAR + 6)}" role="img">{"".join(parts)}</svg>'


def _curves(exchanges: list[dict[str, Any]]) -> str:
    """Per detector, a line per agent: the highest score of each exchange's new messages
    (the `top` of its detector runs), in time order: what drift watches, drawn."""
    series: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in sorted(exchanges, key=lambda r: str(r.get("ts", ""))):
        for run in record.get("detectors") or ():
            if isinstance(run, dict) and run.get("texts"):
                series[str(run.get("detector"))][str(record.get("agent") or "-")].append(float(run.get("top", 0.0)))
    if not series:
        return '<p class="empty">No detector ran on the exchanges of this log.</p>'
    charts = []
    height, left = 120, 40
    for detector, by_agent in sorted(series.items()):
        longest = max(len(values) for values in by_agent.values())
        step = (_WIDTH - left - 10) / max(1, longest - 1)
        lines, legend = [], []
        for i, (agent, values) in enumerate(sorted(by_agent.items())):
            colour = _PALETTE[i % len(_PALETTE)]
            points = " ".join(f"{left + j * step:.1f},{10 + (height - 20) * (1 - min(max(v, 0.0), 1.0)):.1f}"
                              for j, v in enumerate(values))
            lines.append(f'<polyline class="curve" points="{points}" fill="none" stroke="{colour}" stroke-width="1.5">'
                         f"<title>{_e(agent)}: {len(values)} exchanges</title></polyline>")
            legend.append(f'<tspan fill="{colour}">■ {_e(agent)}</tspan> ')
        axis = (f'<text x="0" y="14">1.0</text><text x="0" y="{height - 6}">0.0</text>'
                f'<line x1="{left}" y1="{height - 10}" x2="{_WIDTH}" y2="{height - 10}" stroke="#ccc"/>')
        charts.append(f"<p><b>{_e(detector)}</b></p>"
                      f'<svg class="curves" id="curve-{_e(detector)}" width="{_WIDTH}" height="{height + 16}" role="img">'
                      f'{axis}{"".join(lines)}<text x="{left}" y="{height + 12}">{"".join(legend)}</text></svg>')
    return "".join(charts)


def _drift(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return '<p class="empty">No drift alert in this log.</p>'
    rows = "".join(
        f"<tr><td>{_e(str(a.get('ts', ''))[:19])}</td><td>{_e(str(a.get('agent')))}</td><td>{_e(str(a.get('metric')))}</td>"
        f"<td>{a.get('value', 0):.3g}</td><td>{(a.get('baseline') or {}).get('mean', 0):.3g} ± "
        f"{(a.get('baseline') or {}).get('std', 0):.3g}</td><td>{_e(str(a.get('method')))} {a.get('statistic', 0):.3g} "
        f"&gt; {a.get('threshold', 0):.3g}</td></tr>" for a in alerts)
    return ("<table id='drift-table'><thead><tr><th>when</th><th>agent</th><th>metric</th><th>value</th>"
            f"<th>baseline</th><th>statistic</th></tr></thead><tbody>{rows}</tbody></table>")


def _graph(records: list[dict[str, Any]]) -> str:
    found = edges(records)
    if not found:
        return '<p class="empty">No agent passed another agent\'s words in this log.</p>'
    quarantined = {str(r.get("agent")) for r in records if r.get("event") == "quarantine" and r.get("to") == "quarantine"}
    names = sorted({e.source for e in found} | {e.agent for e in found})
    size, radius = 420, 150
    at = {name: (size / 2 + radius * math.cos(2 * math.pi * i / len(names) - math.pi / 2),
                 size / 2 + radius * math.sin(2 * math.pi * i / len(names) - math.pi / 2)) for i, name in enumerate(names)}
    parts = ['<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>']
    for edge in found:
        (x1, y1), (x2, y2) = at[edge.source], at[edge.agent]
        dx, dy = x2 - x1, y2 - y1
        length = math.hypot(dx, dy) or 1
        sx, sy, ex, ey = x1 + dx / length * 28, y1 + dy / length * 28, x2 - dx / length * 28, y2 - dy / length * 28
        colour = "#cc0000" if edge.blocked or edge.flagged else "#555"
        parts.append(f'<line class="edge" x1="{sx:.1f}" y1="{sy:.1f}" x2="{ex:.1f}" y2="{ey:.1f}" stroke="{colour}" '
                     f'stroke-width="{1 + min(edge.requests, 6) / 2:.1f}" marker-end="url(#arrow)"><title>'
                     f'{_e(edge.source)} → {_e(edge.agent)}: {edge.requests} requests, {edge.blocked} blocked, '
                     f'{edge.flagged} flagged</title></line>')
    for name, (x, y) in at.items():
        fill = "#f4cccc" if name in quarantined else "#e8f0fe"
        parts.append(f'<circle class="agent" cx="{x:.1f}" cy="{y:.1f}" r="26" fill="{fill}" stroke="#3366cc"/>'
                     f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">{_e(name)}</text>')
    return (f'<svg id="lineage-graph" width="{size}" height="{size}" role="img">{"".join(parts)}</svg>'
            '<p>Arrows: whose words reached whom (red: some were blocked or flagged). Filled red: quarantined.</p>')


def _blocked(records: list[dict[str, Any]]) -> str:
    blocked = [r for r in records if r.get("action") == "block"]
    if not blocked:
        return '<p class="empty">Nothing was blocked.</p>'
    rows = []
    for record in blocked:
        rules = ", ".join(rule_ids(record))
        who = str(record.get("agent") or "-")
        if record.get("source"):
            who = f"{record['source']} → {who}"
        rows.append(f"<tr><td>{_e(str(record.get('ts', ''))[:19])}</td><td>{_e(str(record.get('exchange')))}</td>"
                    f"<td>{_e(who)}</td><td>{_e(str(record.get('direction') or record.get('event') or ''))}</td>"
                    f"<td>{_e(rules or str(record.get('event', '')))}</td><td>{_e(str(record.get('error') or ''))}</td></tr>")
    return (f'<p><input id="search" type="search" placeholder="Filter: agent, rule, exchange id…"> '
            f'<span id="shown">{len(rows)}</span> of {len(rows)} shown</p>'
            "<table id='blocked-table'><thead><tr><th>when</th><th>exchange</th><th>who</th><th>direction</th>"
            f"<th>rules</th><th>error</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _e(text: str) -> str:
    return html.escape(text, quote=True)
