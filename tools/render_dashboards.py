"""Draws each Grafana dashboard under grafana/dashboards/ as a PNG, from a real Prometheus.

There is no Grafana server to take screenshots from, so this reads each
dashboard's JSON, runs every panel's queries the way Grafana would
(tools.dashboard_queries), and draws the panels in the dashboard's grid:
stat panels, time series (lines, stacked bars, threshold lines), tables
(with the merge and organize transformations, value mappings, thresholds and
cell colours), bar gauges and state timelines.

    # against a Prometheus that already scrapes an exporter:
    python -m tools.render_dashboards --prometheus http://127.0.0.1:9090 --range 1h
    # or start the exporter in --demo mode and a Prometheus scraping it every 5 s,
    # let it run, render, stop both:
    python -m tools.render_dashboards --demo 10m

Variables take Grafana's defaults (All, else the first value) unless given with
`--var [DASHBOARD_UID:]NAME=VALUE` (repeatable; several values of one
variable select several).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter, Locator, MaxNLocator
from PIL import Image

from tools.dashboard_queries import (
    Prometheus,
    PrometheusError,
    Series,
    TargetResult,
    TimeRange,
    Variable,
    fetch_dashboard,
    iter_panels,
    parse_duration,
    resolve_variables,
)

Json = dict[str, Any]
Cell = str | float | None

ROOT: Final = Path(__file__).resolve().parent.parent
DASHBOARD_DIR: Final = ROOT / "grafana" / "dashboards"
IMAGE_DIR: Final = ROOT / "docs" / "img"

# Grafana's dark theme.
BACKGROUND: Final = "#111217"
PANEL: Final = "#181b1f"
BORDER: Final = "#2a2e33"
TEXT: Final = "#ccccdc"
MUTED: Final = "#8e8ea0"
GRID: Final = "#24282d"
NAMED_COLORS: Final = {
    "green": "#73BF69",
    "red": "#F2495C",
    "orange": "#FF9830",
    "yellow": "#FADE2A",
    "blue": "#5794F2",
    "purple": "#B877D9",
    "text": TEXT,
    "transparent": PANEL,
}
PALETTE: Final = (
    "#7EB26D",
    "#EAB839",
    "#6ED0E0",
    "#EF843C",
    "#E24D42",
    "#1F78C1",
    "#BA43A9",
    "#705DA0",
    "#508642",
    "#CCA300",
    "#447EBC",
    "#C15C17",
    "#890F02",
    "#0A437C",
    "#6D1F62",
    "#584477",
)

# Layout, in pixels.
WIDTH: Final = 1600
MARGIN: Final = 10
HEADER: Final = 74
UNIT_HEIGHT: Final = 34
GAP: Final = 6
TITLE_HEIGHT: Final = 24
DPI: Final = 100


def color(name: str | None, default: str = TEXT) -> str:
    if not name:
        return default
    return NAMED_COLORS.get(name, name)


# --- Values and units -------------------------------------------------------------------------


def _trim(number: float, decimals: int | None, auto: int) -> str:
    text = f"{number:.{auto if decimals is None else decimals}f}"
    if decimals is None and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _auto_decimals(value: float) -> int:
    size = abs(value)
    if size >= 100 or size == int(size):
        return 0
    return 1 if size >= 10 else 2


def _scaled(value: float, base: float, suffixes: Sequence[str], decimals: int | None) -> str:
    index = 0
    while abs(value) >= base and index < len(suffixes) - 1:
        value /= base
        index += 1
    return f"{_trim(value, decimals, _auto_decimals(value))}{suffixes[index]}"


_DURATION_UNITS: Final = (
    ("year", 31536000),
    ("month", 2592000),
    ("week", 604800),
    ("day", 86400),
    ("hour", 3600),
    ("minute", 60),
    ("second", 1),
)


def _dtdurations(seconds: float, decimals: int | None) -> str:
    """Grafana's dtdurations: the largest unit and `decimals` more."""
    if seconds < 1:
        return f"{round(seconds * 1000)} milliseconds"
    remaining, more = seconds, (2 if decimals is None else decimals)
    parts: list[str] = []
    for unit, size in _DURATION_UNITS:
        if more < 0:
            break
        count = remaining / size
        if count >= 1 or parts:
            whole = math.floor(count)
            parts.append(f"{whole} {unit}{'' if whole == 1 else 's'}")
            remaining %= size
            more -= 1
    return ", ".join(parts)


def _seconds(seconds: float, decimals: int | None) -> str:
    """Grafana's `s` unit: one unit, three significant digits."""
    for unit, size, limit in (("s", 1, 60), ("min", 60, 3600), ("hour", 3600, 86400), ("day", 86400, 604800)):
        if abs(seconds) < limit:
            value = seconds / size
            return f"{_trim(value, decimals, _auto_decimals(value))} {unit}"
    value = seconds / 604800
    return f"{_trim(value, decimals, _auto_decimals(value))} week"


