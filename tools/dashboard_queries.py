"""The queries of a Grafana dashboard, run against a real Prometheus the way Grafana runs them.

Standard library only, so tests can use it without the renderer's plotting
dependencies. What it does as Grafana does:

- panels nested in rows (collapsed rows keep theirs in `panels`) are included;
- query variables are resolved in order, each with the values of the ones
  before it; multi-value and include-all variables are regex-escaped the way
  Grafana's Prometheus data source escapes them, single-value ones are not;
- `$__interval` comes from the time range, the panel's width or
  `maxDataPoints`, and the minimum interval (the target's `interval`, else the
  scrape interval); `$__rate_interval` is max(`$__interval` + scrape interval,
  4 * scrape interval); range queries are aligned to their step.

    outcomes = run_all_queries("http://127.0.0.1:9090", dashboard_json)
    empty = [o for o in outcomes if o.series == 0]
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

Json = dict[str, Any]

# $name, [[name]], [[name:format]], ${name}, ${name.path}, ${name:format} (Grafana's own pattern).
VARIABLE_PATTERN: Final = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
# Grafana's built-in variables, valid in any dashboard.
BUILTIN_VARIABLES: Final = frozenset(
    {
        "__all",
        "__data",
        "__dashboard",
        "__field",
        "__from",
        "__interval",
        "__interval_ms",
        "__org",
        "__range",
        "__range_ms",
        "__range_s",
        "__rate_interval",
        "__series",
        "__timeFilter",
        "__to",
        "__url_time_range",
        "__user",
        "__value",
        "timeFilter",
    }
)
ALL: Final = "$__all"
GRID_COLUMNS: Final = 24
# Pixels per grid column on a 1,600 px wide dashboard: Grafana asks for one point per pixel.
PIXELS_PER_COLUMN: Final = 1600 / GRID_COLUMNS


class PrometheusError(RuntimeError):
    """Prometheus refused a query, or could not be reached."""


@dataclass(frozen=True)
class Series:
    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]  # (unix seconds, value); one point for an instant query

    @property
    def last(self) -> float | None:
        """The last value that is a number (Grafana's `lastNotNull`)."""
        for _, value in reversed(self.points):
            if not math.isnan(value):
                return value
        return None


@dataclass(frozen=True)
class PanelQuery:
    panel_id: int
    panel_title: str
    panel_type: str
    ref_id: str
    expr: str
    instant: bool
    fmt: str
    legend: str
    interval: str


@dataclass(frozen=True)
class TimeRange:
    start: float
    end: float

    @classmethod
    def last(cls, seconds: float, *, now: float | None = None) -> TimeRange:
        end = time.time() if now is None else now
        return cls(end - seconds, end)

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    options: tuple[str, ...]  # every value the variable's query returned
    selected: tuple[str, ...]  # the chosen values, or (ALL,)
    promql: str  # what `$name` becomes in a PromQL expression

    @property
    def text(self) -> str:
        return "All" if self.selected == (ALL,) else " + ".join(self.selected)


@dataclass(frozen=True)
class TargetResult:
    query: PanelQuery
    expr: str  # with every variable substituted
    series: tuple[Series, ...]
    step: float | None  # seconds; None for an instant query


@dataclass(frozen=True)
class QueryOutcome:
    """One query of a dashboard and how many series it returned."""

    dashboard: str
    where: str  # `panel "Title" A` or `variable vendor`
    expr: str
    series: int


@dataclass
class Prometheus:
    """A minimal client of the Prometheus HTTP API."""

    url: str
    timeout: float = 30.0
    requests: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {self.url}")
        self.url = self.url.rstrip("/")

    def _call(self, path: str, params: Sequence[tuple[str, str]]) -> Any:
        body = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __post_init__)
            self.url + path, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                document = json.load(response)
        except urllib.error.HTTPError as error:
            try:
                document = json.load(error)
            except ValueError:
                raise PrometheusError(f"{path}: HTTP {error.code}") from error
        except (urllib.error.URLError, OSError) as error:
            raise PrometheusError(f"{path}: {error}") from error
        if document.get("status") != "success":
            raise PrometheusError(f"{document.get('errorType')}: {document.get('error')}")
        return document["data"]

    def instant(self, expr: str, at: float) -> tuple[Series, ...]:
        data = self._call("/api/v1/query", [("query", expr), ("time", f"{at:.3f}")])
        return _parse_result(expr, data)

    def range(self, expr: str, start: float, end: float, step: float) -> tuple[Series, ...]:
        params = [("query", expr), ("start", f"{start:.3f}"), ("end", f"{end:.3f}"), ("step", f"{step:g}")]
        return _parse_result(expr, self._call("/api/v1/query_range", params))

    def label_values(self, label: str, match: str | None, time_range: TimeRange) -> list[str]:
        params = [("start", f"{time_range.start:.3f}"), ("end", f"{time_range.end:.3f}")]
        if match:
            params.append(("match[]", match))
        query = urllib.parse.urlencode(params)
        # GET: the label values endpoint takes no form body.
        request = urllib.request.Request(f"{self.url}/api/v1/label/{urllib.parse.quote(label)}/values?{query}")  # noqa: S310
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                document = json.load(response)
        except urllib.error.HTTPError as error:
            raise PrometheusError(f"label_values({match}, {label}): HTTP {error.code}: {error.read()!r}") from error
        except (urllib.error.URLError, OSError) as error:
            raise PrometheusError(f"label_values: {error}") from error
        return sorted(str(value) for value in document["data"])


