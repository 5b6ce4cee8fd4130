"""``capstan audit report --html FILE``: one self-contained page for a security reviewer.

Built from the orchestrator's hash-chained audit log alone (never from what nodes
say): who was given which operation on which node over the window -- every token
minted is a capability someone held -- drawn as identities -> operations -> nodes,
with the delegations the orchestrator issued drawn node to node; the refusals by
reason; and the result of verifying the whole chain. No script, no font, no image
and no link leaves the file: it opens the same offline and in ten years.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ROW = 34  # vertical distance between two boxes of a column
BOX_H = 24
COLS = (30, 390, 720)  # x of the identities, operations and nodes columns
BOX_W = (300, 230, 170)
TOP = 40


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"


def short_identity(uri: str) -> str:
    """``spiffe://td/user/alice`` -> ``user/alice`` (the trust domain is the page's title)."""
    rest = uri.removeprefix("spiffe://")
    _, _, path = rest.partition("/")
    return path or uri


@dataclass
class Report:
    """What the page shows, computed from audit entries (a pure function: testable)."""

    trust_domain: str = ""
    since: float = 0.0
    until: float = 0.0
    entries: int = 0
    # (identity, op, node) -> [count, first, last]
    grants: dict[tuple[str, str, str], list[float]] = field(default_factory=dict)
    # (source node, target node, op) -> count: a delegation lets the first call the second
    delegations: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    # (event, reason) -> count
    refusals: Counter[tuple[str, str]] = field(default_factory=Counter)
    execs: list[dict[str, Any]] = field(default_factory=list)
    chain_ok: bool = False
    chain_message: str = ""


def build(
    entries: Iterable[Mapping[str, Any]],
    *,
    node_names: Mapping[str, str],
    chain_ok: bool,
    chain_message: str,
    since: float = 0.0,
    until: float = 0.0,
) -> Report:
    """``node_names``: node SPIFFE id -> name (an unknown id is shown as it is)."""
    report = Report(chain_ok=chain_ok, chain_message=chain_message, since=since, until=until)
    for e in entries:
        at = float(e.get("at", 0))
        if (since and at < since) or (until and at > until):
            continue
        report.entries += 1
        event = str(e.get("event", ""))
        if event == "token.minted":
            aud = str(e.get("aud", ""))
            sub = str(e.get("sub", ""))
            if not report.trust_domain and sub.startswith("spiffe://"):
                report.trust_domain = sub.removeprefix("spiffe://").partition("/")[0]
            node = node_names.get(aud, short_identity(aud))
            key = (short_identity(sub), str(e.get("op", "")), node)
            cell = report.grants.setdefault(key, [0, at, at])
            cell[0] += 1
            cell[1] = min(cell[1], at)
            cell[2] = max(cell[2], at)
        elif event == "delegation.issued":
            report.delegations[
                (str(e.get("target", "")), str(e.get("source", "")), str(e.get("op", "")))
            ] += 1
        elif event.endswith(".refused"):
            reason = str(e.get("reason") or e.get("code") or "-")
            method = str(e.get("method", ""))
            what = f"{method}: {reason}" if method else reason
            report.refusals[(event, " ".join(what.split())[:160])] += 1
        elif event == "exec.granted":
            report.execs.append(dict(e))
    return report


def render(report: Report, *, generated: float) -> str:
    """The page: HTML with inline CSS and SVG only."""
    e = html.escape
    title = f"Capstan audit report{' — ' + report.trust_domain if report.trust_domain else ''}"
    window = (
        f"{_when(report.since) if report.since else 'the beginning'} → "
        f"{_when(report.until) if report.until else _when(generated)}"
    )
    chain_class = "ok" if report.chain_ok else "bad"
    chain_word = "intact" if report.chain_ok else "BROKEN"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Nothing may load from anywhere: the page is its own world.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">",
        f"<title>{e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">Window: {e(window)} · {report.entries} audit entries · '
        f"generated {e(_when(generated))}</p>",
        f'<div class="chain {chain_class}" id="chain">Hash chain {chain_word}: '
        f"{e(report.chain_message)}</div>",
        "<h2>Who could do what, on which node</h2>",
        '<p class="note">Every capability token the orchestrator minted in the window: '
        "identity → operation → node. Line width grows with the number of tokens. "
        "Dashed arrows between nodes are delegations (the orchestrator let the first "
        "node call the second).</p>",
        _graph(report),
        _grants_table(report),
        "<h2>Refusals by reason</h2>",
        _refusals(report),
        "<h2>Commands run in containers (exec)</h2>",
        _execs(report),
        "</body></html>",
    ]
    return "\n".join(parts)