def format_value(value: float | None, unit: str | None, decimals: int | None = None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    match unit:
        case "s":
            return _seconds(value, decimals)
        case "dtdurations":
            return _dtdurations(value, decimals)
        case "percentunit":
            return f"{_trim(value * 100, decimals, 1)}%"
        case "percent":
            return f"{_trim(value, decimals, 1)}%"
        case "bytes":
            return _scaled(value, 1024, (" B", " KiB", " MiB", " GiB", " TiB", " PiB"), decimals)
        case "ops":
            return _scaled(value, 1000, (" ops/s", "K ops/s", "M ops/s"), decimals)
        case "reqps":
            return _scaled(value, 1000, (" req/s", "K req/s", "M req/s"), decimals)
        case _:
            return _scaled(value, 1000, ("", " K", " Mil", " Bil", " Tri"), decimals)


# --- Field configuration ----------------------------------------------------------------------


def _set_path(target: Json, path: str, value: Any) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    target[keys[-1]] = value


def field_config(panel: Mapping[str, Any], name: str, ref_id: str | None = None) -> Json:
    """The panel's field defaults with the overrides that match `name` (a display name) or `ref_id`."""
    config: Json = json.loads(json.dumps(panel.get("fieldConfig", {}).get("defaults", {})))
    for rule in panel.get("fieldConfig", {}).get("overrides", []):
        matcher = rule.get("matcher", {})
        kind, option = matcher.get("id"), matcher.get("options")
        if (kind == "byName" and option == name) or (kind == "byFrameRefID" and option == ref_id):
            for prop in rule.get("properties", []):
                _set_path(config, prop["id"], prop["value"])
    return config


def threshold_color(config: Mapping[str, Any], value: float | None) -> str:
    steps = config.get("thresholds", {}).get("steps", [])
    chosen = steps[0]["color"] if steps else "green"
    if value is not None and not math.isnan(value):
        for step in steps[1:]:
            if step["value"] is not None and value >= step["value"]:
                chosen = step["color"]
    return color(chosen)


def _mapping(config: Mapping[str, Any], value: Cell) -> Json | None:
    for mapping in config.get("mappings", []):
        options = mapping.get("options", {})
        if mapping.get("type") == "value":
            for key, result in options.items():
                if isinstance(value, float) and _is_number(key) and float(key) == value:
                    return dict(result)
                if isinstance(value, str) and key == value:
                    return dict(result)
        if mapping.get("type") == "special" and options.get("match") == "null" and value is None:
            return dict(options.get("result", {}))
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def display(config: Mapping[str, Any], value: Cell) -> tuple[str, str]:
    """(text, colour) of a value, as Grafana shows it: mappings first, then unit and thresholds."""
    mode = config.get("color", {}).get("mode", "thresholds")
    numeric = value if isinstance(value, float) else None
    base = color(config.get("color", {}).get("fixedColor")) if mode == "fixed" else threshold_color(config, numeric)
    mapped = _mapping(config, value)
    if mapped is not None:
        text = mapped.get("text")
        if text is None:
            text = format_value(numeric, config.get("unit"), config.get("decimals"))
        return str(text), color(mapped.get("color"), base)
    if value is None:
        return str(config.get("noValue", "-")), base
    if isinstance(value, str):
        return value, TEXT
    return format_value(value, config.get("unit"), config.get("decimals")), base


def series_name(result: TargetResult, series: Series) -> str:
    legend = result.query.legend
    if legend and legend != "__auto":
        text = legend
        for key, value in series.labels.items():
            text = text.replace("{{" + key + "}}", value).replace("{{ " + key + " }}", value)
        return text
    labels = {k: v for k, v in series.labels.items() if k != "__name__"}
    if not labels:
        return ""
    inner = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return series.labels.get("__name__", "") + "{" + inner + "}"


def _heatmap_buckets(result: TargetResult) -> list[tuple[str, float]]:
    """Cumulative `le` buckets as per-bucket counts (Grafana's heatmap format)."""

    def bound(series: Series) -> float:
        return float(series.labels.get("le", "inf").replace("+Inf", "inf"))

    ordered = sorted(result.series, key=bound)
    buckets, before = [], 0.0
    for series in ordered:
        total = series.last or 0.0
        buckets.append((series_name(result, series), total - before))
        before = total
    return buckets


def reduced(results: Sequence[TargetResult]) -> list[tuple[str, str, float | None]]:
    """(name, refId, last value) of every series, heatmap buckets de-cumulated."""
    values: list[tuple[str, str, float | None]] = []
    for result in results:
        if result.query.fmt == "heatmap":
            values += [(name, result.query.ref_id, value) for name, value in _heatmap_buckets(result)]
        else:
            values += [(series_name(result, s), result.query.ref_id, s.last) for s in result.series]
    return values


# --- Tables -----------------------------------------------------------------------------------


@dataclass
class TableData:
    columns: list[str]  # display names
    configs: list[Json]
    rows: list[list[Cell]]


def build_table(panel: Mapping[str, Any], results: Sequence[TargetResult]) -> TableData:
    """The rows Grafana's table shows: one frame per query, merged, organized and sorted."""
    multiple = len(results) > 1
    frames: list[tuple[list[str], list[dict[str, Cell]]]] = []
    for result in results:
        value_field = f"Value #{result.query.ref_id}" if multiple else "Value"
        labels = sorted({key for series in result.series for key in series.labels})
        rows: list[dict[str, Cell]] = []
        for series in result.series:
            row: dict[str, Cell] = {"Time": series.points[-1][0] if series.points else None}
            row.update({key: series.labels.get(key, "") for key in labels})
            row[value_field] = series.last
            rows.append(row)
        frames.append((["Time", *labels, value_field], rows))
    transformations = {t["id"]: t.get("options", {}) for t in panel.get("transformations", [])}
    fields: list[str] = []
    for names, _ in frames:
        fields += [name for name in names if name not in fields]
    if "merge" in transformations:
        merged: dict[tuple[str, ...], dict[str, Cell]] = {}
        keys = [name for name in fields if name != "Time" and not name.startswith("Value")]
        for _, rows in frames:
            for row in rows:
                key = tuple(str(row.get(name, "")) for name in keys)
                merged.setdefault(key, {}).update(row)
        all_rows = list(merged.values())
    else:
        all_rows = [row for _, rows in frames for row in rows]
    organize = transformations.get("organize", {})
    excluded = {name for name, hidden in organize.get("excludeByName", {}).items() if hidden}
    order = organize.get("indexByName", {})
    shown = sorted((name for name in fields if name not in excluded), key=lambda n: order.get(n, 10**9))
    renames = organize.get("renameByName", {})
    columns = [renames.get(name, name) for name in shown]
    ref_ids = {f"Value #{r.query.ref_id}" if multiple else "Value": r.query.ref_id for r in results}
    configs = [field_config(panel, title, ref_ids.get(name)) for name, title in zip(shown, columns, strict=True)]
    table_rows = [[row.get(name) for name in shown] for row in all_rows]
    for sort in panel.get("options", {}).get("sortBy", [])[:1]:
        if sort.get("displayName") in columns:
            index = columns.index(sort["displayName"])

            def sort_key(row: list[Cell], index: int = index) -> tuple[int, float | str]:
                cell = row[index]
                if cell is None:
                    return (0, 0.0)
                return (1, cell)

            table_rows.sort(key=sort_key, reverse=bool(sort.get("desc")))
    return TableData(columns, configs, table_rows)


# --- Drawing ----------------------------------------------------------------------------------


def text_width(text: str, size: float, *, bold: bool = False) -> float:
    """About how many pixels `text` takes at `size` points (DejaVu Sans averages 0.6 em a character)."""
    return len(text) * size * DPI / 72 * (0.66 if bold else 0.6)


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels from the figure's top-left corner."""

    x: float
    y: float
    w: float
    h: float


class Canvas:
    def __init__(self, height: float) -> None:
        self.height = height
        self.figure = Figure(figsize=(WIDTH / DPI, height / DPI), dpi=DPI, facecolor=BACKGROUND)
        self.base = self.figure.add_axes((0, 0, 1, 1))
        self.base.set_xlim(0, WIDTH)
        self.base.set_ylim(height, 0)
        self.base.set_axis_off()

    def axes(self, box: Box) -> Axes:
        rect = (box.x / WIDTH, 1 - (box.y + box.h) / self.height, box.w / WIDTH, box.h / self.height)
        ax = self.figure.add_axes(rect)
        ax.set_facecolor(PANEL)
        return ax

    def rect(self, box: Box, fill: str, *, edge: str | None = None, alpha: float = 1.0) -> None:
        self.base.add_patch(
            Rectangle(
                (box.x, box.y),
                box.w,
                box.h,
                facecolor=fill,
                edgecolor=edge or fill,
                linewidth=0.8 if edge else 0,
                alpha=alpha,
            )
        )

    def text(self, x: float, y: float, text: str, *, size: float = 9, **style: Any) -> None:
        self.base.text(x, y, text, fontsize=size, color=style.pop("color", TEXT), **style)

    def fit(self, text: str, width: float, size: float) -> str:
        """`text` cut with an ellipsis to about `width` pixels at font `size`."""
        limit = max(3, int(width / text_width("x", size)))
        return text if len(text) <= limit else text[: limit - 1] + "…"


def panel_box(panel: Mapping[str, Any]) -> Box:
    grid = panel["gridPos"]
    column = (WIDTH - 2 * MARGIN) / 24
    return Box(
        MARGIN + grid["x"] * column + GAP / 2,
        HEADER + grid["y"] * UNIT_HEIGHT + GAP / 2,
        grid["w"] * column - GAP,
        grid["h"] * UNIT_HEIGHT - GAP,
    )


def content_box(box: Box) -> Box:
    return Box(box.x + 8, box.y + TITLE_HEIGHT, box.w - 16, box.h - TITLE_HEIGHT - 6)


def no_data(canvas: Canvas, box: Box, text: str = "No data") -> None:
    canvas.text(box.x + box.w / 2, box.y + box.h / 2, text, size=12, color=MUTED, ha="center", va="center")


def draw_stat(canvas: Canvas, panel: Mapping[str, Any], results: Sequence[TargetResult], box: Box) -> None:
    values = reduced(results)
    if not values:
        config = field_config(panel, "")
        values = [("", "A", None)] if "noValue" in config else []
    if not values:
        no_data(canvas, box)
        return
    count = len(values)
    columns = max(1, min(count, round(math.sqrt(count * box.w / max(box.h, 1) / 2.5)) or 1))
    rows = math.ceil(count / columns)
    cell_w, cell_h = box.w / columns, box.h / rows
    for i, (name, ref, value) in enumerate(values):
        config = field_config(panel, name, ref)
        text, fill = display(config, value)
        cell = Box(box.x + (i % columns) * cell_w + 2, box.y + (i // columns) * cell_h + 2, cell_w - 4, cell_h - 4)
        canvas.rect(cell, fill, alpha=0.9)
        value_h = cell.h * (0.55 if name else 0.8)
        size = min(value_h * 0.6 * 72 / DPI, (cell.w - 12) / max(text_width(text, 1, bold=True), 1), 30)
        middle = cell.y + cell.h - value_h / 2 - (4 if name else cell.h * 0.1)
        if name:
            canvas.text(cell.x + 6, cell.y + 4, canvas.fit(name, cell.w - 12, 8), size=8, color="#ffffff", va="top")
        canvas.text(
            cell.x + cell.w / 2, middle, text, size=size, color="#ffffff", ha="center", va="center", weight="bold"
        )


_TICK_STEPS: Final = (60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


def _time_ticks(time_range: TimeRange) -> list[float]:
    """Tick positions at round times, about six of them."""
    step = next((s for s in _TICK_STEPS if time_range.seconds / s <= 7), _TICK_STEPS[-1])
    first = math.ceil(time_range.start / step) * step
    return [float(t) for t in range(int(first), int(time_range.end) + 1, step)]


_DURATION_STEPS: Final = (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800)


def _duration_ticks(low: float, high: float) -> list[float]:
    """Ticks at round durations (minutes, hours, days), at most five."""
    step = next((s for s in _DURATION_STEPS if (high - low) / s <= 4), _DURATION_STEPS[-1])
    first = math.ceil(low / step) * step
    return [float(first + i * step) for i in range(int((high - first) // step) + 1)]


class FuncLocator(Locator):
    """Tick positions from a function of the axis' view limits."""

    def __init__(self, ticks: Callable[[float, float], list[float]]) -> None:
        self._ticks = ticks

    def __call__(self) -> Sequence[float]:
        assert self.axis is not None
        low, high = self.axis.get_view_interval()
        return self._ticks(float(min(low, high)), float(max(low, high)))


def _clock(seconds: float, _: object = None) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M")


def _style_axes(ax: Axes, unit: str | None, decimals: int | None, time_range: TimeRange) -> None:
    ax.tick_params(colors=MUTED, labelsize=7, length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(color=GRID, linewidth=0.6)
    ax.set_axisbelow(True)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, unit, decimals)))
    if unit in ("s", "dtdurations"):
        ax.yaxis.set_major_locator(FuncLocator(_duration_ticks))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=decimals == 0))
    ax.xaxis.set_major_formatter(FuncFormatter(_clock))
    ax.xaxis.set_major_locator(FixedLocator(_time_ticks(time_range)))


def draw_timeseries(
    canvas: Canvas, panel: Mapping[str, Any], results: Sequence[TargetResult], box: Box, time_range: TimeRange
) -> None:
    lines = [(series_name(r, s), r, s) for r in results for s in r.series]
    if not lines:
        no_data(canvas, box)
        return
    defaults = field_config(panel, "")
    custom = defaults.get("custom", {})
    legend = panel.get("options", {}).get("legend", {})
    table_legend = legend.get("displayMode") == "table"
    legend_rows = 0 if table_legend else min(3, math.ceil(len(lines) / 3))
    plot_w = box.w * (0.58 if table_legend else 1.0)
    plot = Box(box.x + 52, box.y, plot_w - 56, box.h - 18 - legend_rows * 14)
    ax = canvas.axes(plot)
    _style_axes(ax, defaults.get("unit"), defaults.get("decimals"), time_range)
    bars = custom.get("drawStyle") == "bars"
    stacked = custom.get("stacking", {}).get("mode") == "normal"
    bottoms: dict[float, float] = {}
    entries: list[tuple[str, str, str]] = []
    for index, (name, result, series) in enumerate(lines):
        config = field_config(panel, name, result.query.ref_id)
        if config.get("color", {}).get("mode") == "fixed":
            line_color = color(config["color"].get("fixedColor"))
        else:
            line_color = PALETTE[index % len(PALETTE)]
        points = [(t, v) for t, v in series.points if not math.isnan(v)]
        if not points:
            continue
        times = [t for t, _ in points]
        values = [v for _, v in points]
        if bars:
            step = (result.step or 60) * 0.8
            base = [bottoms.get(t, 0.0) if stacked else 0.0 for t, _ in points]
            ax.bar(times, values, width=step, bottom=base, color=line_color, alpha=0.85, linewidth=0)
            if stacked:
                for t, v in points:
                    bottoms[t] = bottoms.get(t, 0.0) + v
        else:
            dashed = "lineStyle" in config.get("custom", {})
            ax.plot(times, values, color=line_color, linewidth=1.2, linestyle="--" if dashed else "-")
            fill = config.get("custom", {}).get("fillOpacity", 0)
            if fill and len(lines) <= 6:
                ax.fill_between(times, values, color=line_color, alpha=fill / 100 / 2, linewidth=0)
        entries.append(
            (
                name,
                line_color,
                f"{format_value(series.last, defaults.get('unit'), defaults.get('decimals'))}"
                f"  max {format_value(max(values), defaults.get('unit'), defaults.get('decimals'))}",
            )
        )
    if custom.get("thresholdsStyle", {}).get("mode", "off") != "off":
        for step_ in defaults.get("thresholds", {}).get("steps", [])[1:]:
            ax.axhline(step_["value"], color=color(step_["color"]), linestyle="--", linewidth=1)
    ax.set_xlim(time_range.start, time_range.end)
    low, high = ax.get_ylim()
    minimum, maximum = defaults.get("min"), defaults.get("max")
    ax.set_ylim(minimum if minimum is not None else low, maximum if maximum is not None else max(high, 1.0))
    if table_legend:
        _legend_table(canvas, Box(box.x + plot_w + 4, box.y, box.w - plot_w - 4, box.h), entries)
    else:
        _legend_list(canvas, Box(box.x + 8, box.y + box.h - legend_rows * 14, box.w - 8, legend_rows * 14), entries)


def _legend_list(canvas: Canvas, box: Box, entries: Sequence[tuple[str, str, str]]) -> None:
    if not entries:
        return
    per_row = max(1, math.ceil(len(entries) / max(1, round(box.h / 14))))
    width = box.w / per_row
    capacity = per_row * max(1, round(box.h / 14))
    for i, (name, swatch, _) in enumerate(entries[:capacity]):
        x, y = box.x + (i % per_row) * width, box.y + (i // per_row) * 14 + 7
        canvas.rect(Box(x, y - 2, 10, 4), swatch)
        label = name if i < capacity - 1 or len(entries) <= capacity else f"+{len(entries) - capacity + 1} more"
        canvas.text(x + 14, y, canvas.fit(label or "value", width - 20, 7.5), size=7.5, va="center")


def _legend_table(canvas: Canvas, box: Box, entries: Sequence[tuple[str, str, str]]) -> None:
    line = 13
    capacity = max(1, int(box.h // line))
    shown = list(entries[:capacity])
    for i, (name, swatch, values) in enumerate(shown):
        y = box.y + i * line + 6
        if i == capacity - 1 and len(entries) > capacity:
            canvas.text(box.x + 14, y, f"+{len(entries) - capacity + 1} more", size=7, color=MUTED, va="center")
            break
        canvas.rect(Box(box.x, y - 2, 10, 4), swatch)
        canvas.text(box.x + 14, y, canvas.fit(name, box.w * 0.62, 7), size=7, va="center")
        canvas.text(box.x + box.w - 2, y, values, size=7, va="center", ha="right", color=MUTED)


def draw_table(canvas: Canvas, panel: Mapping[str, Any], results: Sequence[TargetResult], box: Box) -> None:
    table = build_table(panel, results)
    if not table.rows:
        no_data(canvas, box)
        return
    row_h = 18.0
    rendered = [[display(config, cell) for config, cell in zip(table.configs, row, strict=True)] for row in table.rows]
    # Natural widths, then the widest columns give way until the table fits.
    widths = [
        max(text_width(title, 8, bold=True), *(text_width(r[i][0], 8) for r in rendered)) + 12
        for i, title in enumerate(table.columns)
    ]
    if sum(widths) > box.w:
        low, high = 40.0, max(widths)
        for _ in range(30):  # the largest cap on column widths that fits
            cap = (low + high) / 2
            low, high = (cap, high) if sum(min(w, cap) for w in widths) <= box.w else (low, cap)
        widths = [min(w, low) for w in widths]
        if sum(widths) > box.w:
            widths = [w * box.w / sum(widths) for w in widths]
    spare = box.w - sum(widths)
    widths = [w + spare / len(widths) for w in widths]
    xs = [box.x + sum(widths[:i]) for i in range(len(widths))]
    canvas.rect(Box(box.x, box.y, box.w, row_h), "#22252b")
    for x, w, title in zip(xs, widths, table.columns, strict=True):
        canvas.text(x + 4, box.y + row_h / 2, canvas.fit(title, w - 8, 8), size=8, va="center", weight="bold")
    capacity = int((box.h - row_h) // row_h)
    shown = rendered if len(rendered) <= capacity else rendered[: capacity - 1]
    for r, cells in enumerate(shown):
        y = box.y + row_h * (r + 1)
        if r % 2:
            canvas.rect(Box(box.x, y, box.w, row_h), "#1d2025")
        for x, w, config, raw, (text, fill) in zip(xs, widths, table.configs, table.rows[r], cells, strict=True):
            cell_type = config.get("custom", {}).get("cellOptions", {}).get("type", "auto")
            width = w
            text_color = TEXT
            if cell_type == "color-background":
                canvas.rect(Box(x + 1, y + 1, width - 2, row_h - 2), fill, alpha=0.85)
                text_color = "#ffffff"
            elif cell_type == "gauge" and isinstance(raw, float):
                low, high = config.get("min", 0.0), config.get("max", 1.0)
                share = min(max((raw - low) / (high - low), 0.0), 1.0) if high > low else 0.0
                track = Box(x + 48, y + 4, width - 54, row_h - 8)
                canvas.rect(track, "#22252b")
                canvas.rect(Box(track.x, track.y, track.w * share, track.h), fill, alpha=0.9)
                text_color = fill
            elif cell_type == "color-text":
                text_color = fill
            canvas.text(x + 4, y + row_h / 2, canvas.fit(text, width - 8, 8), size=8, va="center", color=text_color)
    if len(shown) < len(rendered):
        y = box.y + row_h * (len(shown) + 1)
        more = len(rendered) - len(shown)
        canvas.text(box.x + 4, y + row_h / 2, f"… {more} more rows", size=8, va="center", color=MUTED)


def draw_bargauge(canvas: Canvas, panel: Mapping[str, Any], results: Sequence[TargetResult], box: Box) -> None:
    values = reduced(results)
    if not values:
        no_data(canvas, box)
        return
    defaults = field_config(panel, "")
    numbers = [v for _, _, v in values if v is not None]
    low = defaults.get("min", min(numbers, default=0.0))
    high = defaults.get("max", max(numbers, default=1.0))
    # Names above the bars when there is room (Grafana's `auto` placement), else beside them.
    above = box.h / len(values) >= 30
    row_h = min(box.h / len(values), 44.0 if above else 30.0)
    row_h = max(row_h, 28.0 if above else 14.0)
    capacity = max(1, int(box.h // row_h))
    label_w = 0.0 if above else box.w * 0.36
    value_w = 78.0
    for i, (name, ref, value) in enumerate(values[:capacity]):
        config = field_config(panel, name, ref)
        text, fill = display(config, value)
        y = box.y + i * row_h
        if above:
            canvas.text(box.x, y + 7, canvas.fit(name, box.w - 4, 8), size=8, va="center")
            bar_top, bar_h = y + 14, max(row_h - 20, 6)
        else:
            canvas.text(box.x, y + row_h / 2, canvas.fit(name, label_w - 6, 8), size=8, va="center")
            bar_h = max(row_h * 0.62, 6)
            bar_top = y + (row_h - bar_h) / 2
        track = Box(box.x + label_w, bar_top, box.w - label_w - value_w, bar_h)
        canvas.rect(track, "#22252b")
        if value is not None and high > low:
            share = min(max((value - low) / (high - low), 0.0), 1.0)
            canvas.rect(Box(track.x, track.y, track.w * share, track.h), fill, alpha=0.9)
        canvas.text(
            box.x + box.w, bar_top + bar_h / 2, text, size=9, va="center", ha="right", color=fill, weight="bold"
        )
    if len(values) > capacity:
        canvas.text(box.x, box.y + box.h, f"+{len(values) - capacity} more", size=7, color=MUTED, va="bottom")


def draw_state_timeline(
    canvas: Canvas, panel: Mapping[str, Any], results: Sequence[TargetResult], box: Box, time_range: TimeRange
) -> None:
    rows = [(series_name(r, s), r, s) for r in results for s in r.series]
    if not rows:
        no_data(canvas, box)
        return
    label_w = min(box.w * 0.3, 150)
    axis_h = 14
    row_h = (box.h - axis_h) / len(rows)
    span = time_range.seconds
    area = Box(box.x + label_w, box.y, box.w - label_w, box.h - axis_h)
    for i, (name, result, series) in enumerate(rows):
        y = area.y + i * row_h
        canvas.text(box.x, y + row_h / 2, canvas.fit(name, label_w - 6, 8), size=8, va="center")
        config = field_config(panel, name, result.query.ref_id)
        step = result.step or 15.0
        segments: list[tuple[float, float, str, str]] = []
        for t, value in series.points:
            text, fill = display(config, value)
            start = max(t - step, time_range.start)
            if segments and segments[-1][2] == text and abs(segments[-1][1] - start) <= step * 1.5:
                segments[-1] = (segments[-1][0], t, text, fill)
            else:
                segments.append((start, t, text, fill))
        for start, end, text, fill in segments:
            x0 = area.x + (start - time_range.start) / span * area.w
            x1 = area.x + (end - time_range.start) / span * area.w
            cell = Box(x0, y + row_h * 0.1, max(x1 - x0, 1), row_h * 0.8)
            canvas.rect(cell, fill, alpha=0.75)
            if cell.w > 40:
                canvas.text(cell.x + cell.w / 2, cell.y + cell.h / 2, text, size=8, ha="center", va="center")
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        canvas.text(
            area.x + fraction * area.w,
            box.y + box.h,
            _clock(time_range.start + fraction * span),
            size=7,
            color=MUTED,
            ha="center" if 0 < fraction < 1 else ("left" if fraction == 0 else "right"),
            va="bottom",
        )


def render_dashboard(
    dashboard: Mapping[str, Any],
    data: Mapping[int, Sequence[TargetResult]],
    variables: Mapping[str, Variable],
    time_range: TimeRange,
    path: Path,
) -> None:
    """Draws `dashboard` with the fetched `data` into a PNG at `path`."""
    panels = list(iter_panels(dashboard))
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    canvas = Canvas(HEADER + bottom * UNIT_HEIGHT + MARGIN)
    canvas.text(MARGIN + 4, 24, str(dashboard.get("title", "")), size=17, va="center", weight="bold")
    start = datetime.fromtimestamp(time_range.start, UTC).strftime("%Y-%m-%d %H:%M")
    end = datetime.fromtimestamp(time_range.end, UTC).strftime("%H:%M UTC")
    canvas.text(WIDTH - MARGIN - 4, 24, f"{start} to {end}", size=10, va="center", ha="right", color=MUTED)
    x = MARGIN + 4.0
    for variable in variables.values():
        label = f"{variable.label}: " + ("Prometheus" if variable.name == "datasource" else variable.text)
        label = canvas.fit(label, 420, 9)
        width = text_width(label, 9) + 16
        canvas.rect(Box(x, 44, width, 22), "#1f2227", edge=BORDER)
        canvas.text(x + 8, 55, label, size=9, va="center")
        x += width + 8
    for panel in panels:
        box = panel_box(panel)
        kind = panel.get("type")
        if kind == "row":
            canvas.text(box.x + 2, box.y + box.h / 2, str(panel.get("title", "")), size=11, va="center", weight="bold")
            canvas.base.plot([box.x, box.x + box.w], [box.y + box.h - 2] * 2, color=BORDER, linewidth=1)
            continue
        canvas.rect(box, PANEL, edge=BORDER)
        canvas.text(box.x + 8, box.y + 13, str(panel.get("title", "")), size=9.5, va="center", weight="bold")
        results = data.get(int(panel.get("id", 0)), [])
        inner = content_box(box)
        if kind == "stat":
            draw_stat(canvas, panel, results, inner)
        elif kind == "timeseries":
            draw_timeseries(canvas, panel, results, inner, time_range)
        elif kind == "table":
            draw_table(canvas, panel, results, inner)
        elif kind == "bargauge":
            draw_bargauge(canvas, panel, results, inner)
        elif kind == "state-timeline":
            draw_state_timeline(canvas, panel, results, inner, time_range)
        else:
            raise ValueError(f"panel {panel.get('title')!r}: type {kind!r} cannot be drawn")
    buffer = io.BytesIO()
    canvas.figure.savefig(buffer, format="png", dpi=DPI, facecolor=BACKGROUND)
    buffer.seek(0)
    # A 256-colour palette keeps each picture small enough to commit.
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=True)


# --- Running it -------------------------------------------------------------------------------


def image_name(dashboard: Mapping[str, Any]) -> str:
    """docs/img/dashboard-<uid without the backup- prefix>.png"""
    uid = str(dashboard["uid"])
    return f"dashboard-{uid.removeprefix('backup-')}.png"


def parse_choices(pairs: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """`[uid:]name=value` pairs → {uid or "": {name: [values]}}."""
    choices: dict[str, dict[str, list[str]]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--var {pair}: expected [DASHBOARD_UID:]NAME=VALUE")
        uid, _, name = name.rpartition(":")
        choices.setdefault(uid, {}).setdefault(name, []).append(value)
    return choices


def render_all(
    prometheus_url: str,
    out: Path,
    *,
    range_seconds: float,
    scrape_interval: float,
    choices: Mapping[str, Mapping[str, Sequence[str]]],
    dashboards: Path = DASHBOARD_DIR,
) -> list[Path]:
    prometheus = Prometheus(prometheus_url)
    time_range = TimeRange.last(range_seconds)
    written = []
    for source in sorted(dashboards.glob("*.json")):
        dashboard = json.loads(source.read_text(encoding="utf-8"))
        names = {str(v["name"]) for v in dashboard.get("templating", {}).get("list", [])}
        choose = {k: v for k, v in choices.get("", {}).items() if k in names}
        choose.update(choices.get(str(dashboard["uid"]), {}))
        variables = resolve_variables(prometheus, dashboard, time_range, choose=choose)
        data = fetch_dashboard(prometheus, dashboard, variables, time_range, scrape_interval=scrape_interval)
        path = out / image_name(dashboard)
        render_dashboard(dashboard, data, variables, time_range, path)
        written.append(path)
    return written


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own loopback URL)
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {seconds:.0f} s")
        time.sleep(0.5)


@contextlib.contextmanager
def demo_stack(scrape_interval: float) -> Iterator[str]:
    """The exporter in --demo mode and a Prometheus scraping it; yields Prometheus' URL."""
    with tempfile.TemporaryDirectory(prefix="render-dashboards-") as work:
        exporter_port, prometheus_port = _free_port(), _free_port()
        config = Path(work) / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {scrape_interval:g}s\n"
            "scrape_configs:\n  - job_name: backup-exporter\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n",
            encoding="utf-8",
        )
        logs = Path(work) / "logs.txt"
        with logs.open("wb") as log:
            exporter = subprocess.Popen(  # noqa: S603 (fixed arguments)
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    "--demo",
                    f"--web.listen-address=127.0.0.1:{exporter_port}",
                    f"--storage.path={work}/state",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
            prometheus = subprocess.Popen(  # noqa: S603
                [  # noqa: S607 (Debian's prometheus, from PATH)
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={work}/tsdb",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                ],
                stdout=log,
                stderr=log,
            )
            try:
                _wait_ready(f"http://127.0.0.1:{exporter_port}/-/ready", 60)
                _wait_ready(f"http://127.0.0.1:{prometheus_port}/-/ready", 30)
                yield f"http://127.0.0.1:{prometheus_port}"
            finally:
                for process in (prometheus, exporter):
                    process.terminate()
                for process in (prometheus, exporter):
                    try:
                        process.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the Grafana dashboards to PNG from a real Prometheus.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", help="URL of a Prometheus that scrapes backup-exporter")
    source.add_argument("--demo", metavar="DURATION", help="run the exporter --demo and a Prometheus this long first")
    parser.add_argument("--range", default=None, help="time range to show, up to now (default: 1h, or --demo's)")
    parser.add_argument("--scrape-interval", default="5s", help="the scrape interval, for $__rate_interval")
    parser.add_argument("--var", action="append", default=[], help="[DASHBOARD_UID:]NAME=VALUE, repeatable")
    parser.add_argument("--out", type=Path, default=IMAGE_DIR, help="directory of the PNGs")
    args = parser.parse_args(argv)
    scrape = parse_duration(args.scrape_interval)
    choices = parse_choices(args.var)
    try:
        if args.demo:
            wait = parse_duration(args.demo)
            with demo_stack(scrape) as url:
                print(f"demo running, Prometheus at {url}; rendering in {wait:.0f} s", file=sys.stderr)
                time.sleep(wait)
                paths = render_all(
                    url,
                    args.out,
                    range_seconds=parse_duration(args.range) if args.range else wait,
                    scrape_interval=scrape,
                    choices=choices,
                )
        else:
            paths = render_all(
                args.prometheus,
                args.out,
                range_seconds=parse_duration(args.range or "1h"),
                scrape_interval=scrape,
                choices=choices,
            )
    except (PrometheusError, ValueError, TimeoutError) as error:
        print(f"render_dashboards: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