def _parse_result(expr: str, data: Mapping[str, Any]) -> tuple[Series, ...]:
    kind = data["resultType"]
    if kind == "vector":
        return tuple(
            Series(dict(item["metric"]), ((float(item["value"][0]), float(item["value"][1])),))
            for item in data["result"]
        )
    if kind == "matrix":
        return tuple(
            Series(dict(item["metric"]), tuple((float(t), float(v)) for t, v in item["values"]))
            for item in data["result"]
        )
    if kind == "scalar":
        return (Series({}, ((float(data["result"][0]), float(data["result"][1])),)),)
    raise PrometheusError(f"{expr}: unexpected result type {kind}")


# --- Reading a dashboard ----------------------------------------------------------------------


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[Json]:
    """Every panel, rows included, with the panels of collapsed rows after their row."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    found = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("hide"):
                continue
            found.append(
                PanelQuery(
                    panel_id=int(panel.get("id", 0)),
                    panel_title=str(panel.get("title", "")),
                    panel_type=str(panel.get("type", "")),
                    ref_id=str(target.get("refId", "A")),
                    expr=str(target["expr"]),
                    instant=bool(target.get("instant")) and not target.get("range"),
                    fmt=str(target.get("format", "time_series")),
                    legend=str(target.get("legendFormat", "")),
                    interval=str(target.get("interval") or panel.get("interval") or ""),
                )
            )
    return found


def variable_query(variable: Mapping[str, Any]) -> str:
    """The query string of a query variable (a string, or Grafana 10's `{"query": ...}` object)."""
    raw = variable.get("query", "")
    if isinstance(raw, Mapping):
        raw = raw.get("query", "")
    return str(raw)


def referenced_variables(text: str) -> set[str]:
    """The names of the variables `text` refers to."""
    names = set()
    for match in VARIABLE_PATTERN.finditer(text):
        names.add(match.group(1) or match.group(2) or match.group(4))
    return names


# --- Variables --------------------------------------------------------------------------------

_LABEL_VALUES: Final = re.compile(r"^label_values\((?:(.+),\s*)?([a-zA-Z_]\w*)\)\s*$", re.DOTALL)
_REGEX_SPECIAL: Final = re.compile(r"[$^*{}\[\]'+?.()|\"]")


def regex_escape(value: str) -> str:
    """Grafana's prometheusSpecialRegexEscape: a literal inside a PromQL "..." regex."""
    return _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), value.replace("\\", "\\\\\\\\"))