def _graph(report: Report) -> str:
    e = html.escape
    identities = sorted({k[0] for k in report.grants})
    operations = sorted({k[1] for k in report.grants})
    nodes = sorted(
        {k[2] for k in report.grants}
        | {n for d in report.delegations for n in d[:2] if n}
    )
    columns = (identities, operations, nodes)
    if not any(columns):
        return '<p class="empty" id="graph">No capability was minted in this window.</p>'
    height = TOP + ROW * max(len(c) for c in columns) + 30
    width = COLS[2] + BOX_W[2] + 200

    def y(col: Sequence[str], name: str) -> float:
        return TOP + ROW * col.index(name) + BOX_H / 2

    first: Counter[tuple[str, str]] = Counter()
    second: Counter[tuple[str, str]] = Counter()
    for (ident, op, node), (count, _, _) in report.grants.items():
        first[(ident, op)] += int(count)
        second[(op, node)] += int(count)
    out = [
        f'<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="identities to operations to nodes">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#b45309"/></marker></defs>',
    ]
    for x, label in zip(COLS, ("IDENTITIES", "OPERATIONS", "NODES"), strict=True):
        out.append(f'<text class="head" x="{x}" y="{TOP - 14}">{label}</text>')
    for (a, b), count in sorted(first.items()):
        out.append(_edge(COLS[0] + BOX_W[0], y(identities, a), COLS[1], y(operations, b), count))
    for (a, b), count in sorted(second.items()):
        out.append(_edge(COLS[1] + BOX_W[1], y(operations, a), COLS[2], y(nodes, b), count))
    for (src, dst, op), count in sorted(report.delegations.items()):
        if src not in nodes or dst not in nodes:
            continue
        x = COLS[2] + BOX_W[2]
        y1, y2 = y(nodes, src), y(nodes, dst)
        bend = x + 60 + 12 * abs(nodes.index(src) - nodes.index(dst))
        out.append(
            f'<path class="deleg" d="M{x},{y1} C{bend},{y1} {bend},{y2} {x + 2},{y2}" '
            f'marker-end="url(#arrow)"><title>{e(src)} may call {e(dst)}: {e(op)} '
            f"&#215;{count}</title></path>"
        )
        out.append(
            f'<text class="deleg-label" x="{bend - 4}" y="{(y1 + y2) / 2 + 4}">'
            f"{e(op)} &#215;{count}</text>"
        )
    for col, names, kind in zip(range(3), columns, ("ident", "op", "node"), strict=True):
        for name in names:
            top = TOP + ROW * names.index(name)
            out.append(
                f'<g class="box {kind}"><rect x="{COLS[col]}" y="{top}" width="{BOX_W[col]}" '
                f'height="{BOX_H}" rx="5"/><text x="{COLS[col] + 8}" y="{top + 16}">'
                f"{e(_fit(name, BOX_W[col]))}</text><title>{e(name)}</title></g>"
            )
    out.append("</svg>")
    return "\n".join(out)


def _fit(text: str, width: int) -> str:
    chars = max(4, width // 7)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _edge(x1: float, y1: float, x2: float, y2: float, count: int) -> str:
    mid = (x1 + x2) / 2
    w = 1 + 2.2 * math.log2(1 + count)
    return (
        f'<path class="edge" stroke-width="{w:.1f}" '
        f'd="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"><title>{count} token(s)</title></path>'
    )


def _grants_table(report: Report) -> str:
    if not report.grants:
        return ""
    e = html.escape
    rows = [
        "<table><thead><tr><th>Identity</th><th>Operation</th><th>Node</th>"
        "<th>Tokens</th><th>First</th><th>Last</th></tr></thead><tbody>"
    ]
    for (ident, op, node), (count, first, last) in sorted(report.grants.items()):
        rows.append(
            f"<tr><td>{e(ident)}</td><td>{e(op)}</td><td>{e(node)}</td>"
            f'<td class="num">{int(count)}</td><td>{e(_when(first))}</td>'
            f"<td>{e(_when(last))}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _refusals(report: Report) -> str:
    if not report.refusals:
        return '<p class="empty" id="refusals">No call was refused in this window.</p>'
    e = html.escape
    top = max(report.refusals.values())
    rows = ['<table id="refusals"><thead><tr><th>Event</th><th>Reason</th>'
            "<th>Count</th><th></th></tr></thead><tbody>"]
    for (event, reason), count in report.refusals.most_common():
        bar = 200 * count / top
        rows.append(
            f"<tr><td>{e(event)}</td><td>{e(reason)}</td><td class=\"num\">{count}</td>"
            f'<td><svg width="204" height="14"><rect class="bar" x="0" y="2" width="{bar:.0f}" '
            'height="10"/></svg></td></tr>'
        )
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _execs(report: Report) -> str:
    if not report.execs:
        return '<p class="empty">No exec was granted in this window.</p>'
    e = html.escape
    rows = ["<table><thead><tr><th>When</th><th>Who</th><th>Instance</th><th>Node</th>"
            "<th>Command line (never its output)</th></tr></thead><tbody>"]
    for x in report.execs:
        command = " ".join(str(a) for a in x.get("command", []))
        rows.append(
            f"<tr><td>{e(_when(float(x.get('at', 0))))}</td>"
            f"<td>{e(short_identity(str(x.get('by', ''))))}</td>"
            f"<td>{e(str(x.get('workload', '')))}</td><td>{e(str(x.get('node', '')))}</td>"
            f"<td><code>{e(command)}</code></td></tr>"
        )
    rows.append("</tbody></table>")
    return "\n".join(rows)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px 32px;color:#1f2933;
background:#fbfbfa}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;
padding-bottom:4px}
.meta,.note{color:#52606d;font-size:13px;margin:4px 0}
.chain{margin:14px 0;padding:10px 14px;border-radius:6px;font-weight:600}
.chain.ok{background:#e3f9e5;color:#05400a;border:1px solid #51ca58}
.chain.bad{background:#ffe3e3;color:#610404;border:1px solid #e12d39}
svg text{font-size:12px;fill:#1f2933}
text.head{font-weight:700;fill:#52606d;letter-spacing:.05em}
.box rect{stroke-width:1}
.ident rect{fill:#e0e8f9;stroke:#4c63b6}.op rect{fill:#fff3c4;stroke:#cb6e17}
.node rect{fill:#e3f9e5;stroke:#3f9142}
path.edge{fill:none;stroke:#9aa5b1;opacity:.75}
path.deleg{fill:none;stroke:#b45309;stroke-width:2;stroke-dasharray:6 4}
text.deleg-label{font-size:11px;fill:#b45309}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f4f8}td.num{text-align:right}rect.bar{fill:#e12d39}
code{font-family:ui-monospace,monospace;font-size:12px}
.empty{color:#52606d;font-style:italic}
"""
