"""Renderers of a :class:`~warehouse.diff.model.Comparison`: plain text, markdown and self-contained HTML.

The HTML report draws one inline SVG histogram per numeric column with deltas; it loads
nothing from outside (no script, no stylesheet, no font).
"""

from __future__ import annotations

import html
import re

from warehouse.diff.model import ColumnStats, Comparison, DeltaStats, KeyReport, Sample
from warehouse.explain import explain_command

__all__ = ["render_html", "render_markdown", "render_text"]

_CLASS_TITLES = {
    "only_in_a": "only in A",
    "only_in_b": "only in B",
    "changed": "changed",
    "identical": "identical",
}


def _num(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _key(key: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())


def _key_lines(side: str, relation: str, r: KeyReport) -> list[str]:
    lines = []
    if r.null_key_rows:
        lines.append(f"{side} ({relation}): {r.null_key_rows} row(s) with a NULL key, left out of the comparison")
    if r.duplicate_keys:
        sample = "; ".join(f"{_key(d.key)} ×{d.rows}" for d in r.duplicate_sample)
        lines.append(
            f"{side} ({relation}): {r.duplicate_keys} duplicated key(s) over {r.duplicate_rows} rows "
            f"(first row per key compared), e.g. {sample}"
        )
    return lines


def _schema_lines(c: Comparison) -> list[str]:
    s = c.schema
    lines = [f"added column {x.name} {x.type}" for x in s.added]
    lines += [f"removed column {x.name} {x.type}" for x in s.removed]
    lines += [f"type of {x.name} changed: {x.a_type} -> {x.b_type}" for x in s.type_changed]
    return lines


_PROJECTION_TABLE = re.compile(r"(?:^|\.)projections\.([a-z][a-z0-9_]*)_v([0-9]+)$")


def _explain_hint(c: Comparison, row_class: str, s: Sample) -> str | None:
    """The ``projectionist explain`` command for a sampled differing key of a projection version (the side holding
    the row); None for identical rows and for relations that are not projection versions."""
    match = _PROJECTION_TABLE.search(c.a if row_class == "only_in_a" else c.b)
    if match is None or row_class == "identical":
        return None
    return "explain: " + explain_command(match[1], int(match[2]), [s.key[k] for k in c.keys])


def _sample_line(c: Comparison, row_class: str, s: Sample) -> str:
    parts = [_key(s.key)]
    if row_class == "changed":
        assert s.a is not None and s.b is not None
        parts.append("; ".join(f"{col}: {s.a[col]} -> {s.b[col]}" for col in s.columns))
    if s.trail is not None:
        t = s.trail
        if t.events:
            types = ", ".join(f"{name}×{n}" for name, n in t.event_types.items())
            parts.append(
                f"trail: {t.events} event(s) in {', '.join(t.streams)} at positions "
                f"{t.first_position}..{t.last_position} ({types})"
            )
        else:
            parts.append("trail: no events")
    hint = _explain_hint(c, row_class, s)
    if hint is not None:
        parts.append(hint)
    return " | ".join(parts)


def _delta_line(d: DeltaStats) -> str:
    return (
        f"delta B-A over {d.count} row(s): min {_num(d.min)}, p50 {_num(d.p50)}, p95 {_num(d.p95)}, "
        f"max {_num(d.max)}, sum {_num(d.sum)}"
    )


def _tolerance_note(col: ColumnStats) -> str:
    if col.tolerance is None:
        return ""
    return f" ({col.tolerated} within tolerance {_num(col.tolerance)})"


def render_text(c: Comparison) -> str:
    """A plain-text report for a terminal."""
    out = [f"compare A={c.a}  B={c.b}  on {', '.join(c.keys)}", ""]
    key_lines = _key_lines("A", c.a, c.key_reports["a"]) + _key_lines("B", c.b, c.key_reports["b"])
    if key_lines:
        out += ["Keys", *(f"  {line}" for line in key_lines), ""]
    schema_lines = _schema_lines(c)
    out += ["Schema", *(f"  {line}" for line in schema_lines or ["same columns and types"]), ""]
    out.append(f"Rows ({c.total_keys} keys)")
    for name in ("only_in_a", "only_in_b", "changed", "identical"):
        r = c.rows[name]
        out.append(f"  {_CLASS_TITLES[name]:<11} {r.count:>12}  {r.percent:8.4f} %")
    out += ["", "Columns"]
    width = max([len(col.name) for col in c.columns] + [6])
    for col in c.columns:
        out.append(
            f"  {col.name:<{width}}  {col.matches:>12} match  {col.mismatches:>10} differ  "
            f"{col.null_on_one_side:>8} null on one side  {col.match_percent:8.4f} %{_tolerance_note(col)}"
        )
        if col.delta is not None:
            out.append(f"  {'':<{width}}  {_delta_line(col.delta)}")
    for name in ("changed", "only_in_a", "only_in_b", "identical"):
        items = c.samples.get(name) or []
        if items:
            out += ["", f"Sample: {_CLASS_TITLES[name]}"]
            out += [f"  {_sample_line(c, name, s)}" for s in items]
    return "\n".join(out) + "\n"


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(c: Comparison) -> str:
    """A markdown report: key problems, schema diff, row classes, columns, samples."""
    out = [f"### `{_md(c.a)}` → `{_md(c.b)}` on `{', '.join(c.keys)}`", ""]
    key_lines = _key_lines("A", c.a, c.key_reports["a"]) + _key_lines("B", c.b, c.key_reports["b"])
    if key_lines:
        out += ["**Keys**", "", *(f"- {_md(line)}" for line in key_lines), ""]
    schema_lines = _schema_lines(c)
    out += ["**Schema**", "", *(f"- {_md(line)}" for line in schema_lines or ["same columns and types"]), ""]
    out += ["| rows | count | % |", "| --- | ---: | ---: |"]
    for name in ("only_in_a", "only_in_b", "changed", "identical"):
        r = c.rows[name]
        out.append(f"| {_CLASS_TITLES[name]} | {r.count} | {r.percent:.4f} |")
    out += ["", "| column | matches | mismatches | null on one side | tolerated | match % | delta B−A |"]
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for col in c.columns:
        delta = _md(_delta_line(col.delta)) if col.delta is not None else ""
        out.append(
            f"| {_md(col.name)} | {col.matches} | {col.mismatches} | {col.null_on_one_side} | {col.tolerated} | "
            f"{col.match_percent:.4f} | {delta} |"
        )
    for name in ("changed", "only_in_a", "only_in_b", "identical"):
        items = c.samples.get(name) or []
        if items:
            out += ["", f"**Sample: {_CLASS_TITLES[name]}**", ""]
            out += [f"- {_md(_sample_line(c, name, s))}" for s in items]
    return "\n".join(out) + "\n"


def _svg_histogram(d: DeltaStats, width: int = 480, height: int = 160) -> str:
    """Equal-width bars of the delta counts, with the min and max edges labelled."""
    counts = d.histogram_counts
    top = max(counts) or 1
    plot_h = height - 30
    bar_w = (width - 20) / len(counts)
    bars = []
    for i, n in enumerate(counts):
        h = plot_h * n / top
        lo, hi = d.histogram_edges[i], d.histogram_edges[i + 1]
        bars.append(
            f'<rect x="{10 + i * bar_w:.1f}" y="{10 + plot_h - h:.1f}" width="{max(bar_w - 1, 1):.1f}" '
            f'height="{h:.1f}" fill="#4a78b5"><title>{_num(lo)} .. {_num(hi)}: {n}</title></rect>'
        )
    labels = (
        f'<text x="10" y="{height - 5}" font-size="11">{html.escape(_num(d.histogram_edges[0]))}</text>'
        f'<text x="{width - 10}" y="{height - 5}" font-size="11" text-anchor="end">'
        f"{html.escape(_num(d.histogram_edges[-1]))}</text>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="histogram of B minus A">{"".join(bars)}{labels}</svg>'
    )


def render_html(c: Comparison, verdict: str | None = None) -> str:
    """A self-contained HTML page: the markdown report's content plus a delta histogram per column.

    ``verdict`` is the declared-changes verdict the text report ends with (``str`` of an
    ``ExpectationResult``); the page shows it first, in green or red.
    """
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>diff {e(c.a)} → {e(c.b)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child"
        "{text-align:left}code{background:#f4f4f4}</style></head><body>",
        f"<h1><code>{e(c.a)}</code> → <code>{e(c.b)}</code></h1>",
        f"<p>keys: <code>{e(', '.join(c.keys))}</code>; compared at {e(c.compared_at)}</p>",
    ]
    if verdict is not None:
        headline, _, details = verdict.partition("\n")
        state = "satisfied" if "expectation satisfied" in headline else "violated"
        color = "#1a7f37" if state == "satisfied" else "#cf222e"
        parts.append(f"<h2>Declared changes</h2><p class='verdict {state}' style='color:{color}'>{e(headline)}</p>")
        problems = [line.strip().removeprefix("- ") for line in details.splitlines() if line.strip()]
        if problems:
            parts += ["<ul class='problems'>", *(f"<li>{e(line)}</li>" for line in problems), "</ul>"]
    key_lines = _key_lines("A", c.a, c.key_reports["a"]) + _key_lines("B", c.b, c.key_reports["b"])
    if key_lines:
        parts += ["<h2>Keys</h2><ul>", *(f"<li>{e(line)}</li>" for line in key_lines), "</ul>"]
    parts += ["<h2>Schema</h2><ul>", *(f"<li>{e(x)}</li>" for x in _schema_lines(c) or ["same columns and types"])]
    parts += ["</ul><h2>Rows</h2><table><tr><th>class</th><th>count</th><th>%</th></tr>"]
    for name in ("only_in_a", "only_in_b", "changed", "identical"):
        r = c.rows[name]
        parts.append(
            f"<tr><td>{_CLASS_TITLES[name]}</td><td class='{name}'>{r.count}</td><td>{r.percent:.4f}</td></tr>"
        )
    parts.append(
        "</table><h2>Columns</h2><table><tr><th>column</th><th>matches</th><th>mismatches</th>"
        "<th>null on one side</th><th>tolerated</th><th>match %</th></tr>"
    )
    for col in c.columns:
        parts.append(
            f"<tr><td>{e(col.name)}</td><td>{col.matches}</td><td>{col.mismatches}</td>"
            f"<td>{col.null_on_one_side}</td><td>{col.tolerated}</td><td>{col.match_percent:.4f}</td></tr>"
        )
    parts.append("</table>")
    for col in c.columns:
        if col.delta is not None:
            parts += [
                f"<h3>Δ {e(col.name)} (B − A)</h3>",
                f"<p>{e(_delta_line(col.delta))}</p>",
                _svg_histogram(col.delta),
            ]
    for name in ("changed", "only_in_a", "only_in_b", "identical"):
        items = c.samples.get(name) or []
        if items:
            parts += [f"<h2>Sample: {_CLASS_TITLES[name]}</h2><ul>"]
            parts += [f"<li>{e(_sample_line(c, name, s))}</li>" for s in items]
            parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