def string_escape(value: str) -> str:
    """Grafana's prometheusRegularEscape, for single-value variables."""
    return value.replace("\\", "\\\\").replace("'", "\\\\'").replace('"', '\\"')


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus/Grafana duration: 90s, 5m, 1h30m, 1d, 500ms."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * units[unit] for number, unit in parts)


def format_duration(seconds: float) -> str:
    """A PromQL duration for `seconds` (whole seconds, or milliseconds below one second)."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    return f"{round(seconds)}s"


def resolve_variables(
    prometheus: Prometheus,
    dashboard: Mapping[str, Any],
    time_range: TimeRange,
    *,
    choose: Mapping[str, Sequence[str]] | None = None,
    select_all: bool = False,
) -> dict[str, Variable]:
    """Every variable's values, in order, as Grafana resolves them.

    `choose` picks values by variable name (unknown values are an error). Without
    it a variable takes Grafana's default: All where it has All, else its first
    value. With `select_all`, every variable takes all its values: All, or for a
    multi-value variable without All every value (what a user gets by ticking
    each one), or for a single-value variable its first value.
    """
    choose = choose or {}
    resolved: dict[str, Variable] = {}
    for spec in dashboard.get("templating", {}).get("list", []):
        name, kind = str(spec["name"]), spec.get("type")
        if kind == "datasource":
            resolved[name] = Variable(
                name, str(spec.get("label", name)), ("prometheus",), ("prometheus",), "prometheus"
            )
            continue
        if kind != "query":
            raise ValueError(f"variable {name}: type {kind!r} is not supported")
        options = tuple(run_variable_query(prometheus, variable_query(spec), resolved, time_range))
        multi, include_all = bool(spec.get("multi")), bool(spec.get("includeAll"))
        if name in choose:
            selected = tuple(choose[name])
            unknown = [value for value in selected if value not in options and value != ALL]
            if unknown or not selected:
                raise ValueError(f"variable {name}: {unknown or 'nothing'} not among {list(options)}")
        elif include_all:
            selected = (ALL,)
        elif select_all and multi:
            selected = options
        else:
            selected = options[:1]
        resolved[name] = Variable(
            name, str(spec.get("label") or name), options, selected, _promql_value(spec, options, selected)
        )
    return resolved


def _promql_value(spec: Mapping[str, Any], options: Sequence[str], selected: Sequence[str]) -> str:
    if tuple(selected) == (ALL,):
        if spec.get("allValue"):
            return str(spec["allValue"])
        selected = options
    if not spec.get("multi") and not spec.get("includeAll"):
        return string_escape(selected[0]) if selected else ""
    escaped = [regex_escape(value) for value in selected]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def run_variable_query(
    prometheus: Prometheus, raw: str, variables: Mapping[str, Variable], time_range: TimeRange
) -> list[str]:
    expr = interpolate(raw, {name: v.promql for name, v in variables.items()}, {})
    match = _LABEL_VALUES.match(expr.strip())
    if not match:
        raise ValueError(f"unsupported variable query (use label_values): {raw}")
    return prometheus.label_values(match.group(2), match.group(1), time_range)


def interpolate(text: str, values: Mapping[str, str], builtins: Mapping[str, str]) -> str:
    """`text` with every variable replaced; an unknown variable is an error."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        if name in builtins:
            return builtins[name]
        if name in values:
            return values[name]
        raise KeyError(f"undefined variable ${name} in {text}")

    return VARIABLE_PATTERN.sub(replace, text)


# --- Intervals, as Grafana computes them ------------------------------------------------------

