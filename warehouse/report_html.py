"""The report page: one self-contained HTML file drawn from a :class:`warehouse.report.Report`.

No script, no external URL: inline CSS and inline SVG charts drawn here (bars are ``<rect class="bar">``
with a ``<title>`` tooltip). Every text from the lake (stream ids, event types, names) is HTML-escaped:
they come from users' stores. A part with nothing to draw says so in words.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta

from warehouse.report import LagPoint, Report, StreamLengths, VolumeRow
from warehouse.units import human_bytes

__all__ = ["render_report"]

WIDTH, HEIGHT = 900, 220
LEFT, RIGHT, TOP, BOTTOM = 70, 12, 12, 34
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
MAX_BARS = 120  # more days than this are grouped by week, then by month
MAX_POINTS = 400  # points drawn per line (a lake with more snapshots or commits is drawn from a sample of them)
MAX_TYPES = 9  # event types drawn in their own colour; the rest stack as "other"
PALETTE = ("#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5", "#9c6b4e", "#9498a0")

e = html.escape

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.meta{color:#666}.empty{color:#666;font-style:italic}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f6f6f6}code{background:#f4f4f4;padding:0 3px}
svg{display:block;margin:.6em 0}svg text{font-size:11px;fill:#555}.axis{stroke:#999}
.legend span{display:inline-block;margin-right:1em}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.differs{color:#cf222e}.identical{color:#1a7f37}
"""