# Grafana's rangeutil.roundInterval: (upper bound, result), milliseconds.
_ROUND_INTERVALS: Final = (
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1500, 1000),
    (3500, 2000),
    (7500, 5000),
    (12500, 10000),
    (17500, 15000),
    (25000, 20000),
    (45000, 30000),
    (90000, 60000),
    (210000, 120000),
    (450000, 300000),
    (750000, 600000),
    (1050000, 900000),
    (1500000, 1200000),
    (2700000, 1800000),
    (5400000, 3600000),
    (9000000, 7200000),
    (16200000, 10800000),
    (32400000, 21600000),
    (86400000, 43200000),
    (604800000, 86400000),
    (1814400000, 604800000),
    (3628800000, 2592000000),
)


def round_interval(seconds: float) -> float:
    ms = seconds * 1000
    for bound, result in _ROUND_INTERVALS:
        if ms < bound:
            return result / 1000
    return 31536000.0


def panel_interval(panel: Mapping[str, Any], query: PanelQuery, time_range: TimeRange, scrape: float) -> float:
    """`$__interval` of a query, in seconds."""
    points = panel.get("maxDataPoints") or panel.get("gridPos", {}).get("w", GRID_COLUMNS) * PIXELS_PER_COLUMN
    minimum = parse_duration(query.interval) if query.interval else scrape
    return max(minimum, round_interval(time_range.seconds / float(points)))


def builtins_for(interval: float, time_range: TimeRange, scrape: float) -> dict[str, str]:
    rate_interval = max(interval + scrape, 4 * scrape)
    return {
        "__interval": format_duration(interval),
        "__interval_ms": str(round(interval * 1000)),
        "__rate_interval": format_duration(rate_interval),
        "__range": format_duration(time_range.seconds),
        "__range_s": str(round(time_range.seconds)),
        "__range_ms": str(round(time_range.seconds * 1000)),
    }


# --- Running a dashboard ----------------------------------------------------------------------


def fetch_dashboard(
    prometheus: Prometheus,
    dashboard: Mapping[str, Any],
    variables: Mapping[str, Variable],
    time_range: TimeRange,
    *,
    scrape_interval: float = 15.0,
) -> dict[int, list[TargetResult]]:
    """Panel id → the results of its queries, run as Grafana would run them."""
    panels = {int(panel.get("id", 0)): panel for panel in iter_panels(dashboard)}
    values = {name: variable.promql for name, variable in variables.items()}
    results: dict[int, list[TargetResult]] = {}
    for query in panel_queries(dashboard):
        panel = panels[query.panel_id]
        interval = panel_interval(panel, query, time_range, scrape_interval)
        expr = interpolate(query.expr, values, builtins_for(interval, time_range, scrape_interval))
        if query.instant:
            series = prometheus.instant(expr, time_range.end)
            step = None
        else:
            step = interval
            start = math.floor(time_range.start / step) * step
            end = math.floor(time_range.end / step) * step
            series = prometheus.range(expr, start, end, step)
        results.setdefault(query.panel_id, []).append(TargetResult(query, expr, series, step))
    return results


def run_all_queries(
    prometheus_url: str,
    dashboard: Mapping[str, Any],
    *,
    range_seconds: float = 3600.0,
    scrape_interval: float = 15.0,
    now: float | None = None,
) -> list[QueryOutcome]:
    """Every variable query and every panel query of `dashboard`, with every variable
    selecting all its values; raises PrometheusError if Prometheus refuses a query."""
    prometheus = Prometheus(prometheus_url)
    time_range = TimeRange.last(range_seconds, now=now)
    title = str(dashboard.get("title", dashboard.get("uid", "")))
    variables = resolve_variables(prometheus, dashboard, time_range, select_all=True)
    outcomes = [
        QueryOutcome(title, f"variable {name}", variable_query(spec), len(variables[name].options))
        for spec in dashboard.get("templating", {}).get("list", [])
        if spec.get("type") == "query"
        for name in [str(spec["name"])]
    ]
    fetched = fetch_dashboard(prometheus, dashboard, variables, time_range, scrape_interval=scrape_interval)
    for results in fetched.values():
        for result in results:
            where = f'panel "{result.query.panel_title}" {result.query.ref_id}'
            outcomes.append(QueryOutcome(title, where, result.expr, len(result.series)))
    return outcomes