def render_report(report: Report) -> str:
    """The report as one HTML page."""
    parts = [
        "<!doctype html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>Projectionist report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Projectionist report</h1>",
        f"<p class='meta'>Lake: {e(report.lake)}<br>generated {e(_time(report.generated_at))}"
        + (f", snapshot {report.snapshot:,}" if report.snapshot is not None else "")
        + "</p>",
    ]
    if not report.created:
        parts.append("<p class='empty'>The lake has not been created yet: run <code>projectionist ingest</code>.</p>")
    parts += _size(report)
    parts += _lag(report.lag)
    parts += _volume(report.volume)
    parts += _streams(report.streams)
    parts += _projections(report)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _time(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


# -- sections -----------------------------------------------------------------------------------------


def _size(report: Report) -> list[str]:
    size = report.size
    parts = ["<section id='size'><h2>Lake size and growth</h2>"]
    disk = f"; {human_bytes(size.on_disk_bytes)} on disk" if size.on_disk_bytes is not None else ""
    parts.append(
        f"<p>{human_bytes(size.live_bytes)} in {size.live_files:,} data files referenced by the current snapshot"
        f"{disk} (files of older snapshots stay until they are cleaned up). Data path: "
        f"<code>{e(size.data_path)}</code>.</p>"
    )
    if not size.growth or not any(p.bytes for p in size.growth):
        parts.append(
            "<p class='empty'>No data files yet: small tables live inlined in the catalog, and nothing has been "
            "ingested into Parquet files.</p></section>"
        )
        return parts
    parts.append(_line_chart([[(p.at, p.bytes) for p in size.growth]], ["bytes"], human_bytes, "growth"))
    parts.append(f"<p class='meta'>{len(size.growth):,} snapshots, bytes of live data files after each.</p>")
    if size.tables:
        parts.append("<table class='tables'><tr><th>table</th><th>live bytes</th></tr>")
        parts += [f"<tr><td>{e(name)}</td><td>{human_bytes(b)}</td></tr>" for name, b in size.tables.items()]
        parts.append("</table>")
    parts.append("</section>")
    return parts


def _lag(points: Sequence[LagPoint]) -> list[str]:
    parts = ["<section id='lag'><h2>Lag: store head vs lake checkpoint</h2>"]
    if not points:
        parts.append(
            "<p class='empty'>No ingest commit recorded yet (meta.ingest_commits): the history starts with the "
            "next ingest that lands events.</p></section>"
        )
        return parts
    known = [p for p in points if p.head_events is not None]
    if known:
        head = [(p.at, p.head_events or 0) for p in known]
        lake = [(p.at, p.lake_events) for p in points]
        parts.append(
            _line_chart([head, lake], ["store head", "lake checkpoint"], lambda v: f"{v:,} events", "lag", step=True)
        )
        parts.append(_legend(["store head (events up to it)", "lake checkpoint (events in the lake)"]))
    last = points[-1]
    lag = f"{last.lag_events:,} events" if last.lag_events is not None else "unknown (its head was not reached yet)"
    parts.append(
        f"<p>{len(points):,} ingest commits. The last, at {e(_time(last.at))}, reached checkpoint "
        f"<code>{e(last.checkpoint)}</code> reading towards head <code>{e(last.head)}</code>: lag after it {lag}.</p>"
    )
    parts.append(
        "<table class='commits'><tr><th>committed</th><th>events</th><th>checkpoint</th><th>store head</th>"
        "<th>lag after (events)</th></tr>"
    )
    for p in list(points)[-10:][::-1]:
        lag_cell = "?" if p.lag_events is None else f"{p.lag_events:,}"
        parts.append(
            f"<tr><td>{e(_time(p.at))}</td><td>{p.events:,}</td><td>{e(p.checkpoint)}</td><td>{e(p.head)}</td>"
            f"<td>{lag_cell}</td></tr>"
        )
    parts.append("</table></section>")
    return parts


def _volume(rows: Sequence[VolumeRow]) -> list[str]:
    parts = ["<section id='volume'><h2>Event volume per day and type</h2>"]
    if not rows:
        parts.append("<p class='empty'>No events in the lake yet.</p></section>")
        return parts
    totals: dict[str, int] = defaultdict(int)
    for r in rows:
        totals[r.event_type] += r.events
    ranked = sorted(totals, key=lambda t: (-totals[t], t))
    types = ranked[:MAX_TYPES] + (["other"] if len(ranked) > MAX_TYPES else [])
    shown = set(ranked[:MAX_TYPES])
    days = [r.day for r in rows]
    bucket, unit = _bucketing(min(days), max(days))
    stacks: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    day = min(days)
    while day <= max(days):  # every bucket of the span, empty ones too: the x axis is time
        stacks.setdefault(bucket(day), defaultdict(int))
        day += timedelta(days=1)
    for r in rows:
        stacks[bucket(r.day)][r.event_type if r.event_type in shown else "other"] += r.events
    parts.append(_stacked_bars(stacks, types, unit))
    parts.append(_legend(types))
    parts.append(
        f"<p>{sum(totals.values()):,} events of {len(totals):,} types from {min(days)} to {max(days)} (UTC), "
        f"one bar per {unit}.</p>"
    )
    parts.append("<table class='types'><tr><th>event type</th><th>events</th></tr>")
    parts += [f"<tr><td>{e(t)}</td><td>{totals[t]:,}</td></tr>" for t in ranked]
    parts.append("</table></section>")
    return parts


def _bucketing(first: date, last: date) -> tuple[Callable[[date], date], str]:
    span = (last - first).days + 1
    if span <= MAX_BARS:
        return (lambda d: d), "day"
    if span <= MAX_BARS * 7:
        return (lambda d: d - timedelta(days=d.weekday())), "week"
    return (lambda d: d.replace(day=1)), "month"


def _streams(streams: StreamLengths) -> list[str]:
    parts = ["<section id='streams'><h2>Stream lengths</h2>"]
    if not streams.bins:
        parts.append("<p class='empty'>No streams in the lake yet (analytics.stream_stats is built by ingest).</p>")
        parts.append("</section>")
        return parts
    labels = [str(lo) if lo == hi else f"{lo}–{hi}" for lo, hi, _ in streams.bins]
    titles = [f"{s:,} streams of {label} events" for (_, _, s), label in zip(streams.bins, labels, strict=True)]
    parts.append(_bars([s for _, _, s in streams.bins], labels, titles, "histogram"))
    parts.append(f"<p>{streams.streams:,} streams; x: events per stream, y: streams.</p>")
    threshold = f"more than {streams.threshold:,} events" if streams.threshold is not None else "flagged is_long"
    if not streams.long_streams:
        parts.append(f"<p class='empty'>No long stream ({threshold}).</p></section>")
        return parts
    shown = len(streams.longest)
    more = f", the {shown} longest shown" if shown < streams.long_streams else ""
    parts.append(f"<h3>Long streams ({threshold}): {streams.long_streams:,}{more}</h3>")
    parts.append("<table class='long-streams'><tr><th>stream id</th><th>stream type</th><th>events</th></tr>")
    parts += [
        f"<tr><td class='stream-id'>{e(s.stream_id)}</td><td>{e(s.stream_type or '')}</td><td>{s.events:,}</td></tr>"
        for s in streams.longest
    ]
    parts.append("</table><p class='meta'>Keep streams short: snapshot or close long-lived ones.</p></section>")
    return parts


def _projections(report: Report) -> list[str]:
    parts = ["<section id='projections'><h2>Projection versions</h2>"]
    if not report.projections:
        parts.append(
            "<p class='empty'>No projection version built yet: run <code>projectionist project</code>.</p></section>"
        )
        return parts
    parts.append(
        "<table class='projections'><tr><th>projection</th><th>live</th><th>staged</th><th>rollback target</th>"
        "<th>versions</th></tr>"
    )
    for p in report.projections:
        versions = ", ".join(f"v{v['version']} {v['state']} ({v['rows']:,} rows)" for v in p.versions)
        parts.append(
            f"<tr><td>{e(p.name)}</td><td>{_v(p.live)}</td><td>{', '.join(f'v{v}' for v in p.staged) or '–'}</td>"
            f"<td>{_v(p.rollback_target)}</td><td>{e(versions)}</td></tr>"
        )
    parts.append("</table><h3>Last comparison</h3><ul class='comparisons'>")
    for p in report.projections:
        c = p.last_comparison
        if c is None:
            parts.append(
                f"<li>{e(p.name)}: no comparison yet (<code>projectionist diff {e(p.name)}</code> records one)</li>"
            )
            continue
        state = "identical" if c.verdict.startswith("identical") else "differs"
        parts.append(
            f"<li>{e(p.name)}: <code>{e(c.a)}</code> → <code>{e(c.b)}</code> at {e(_time(c.at))}: "
            f"<span class='{state}'>{e(c.verdict)}</span> "
            f"<span class='meta'>(comparison {e(c.comparison_id)})</span></li>"
        )
    parts.append("</ul></section>")
    return parts


def _v(version: int | None) -> str:
    return "–" if version is None else f"v{version}"


# -- charts -------------------------------------------------------------------------------------------


def _svg(kind: str, body: list[str], label: str) -> str:
    return (
        f"<svg class='chart {kind}' role='img' aria-label='{e(label)}' width='{WIDTH}' height='{HEIGHT}' "
        f"viewBox='0 0 {WIDTH} {HEIGHT}' xmlns='http://www.w3.org/2000/svg'>" + "".join(body) + "</svg>"
    )


def _axes(top_label: str) -> list[str]:
    bottom = TOP + PLOT_H
    return [
        f"<line class='axis' x1='{LEFT}' y1='{TOP}' x2='{LEFT}' y2='{bottom}'/>",
        f"<line class='axis' x1='{LEFT}' y1='{bottom}' x2='{LEFT + PLOT_W}' y2='{bottom}'/>",
        f"<text x='{LEFT - 6}' y='{TOP + 10}' text-anchor='end'>{e(top_label)}</text>",
        f"<text x='{LEFT - 6}' y='{bottom}' text-anchor='end'>0</text>",
    ]


def _x_labels(first: str, last: str) -> list[str]:
    y = TOP + PLOT_H + 16
    labels = [f"<text x='{LEFT}' y='{y}'>{e(first)}</text>"]
    if last != first:
        labels.append(f"<text x='{LEFT + PLOT_W}' y='{y}' text-anchor='end'>{e(last)}</text>")
    return labels


def _height(value: float, top: float) -> float:
    """Bar height in pixels: proportional, at least one pixel for any value above zero."""
    return 0.0 if value <= 0 or top <= 0 else max(1.0, PLOT_H * value / top)


def _bars(values: Sequence[int], labels: Sequence[str], titles: Sequence[str], kind: str) -> str:
    top = max(values, default=0)
    step = PLOT_W / max(1, len(values))
    width = max(1.0, step * 0.8)
    body = _axes(f"{top:,}")
    for i, (value, title) in enumerate(zip(values, titles, strict=True)):
        h = _height(value, top)
        x = LEFT + i * step + (step - width) / 2
        body.append(
            f"<rect class='bar' data-value='{value}' x='{x:.1f}' y='{TOP + PLOT_H - h:.1f}' width='{width:.1f}' "
            f"height='{h:.1f}' fill='{PALETTE[0]}'><title>{e(title)}</title></rect>"
        )
    for i, label in enumerate(labels):
        x = LEFT + i * step + step / 2
        body.append(f"<text x='{x:.1f}' y='{TOP + PLOT_H + 16}' text-anchor='middle'>{e(label)}</text>")
    return _svg(kind, body, kind)


def _stacked_bars(stacks: dict[date, dict[str, int]], types: list[str], unit: str) -> str:
    buckets = sorted(stacks)
    top = max((sum(stacks[b].values()) for b in buckets), default=0)
    step = PLOT_W / max(1, len(buckets))
    width = max(1.0, step * 0.8)
    body = _axes(f"{top:,}")
    for i, bucket in enumerate(buckets):
        x = LEFT + i * step + (step - width) / 2
        total = sum(stacks[bucket].values())
        y = float(TOP + PLOT_H)
        body.append(f"<g class='bar-stack' data-value='{total}'>")
        for j, kind in enumerate(types):
            value = stacks[bucket].get(kind, 0)
            if not value:
                continue
            h = PLOT_H * value / top
            y -= h
            body.append(
                f"<rect class='bar' data-value='{value}' x='{x:.1f}' y='{y:.2f}' width='{width:.1f}' "
                f"height='{h:.2f}' fill='{PALETTE[j % len(PALETTE)]}'>"
                f"<title>{e(f'{unit} of {bucket}: {value:,} {kind}')}</title></rect>"
            )
        body.append("</g>")
    body += _x_labels(str(buckets[0]), str(buckets[-1]))
    return _svg("volume", body, f"events per {unit} and type")


def _line_chart(
    series: list[list[tuple[datetime, int]]],
    names: list[str],
    fmt: Callable[[int], str],
    kind: str,
    *,
    step: bool = False,
) -> str:
    points = [p for s in series for p in s]
    first = min(at for at, _ in points)
    last = max(at for at, _ in points)
    span = (last - first).total_seconds() or 1.0
    top = max((v for _, v in points), default=0) or 1
    body = _axes(fmt(top))

    def xy(at: datetime, value: int) -> tuple[float, float]:
        x = LEFT + (PLOT_W * (at - first).total_seconds() / span if last > first else PLOT_W / 2)
        return x, TOP + PLOT_H - PLOT_H * value / top

    for i, (whole, name) in enumerate(zip(series, names, strict=True)):
        s = _thin(whole)
        coords: list[tuple[float, float]] = []
        for at, value in s:
            x, y = xy(at, value)
            if step and coords:
                coords.append((x, coords[-1][1]))
            coords.append((x, y))
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        body.append(
            f"<polyline class='line' fill='none' stroke='{color}' stroke-width='2' points='{path}'>"
            f"<title>{e(name)}</title></polyline>"
        )
        for (at, value), (x, y) in zip(s, [xy(at, v) for at, v in s], strict=True):
            text = f"{name}: {fmt(value)} at {_time(at)}"
            body.append(
                f"<circle class='point' cx='{x:.1f}' cy='{y:.1f}' r='3' fill='{color}'>"
                f"<title>{e(text)}</title></circle>"
            )
    body += _x_labels(_time(first), _time(last))
    return _svg(kind, body, kind)


def _thin(points: list[tuple[datetime, int]]) -> list[tuple[datetime, int]]:
    """At most :data:`MAX_POINTS` of ``points``, evenly picked, the first and the last always among them."""
    if len(points) <= MAX_POINTS:
        return points
    every = len(points) / (MAX_POINTS - 1)
    return [points[int(k * every)] for k in range(MAX_POINTS - 1)] + [points[-1]]


def _legend(names: list[str]) -> str:
    items = "".join(
        f"<span><i style='background:{PALETTE[i % len(PALETTE)]}'></i>{e(name)}</span>" for i, name in enumerate(names)
    )
    return f"<p class='legend'>{items}</p>"
