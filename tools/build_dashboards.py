"""Generates the Grafana dashboards under grafana/dashboards/.

    python -m tools.build_dashboards            # (re)write the JSON files
    python -m tools.build_dashboards --check    # exit 1 if a committed file differs

The JSON files are committed (Grafana's file provider reads them as they are);
this script is their source. Conventions every dashboard follows:

- A `datasource` variable of type `datasource` (Prometheus); every panel and
  every query variable uses `${datasource}`.
- Job series are reduced with `max by (vendor, target, job_name, job_type)`
  before anything is counted, so a job scraped by two Prometheus jobs (or two
  exporter replicas) never appears twice; counters of the exporter process are
  reduced per `instance` first, then summed.
- Nothing hard-codes an RPO: ages are compared with `backup_job_rpo_seconds`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

Json = dict[str, Any]

DASHBOARD_DIR: Final = Path(__file__).resolve().parent.parent / "grafana" / "dashboards"
TAG: Final = "backup-exporter"
DS: Final[Json] = {"type": "prometheus", "uid": "${datasource}"}

# The identity of a job; every job series is reduced to it first.
KEY: Final = "vendor, target, job_name, job_type"
TARGET_KEY: Final = "vendor, target"

UID_OVERVIEW: Final = "backup-overview"
UID_JOB: Final = "backup-job-detail"
UID_CAPACITY: Final = "backup-capacity"
UID_HEALTH: Final = "backup-exporter-health"

# Grafana's named colours.
GREEN, RED, ORANGE, YELLOW, BLUE, PURPLE, GREY = "green", "red", "orange", "yellow", "blue", "purple", "#8e8e8e"

# backup_job_last_status as one number, so a table can colour it and sort by it.
STATUS_CODES: Final = (("success", 1, GREEN), ("warning", 2, ORANGE), ("cancelled", 3, BLUE), ("failed", 4, RED))
STATUS_MAPPINGS: Final[list[Json]] = [
    {
        "type": "value",
        "options": {
            "0": {"text": "no run yet", "color": GREY, "index": 0},
            **{str(code): {"text": name, "color": color, "index": code} for name, code, color in STATUS_CODES},
        },
    }
]
FAILED: Final = 'status="failed"'
WARNING: Final = 'status="warning"'
STATUS_COLORS: Final = {name: color for name, _, color in STATUS_CODES}

JOB_DETAIL_LINK: Final = (
    f"/d/{UID_JOB}/backup-job-detail?${{__url_time_range}}&${{datasource:queryparam}}"
    "&var-vendor=${__data.fields.vendor:percentencode}"
    "&var-target=${__data.fields.target:percentencode}"
    "&var-job=${__data.fields.job_name:percentencode}"
    "&var-job_type=${__data.fields.job_type:percentencode}"
)


# --- PromQL building blocks -------------------------------------------------------------------


def matchers(*extra: str, job: bool = False, instance: bool = False) -> str:
    """A label-matcher list: the given matchers, then the dashboard's filter variables."""
    found = [*extra, 'vendor=~"$vendor"', 'target=~"$target"']
    if job:
        found += ['job_name=~"$job"', 'job_type=~"$job_type"']
    if instance:
        found.append('instance=~"$instance"')
    return "{" + ", ".join(found) + "}"


def with_matcher(flt: str, extra: str) -> str:
    """`{a, b}` with `extra` put first: `{extra, a, b}`."""
    return "{" + extra + ", " + flt[1:]


def per_job(metric: str, flt: str, *, by: str = KEY, agg: str = "max") -> str:
    return f"{agg} by ({by}) ({metric}{flt})"


def status_code(flt: str, *, never: bool = False) -> str:
    """1 success, 2 warning, 3 cancelled, 4 failed; with `never`, 0 for a job with no finished run."""
    parts = [
        "backup_job_last_status" + with_matcher(flt, f'status="{name}"') + f" * {code}"
        for name, code, _ in STATUS_CODES
    ]
    if never:
        parts.append(f"backup_job_rpo_seconds{flt} * 0")
    return f"max by ({KEY}) ({' or '.join(parts)})"


def since_success(flt: str) -> str:
    return f"time() - {per_job('backup_job_last_success_timestamp_seconds', flt)}"


def rpo_used(flt: str) -> str:
    """Time since the last success as a fraction of the job's RPO (absent: never succeeded)."""
    return f"({since_success(flt)}) / {per_job('backup_job_rpo_seconds', flt)}"


def past_rpo(flt: str) -> str:
    """1 per job past its RPO or never successful, 0 per other job."""
    rpo = per_job("backup_job_rpo_seconds", flt)
    success = per_job("backup_job_last_success_timestamp_seconds", flt)
    return f"(({since_success(flt)}) > bool {rpo}) or ({rpo} unless {success}) * 0 + 1"


def process_metric(metric: str, *, window: str = "") -> str:
    """A metric of the exporter process (its rate over `window`), whatever its scrape job is called."""
    selector = f'{metric}{{instance=~"$instance"}}'
    if window:
        selector = f"rate({selector}[{window}])"
    return f"{selector} and on (job, instance) backup_exporter_build_info"


# --- Panel building blocks --------------------------------------------------------------------


def grid(x: int, y: int, w: int, h: int) -> Json:
    return {"x": x, "y": y, "w": w, "h": h}


def query(
    expr: str,
    ref: str = "A",
    *,
    legend: str = "",
    instant: bool = False,
    fmt: str = "time_series",
    interval: str = "",
) -> Json:
    target: Json = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "format": fmt,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "refId": ref,
    }
    if interval:
        target["interval"] = interval
    return target


def table_queries(*exprs: str) -> list[Json]:
    return [query(expr, chr(ord("A") + i), instant=True, fmt="table") for i, expr in enumerate(exprs)]


def thresholds(*steps: tuple[str, float | None]) -> Json:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for color, value in steps]}


def value_mappings(options: Mapping[str, tuple[str, str]]) -> list[Json]:
    return [
        {
            "type": "value",
            "options": {
                value: {"text": text, "color": color, "index": i}
                for i, (value, (text, color)) in enumerate(options.items())
            },
        }
    ]


def null_mapping(text: str, color: str) -> Json:
    return {"type": "special", "options": {"match": "null", "result": {"text": text, "color": color, "index": 99}}}


def override(name: str, **properties: Any) -> Json:
    """A field override matched by display name; property ids use `__` for `.` (custom__width)."""
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": key.replace("__", "."), "value": value} for key, value in properties.items()],
    }


def series_colors(colors: Mapping[str, str]) -> list[Json]:
    return [override(name, color={"mode": "fixed", "fixedColor": color}) for name, color in colors.items()]


def base_panel(kind: str, title: str, gp: Json, targets: Sequence[Json], description: str) -> Json:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": gp,
        "targets": list(targets),
    }


def stat(
    title: str,
    gp: Json,
    targets: Sequence[Json],
    *,
    description: str,
    unit: str = "none",
    steps: Json | None = None,
    mappings: Sequence[Json] = (),
    fixed_color: str | None = None,
    no_value: str | None = None,
    decimals: int | None = None,
) -> Json:
    defaults: Json = {
        "unit": unit,
        "mappings": list(mappings),
        "thresholds": steps or thresholds((GREEN, None)),
        "color": {"mode": "fixed", "fixedColor": fixed_color} if fixed_color else {"mode": "thresholds"},
    }
    if no_value is not None:
        defaults["noValue"] = no_value
    if decimals is not None:
        defaults["decimals"] = decimals
    panel = base_panel("stat", title, gp, targets, description)
    panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
    panel["options"] = {
        "colorMode": "background",
        "graphMode": "none",
        "justifyMode": "center",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showPercentChange": False,
        "textMode": "auto",
        "wideLayout": True,
    }
    return panel


def timeseries(
    title: str,
    gp: Json,
    targets: Sequence[Json],
    *,
    description: str,
    unit: str,
    bars: bool = False,
    stacked: bool = False,
    fill: int = 10,
    legend_table: bool = False,
    steps: Json | None = None,
    threshold_line: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    overrides: Sequence[Json] = (),
    max_data_points: int | None = None,
    decimals: int | None = None,
) -> Json:
    custom: Json = {
        "axisBorderShow": False,
        "axisCenteredZero": False,
        "axisColorMode": "text",
        "axisLabel": "",
        "axisPlacement": "auto",
        "barAlignment": 1,
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 80 if bars else fill,
        "gradientMode": "none",
        "hideFrom": {"legend": False, "tooltip": False, "viz": False},
        "insertNulls": False,
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "pointSize": 4,
        "scaleDistribution": {"type": "linear"},
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stacked else "none"},
        "thresholdsStyle": {"mode": "dashed" if threshold_line else "off"},
    }
    defaults: Json = {
        "unit": unit,
        "custom": custom,
        "color": {"mode": "palette-classic"},
        "mappings": [],
        "thresholds": steps or thresholds((GREEN, None)),
    }
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if decimals is not None:
        defaults["decimals"] = decimals
    panel = base_panel("timeseries", title, gp, targets, description)
    panel["fieldConfig"] = {"defaults": defaults, "overrides": list(overrides)}
    panel["options"] = {
        "legend": {
            "calcs": ["lastNotNull", "max"] if legend_table else [],
            "displayMode": "table" if legend_table else "list",
            "placement": "right" if legend_table else "bottom",
            "showLegend": True,
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    if max_data_points is not None:
        panel["maxDataPoints"] = max_data_points
    return panel


def table(
    title: str,
    gp: Json,
    targets: Sequence[Json],
    *,
    description: str,
    columns: Mapping[str, str],
    overrides: Sequence[Json] = (),
    hide: Iterable[str] = (),
    sort_by: str | None = None,
    merge: bool = True,
) -> Json:
    """A table of instant queries; `columns` maps field names to titles in display order."""
    value_names = ["Value"] if len(targets) == 1 else [f"Value #{t['refId']}" for t in targets]
    excluded = {name: True for name in ("Time", "__name__", "job", "instance", *hide) if name not in columns}
    for name in value_names:
        if name not in columns:
            excluded[name] = True
    organize: Json = {
        "id": "organize",
        "options": {
            "excludeByName": excluded,
            "indexByName": {name: i for i, name in enumerate(columns)},
            "renameByName": {name: title for name, title in columns.items() if name != title},
        },
    }
    panel = base_panel("table", title, gp, targets, description)
    panel["fieldConfig"] = {
        "defaults": {
            "custom": {"align": "auto", "cellOptions": {"type": "auto"}, "filterable": False, "inspect": False},
            "mappings": [],
            "thresholds": thresholds((GREEN, None)),
            "color": {"mode": "thresholds"},
        },
        "overrides": list(overrides),
    }
    panel["options"] = {
        "cellHeight": "sm",
        "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
        "showHeader": True,
        "sortBy": [{"desc": True, "displayName": sort_by}] if sort_by else [],
    }
    panel["transformations"] = [{"id": "merge", "options": {}}, organize] if merge else [organize]
    return panel


def bargauge(
    title: str,
    gp: Json,
    targets: Sequence[Json],
    *,
    description: str,
    unit: str,
    steps: Json | None = None,
    minimum: float | None = 0,
    maximum: float | None = None,
    overrides: Sequence[Json] = (),
    fixed_color: str | None = None,
) -> Json:
    defaults: Json = {
        "unit": unit,
        "mappings": [],
        "thresholds": steps or thresholds((GREEN, None)),
        "color": {"mode": "fixed", "fixedColor": fixed_color} if fixed_color else {"mode": "thresholds"},
    }
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    panel = base_panel("bargauge", title, gp, targets, description)
    panel["fieldConfig"] = {"defaults": defaults, "overrides": list(overrides)}
    panel["options"] = {
        "displayMode": "gradient",
        "maxVizHeight": 300,
        "minVizHeight": 16,
        "minVizWidth": 8,
        "namePlacement": "auto",
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True,
        "sizing": "auto",
        "valueMode": "color",
    }
    return panel


def state_timeline(
    title: str,
    gp: Json,
    targets: Sequence[Json],
    *,
    description: str,
    mappings: Sequence[Json],
    steps: Json,
) -> Json:
    panel = base_panel("state-timeline", title, gp, targets, description)
    panel["fieldConfig"] = {
        "defaults": {
            "custom": {
                "fillOpacity": 75,
                "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                "lineWidth": 0,
            },
            "color": {"mode": "thresholds"},
            "mappings": list(mappings),
            "thresholds": steps,
        },
        "overrides": [],
    }
    panel["options"] = {
        "alignValue": "center",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
        "mergeValues": True,
        "rowHeight": 0.8,
        "showValue": "auto",
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel


def row(title: str, y: int) -> Json:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": grid(0, y, 24, 1), "panels": []}


# --- Variables and the dashboard itself -------------------------------------------------------


def datasource_variable() -> Json:
    return {
        "type": "datasource",
        "name": "datasource",
        "label": "Data source",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def query_variable(name: str, label: str, expr: str, *, multi: bool = True, include_all: bool = True) -> Json:
    """A Prometheus query variable; multi-value variables are regex-escaped by Grafana, use them with =~."""
    variable: Json = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "query": expr,
        "definition": expr,
        "current": {},
        "hide": 0,
        "includeAll": include_all,
        "multi": multi,
        "options": [],
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
    }
    if include_all:
        variable["allValue"] = ".*"
    return variable


def vendor_target_variables(metric: str) -> list[Json]:
    return [
        query_variable("vendor", "Vendor", f"label_values({metric}, vendor)"),
        query_variable("target", "Target", f'label_values({metric}{{vendor=~"$vendor"}}, target)'),
    ]


def dashboard(
    uid: str, title: str, description: str, variables: Sequence[Json], panels: Sequence[Json], *, time_from: str
) -> Json:
    numbered = [{"id": i, **panel} for i, panel in enumerate(panels, start=1)]
    return {
        "annotations": {"list": []},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": True,
                "icon": "external link",
                "includeVars": True,
                "keepTime": True,
                "tags": [TAG],
                "targetBlank": False,
                "title": "Backup dashboards",
                "type": "dashboards",
            }
        ],
        "liveNow": False,
        "panels": numbered,
        "refresh": "1m",
        "schemaVersion": 39,
        "tags": [TAG],
        "templating": {"list": [datasource_variable(), *variables]},
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


# --- The dashboards ---------------------------------------------------------------------------

JOB_COLUMNS: Final = {"vendor": "Vendor", "target": "Target", "job_name": "Job", "job_type": "Type"}


def job_link_override() -> Json:
    return override("Job", links=[{"title": "Job detail", "url": JOB_DETAIL_LINK}])


def status_cell_override(name: str) -> Json:
    return override(name, mappings=STATUS_MAPPINGS, custom__cellOptions={"type": "color-background", "mode": "basic"})


def runs_per_day(position: Json, selector: str, description: str) -> Json:
    """Finished runs per day, stacked by status: the overview and the job detail share it."""
    increase = per_job("increase(backup_job_runs_total" + selector + "[1d])", "", by=KEY + ", status")
    return timeseries(
        "Finished runs per day, by status",
        position,
        [
            query(
                f"sum by (status) ({increase})",
                legend="{{status}}",
            )
        ],
        description=description,
        unit="short",
        bars=True,
        stacked=True,
        max_data_points=60,
        minimum=0,
        decimals=0,
        overrides=series_colors(STATUS_COLORS),
    )


def overview() -> Json:
    f = matchers()
    stats = [
        stat(
            "Jobs",
            grid(0, 0, 4, 4),
            [query(f"count({per_job('backup_job_rpo_seconds', f)}) or vector(0)", instant=True)],
            description="Jobs the exporter knows about (every job has an RPO series).",
            fixed_color=BLUE,
        ),
        stat(
            "Failed jobs",
            grid(4, 0, 4, 4),
            [query(f"sum({per_job('backup_job_last_status', matchers(FAILED))}) or vector(0)", instant=True)],
            description="Jobs whose last finished run failed.",
            steps=thresholds((GREEN, None), (RED, 1)),
        ),
        stat(
            "Jobs with warnings",
            grid(8, 0, 4, 4),
            [
                query(
                    f"sum({per_job('backup_job_last_status', matchers(WARNING))}) or vector(0)",
                    instant=True,
                )
            ],
            description="Jobs whose last finished run ended with a warning.",
            steps=thresholds((GREEN, None), (ORANGE, 1)),
        ),
        stat(
            "Jobs past RPO",
            grid(12, 0, 4, 4),
            [query(f"sum({past_rpo(f)}) or vector(0)", instant=True)],
            description="Jobs whose last success is older than their RPO (backup_job_rpo_seconds), "
            "and jobs that never succeeded.",
            steps=thresholds((GREEN, None), (RED, 1)),
        ),
        stat(
            "Targets down",
            grid(16, 0, 4, 4),
            [
                query(
                    f"count({per_job('backup_target_up', f, by=TARGET_KEY)} == 0) or vector(0)",
                    instant=True,
                )
            ],
            description="Targets whose last collection failed (backup_target_up == 0). Their job series keep "
            "their last known values.",
            steps=thresholds((GREEN, None), (RED, 1)),
        ),
        stat(
            "Running jobs",
            grid(20, 0, 4, 4),
            [query(f"count({per_job('backup_job_running', f)} > 0) or vector(0)", instant=True)],
            description="Jobs with at least one run in progress at the last poll.",
            fixed_color=BLUE,
        ),
    ]
    jobs = table(
        "Jobs",
        grid(0, 4, 24, 13),
        table_queries(
            status_code(f, never=True),
            since_success(f),
            per_job("backup_job_rpo_seconds", f),
            rpo_used(f),
            per_job("backup_job_last_duration_seconds", f),
            per_job("backup_job_running", f),
        ),
        description="Every job: the outcome of its last finished run, the time since its last success against "
        "its RPO, and the duration of its last run. Click a job for its detail dashboard.",
        columns={
            **JOB_COLUMNS,
            "Value #A": "Last status",
            "Value #B": "Since last success",
            "Value #C": "RPO",
            "Value #D": "RPO used",
            "Value #E": "Last duration",
            "Value #F": "Running",
        },
        sort_by="Last status",
        overrides=[
            job_link_override(),
            status_cell_override("Last status"),
            override("Since last success", unit="dtdurations", decimals=1, mappings=[null_mapping("never", RED)]),
            override("RPO", unit="dtdurations", decimals=1),
            override(
                "RPO used",
                unit="percentunit",
                decimals=0,
                thresholds=thresholds((GREEN, None), (ORANGE, 0.8), (RED, 1)),
                mappings=[null_mapping("never succeeded", RED)],
                custom__cellOptions={"type": "color-background", "mode": "basic"},
            ),
            override("Last duration", unit="dtdurations", decimals=1),
            override(
                "Running",
                decimals=0,
                thresholds=thresholds((GREY, None), (BLUE, 1)),
                custom__cellOptions={"type": "color-text"},
            ),
        ],
    )
    runs = runs_per_day(
        grid(0, 17, 12, 9),
        f,
        "Runs finished in the 24 hours before each point (backup_job_runs_total), stacked by status.",
    )
    vendors = table(
        "Per vendor",
        grid(12, 17, 12, 9),
        table_queries(
            f"count by (vendor) ({per_job('backup_target_up', f, by=TARGET_KEY)})",
            f"sum by (vendor) (1 - {per_job('backup_target_up', f, by=TARGET_KEY)})",
            f"count by (vendor) ({per_job('backup_job_rpo_seconds', f)})",
            f"sum by (vendor) ({per_job('backup_job_last_status', matchers(FAILED))})",
            f"sum by (vendor) ({per_job('backup_job_last_status', matchers(WARNING))})",
            f"sum by (vendor) ({past_rpo(f)})",
            f"sum by (vendor) ({per_job('backup_job_running', f)} > bool 0)",
        ),
        description="Targets, jobs and problems per vendor.",
        columns={
            "vendor": "Vendor",
            "Value #A": "Targets",
            "Value #B": "Targets down",
            "Value #C": "Jobs",
            "Value #D": "Failed",
            "Value #E": "Warnings",
            "Value #F": "Past RPO",
            "Value #G": "Running",
        },
        overrides=[
            *(
                override(
                    name,
                    decimals=0,
                    thresholds=thresholds((GREEN, None), (color, 1)),
                    custom__cellOptions={"type": "color-text"},
                )
                for name, color in (("Targets down", RED), ("Failed", RED), ("Warnings", ORANGE), ("Past RPO", RED))
            ),
            override("Targets", decimals=0),
            override("Jobs", decimals=0),
            override("Running", decimals=0),
        ],
    )
    durations = timeseries(
        "Last run duration, 10 longest jobs",
        grid(0, 33, 24, 8),
        [
            query(
                f"topk(10, {per_job('backup_job_last_duration_seconds', f)})",
                legend="{{target}} · {{job_name}} ({{job_type}})",
            )
        ],
        description="backup_job_last_duration_seconds of the ten jobs whose last run took longest.",
        unit="s",
        minimum=0,
        legend_table=True,
    )
    failures = table(
        "Failed and warning jobs",
        grid(0, 26, 24, 7),
        table_queries(
            f"max by ({KEY}, reason) (backup_job_last_failure_info{f} * on ({KEY}) group_left () {status_code(f)})"
        ),
        description="The reason the exporter reports for each job whose last run failed or warned "
        "(backup_job_last_failure_info).",
        columns={**JOB_COLUMNS, "Value": "Last status", "reason": "Reason"},
        sort_by="Last status",
        overrides=[job_link_override(), status_cell_override("Last status")],
    )
    return dashboard(
        UID_OVERVIEW,
        "Backup overview",
        "Every backup job of every vendor: failures, RPO breaches, targets down, runs and durations.",
        vendor_target_variables("backup_target_up"),
        [*stats, jobs, runs, vendors, failures, durations],
        time_from="now-24h",
    )


def job_detail() -> Json:
    f = matchers(job=True)
    legend = "{{job_name}} ({{job_type}})"
    variables = [
        *vendor_target_variables("backup_job_rpo_seconds"),
        query_variable(
            "job",
            "Job",
            'label_values(backup_job_rpo_seconds{vendor=~"$vendor", target=~"$target"}, job_name)',
            include_all=False,
        ),
        query_variable(
            "job_type",
            "Job type",
            'label_values(backup_job_rpo_seconds{vendor=~"$vendor", target=~"$target", job_name=~"$job"}, job_type)',
        ),
    ]
    stats = [
        stat(
            "Last status",
            grid(0, 0, 4, 5),
            [query(status_code(f, never=True), instant=True, legend=legend)],
            description="Outcome of the last finished run.",
            mappings=STATUS_MAPPINGS,
        ),
        stat(
            "Since last success",
            grid(4, 0, 4, 5),
            [query(since_success(f), instant=True, legend=legend)],
            description="Time since the end of the last successful run.",
            unit="dtdurations",
            decimals=1,
            fixed_color=BLUE,
            no_value="never",
        ),
        stat(
            "RPO",
            grid(8, 0, 4, 5),
            [query(per_job("backup_job_rpo_seconds", f), instant=True, legend=legend)],
            description="The job's configured recovery point objective (backup_job_rpo_seconds).",
            unit="dtdurations",
            decimals=1,
            fixed_color=BLUE,
        ),
        stat(
            "RPO used",
            grid(12, 0, 4, 5),
            [query(rpo_used(f), instant=True, legend=legend)],
            description="Time since the last success as a share of the RPO; over 100 % is an RPO breach.",
            unit="percentunit",
            decimals=0,
            steps=thresholds((GREEN, None), (ORANGE, 0.8), (RED, 1)),
            no_value="never succeeded",
        ),
        stat(
            "Last duration",
            grid(16, 0, 4, 5),
            [query(per_job("backup_job_last_duration_seconds", f), instant=True, legend=legend)],
            description="Duration of the last finished run.",
            unit="dtdurations",
            decimals=1,
            fixed_color=BLUE,
        ),
        stat(
            "Runs in progress",
            grid(20, 0, 4, 5),
            [query(per_job("backup_job_running", f), instant=True, legend=legend)],
            description="Runs in progress at the last poll (backup_job_running).",
            fixed_color=BLUE,
        ),
    ]
    age = timeseries(
        "Since last success, against the RPO",
        grid(0, 5, 12, 8),
        [
            query(since_success(f), "A", legend="since success: " + legend),
            query(per_job("backup_job_rpo_seconds", f), "B", legend="RPO: " + legend),
        ],
        description="Time since the last success climbs until the next success; crossing the RPO line is a breach.",
        unit="s",
        minimum=0,
        overrides=[
            {
                "matcher": {"id": "byFrameRefID", "options": "B"},
                "properties": [
                    {"id": "color", "value": {"mode": "fixed", "fixedColor": RED}},
                    {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
                    {"id": "custom.fillOpacity", "value": 0},
                ],
            }
        ],
    )
    duration = timeseries(
        "Last run duration",
        grid(12, 5, 12, 8),
        [query(per_job("backup_job_last_duration_seconds", f), legend=legend)],
        description="Duration of the last finished run; each step is a new run.",
        unit="s",
        minimum=0,
    )
    runs = runs_per_day(grid(0, 13, 12, 8), f, "Runs finished in the 24 hours before each point, stacked by status.")
    histogram = bargauge(
        "Run durations",
        grid(12, 13, 6, 8),
        [
            query(
                f"sum by (le) (max by ({KEY}, le) (backup_job_run_duration_seconds_bucket{f}))",
                instant=True,
                fmt="heatmap",
                legend="≤ {{le}} s",
            )
        ],
        description="Finished runs recorded by the exporter, by duration bucket (backup_job_run_duration_seconds).",
        unit="short",
        fixed_color=BLUE,
    )
    outcomes = bargauge(
        "Runs recorded, by status",
        grid(18, 13, 6, 8),
        [
            query(
                f"sum by (status) ({per_job('backup_job_runs_total', f, by=KEY + ', status')})",
                instant=True,
                legend="{{status}}",
            )
        ],
        description="Every finished run the exporter has counted (backup_job_runs_total).",
        unit="short",
        overrides=series_colors(STATUS_COLORS),
    )
    progress = bargauge(
        "Progress of the running run",
        grid(0, 21, 8, 7),
        [query(per_job("backup_job_running_progress_ratio", f), instant=True, legend=legend)],
        description="Progress of the oldest run in progress, where the vendor reports it.",
        unit="percentunit",
        maximum=1,
        fixed_color=BLUE,
    )
    items = bargauge(
        "Items of the last run",
        grid(8, 21, 8, 7),
        [query(per_job("backup_job_last_items", f, by=KEY + ", state"), instant=True, legend="{{state}}: " + legend)],
        description="Objects of the last run, where the vendor reports them (AvePoint, Commvault).",
        unit="short",
        overrides=series_colors({"failed": RED, "skipped": ORANGE}),
        fixed_color=BLUE,
    )
    size = bargauge(
        "Bytes of the last run",
        grid(16, 21, 8, 7),
        [
            query(per_job("backup_job_last_processed_bytes", f), "A", instant=True, legend="processed: " + legend),
            query(per_job("backup_job_last_stored_bytes", f), "B", instant=True, legend="stored: " + legend),
        ],
        description="Bytes processed and stored by the last run, where the vendor reports them (Commvault).",
        unit="bytes",
        fixed_color=BLUE,
    )
    failure = table(
        "Failure reason",
        grid(0, 28, 24, 5),
        table_queries(
            f"max by ({KEY}, reason) (backup_job_last_failure_info{f} * on ({KEY}) group_left () {status_code(f)})"
        ),
        description="Why the last run failed or warned (backup_job_last_failure_info); empty while the last "
        "run succeeded.",
        columns={**JOB_COLUMNS, "Value": "Last status", "reason": "Reason"},
        overrides=[status_cell_override("Last status")],
    )
    info = table(
        "Job information",
        grid(0, 33, 24, 5),
        table_queries(f"max without (job, instance) (backup_job_info{f})"),
        description="Vendor-specific descriptive labels of the job (backup_job_info).",
        columns=JOB_COLUMNS,
        merge=False,
    )
    return dashboard(
        UID_JOB,
        "Backup job detail",
        "One job (or a few): last status, age against the RPO, durations, runs, progress, failure reason.",
        variables,
        [*stats, age, duration, runs, histogram, outcomes, progress, items, size, failure, info],
        time_from="now-7d",
    )


def capacity() -> Json:
    f = matchers()
    snap_key = KEY
    repo_key = "vendor, target, repository"
    legend = "{{target}} · {{job_name}}"
    size = timeseries(
        "Snapshot size",
        grid(0, 1, 12, 8),
        [query(per_job("backup_snapshot_last_size_bytes", f), legend=legend)],
        description="Size of the newest snapshot of each Keepit connector (backup_snapshot_last_size_bytes).",
        unit="bytes",
        minimum=0,
    )
    ratio_steps = thresholds((RED, None), (GREEN, 0.5))
    ratio = timeseries(
        "Snapshot size change ratio",
        grid(12, 1, 12, 8),
        [query(per_job("backup_snapshot_size_change_ratio", f), legend=legend)],
        description="Newest snapshot size / previous one. Below 0.5 (the line) half of the data vanished "
        "between two snapshots: a mass deletion, or ransomware.",
        unit="percentunit",
        minimum=0,
        steps=ratio_steps,
        threshold_line=True,
    )
    latest = bargauge(
        "Latest size change ratio",
        grid(0, 9, 8, 7),
        [query(per_job("backup_snapshot_size_change_ratio", f), instant=True, legend=legend)],
        description="Newest snapshot size / previous one; red below 0.5.",
        unit="percentunit",
        maximum=1.5,
        steps=ratio_steps,
    )
    complete = per_job("backup_snapshot_last_timestamp_seconds", matchers('snapshot_type="complete"'))
    partial = per_job("backup_snapshot_last_timestamp_seconds", matchers('snapshot_type="partial"'))
    snapshots = table(
        "Newest snapshots",
        grid(8, 9, 16, 7),
        table_queries(
            f"time() - {complete}",
            f"time() - {partial}",
            f"(time() - {complete}) / on ({snap_key}) {per_job('backup_job_rpo_seconds', f)}",
            per_job("backup_snapshot_last_size_bytes", f),
            per_job("backup_snapshot_size_change_ratio", f),
        ),
        description="Age of the newest complete and partial snapshot of each connector, the complete one's "
        "age as a share of the job's RPO, and the newest size and change ratio.",
        columns={
            "target": "Target",
            "job_name": "Connector",
            "Value #A": "Newest complete",
            "Value #B": "Newest partial",
            "Value #C": "RPO used",
            "Value #D": "Size",
            "Value #E": "Change ratio",
        },
        hide=("vendor", "job_type"),
        overrides=[
            override("Newest complete", unit="dtdurations", decimals=1, mappings=[null_mapping("none", RED)]),
            override("Newest partial", unit="dtdurations", decimals=1, mappings=[null_mapping("none", GREY)]),
            override(
                "RPO used",
                unit="percentunit",
                decimals=0,
                thresholds=thresholds((GREEN, None), (ORANGE, 0.8), (RED, 1)),
                custom__cellOptions={"type": "color-background", "mode": "basic"},
            ),
            override("Size", unit="bytes"),
            override(
                "Change ratio",
                unit="percentunit",
                decimals=0,
                thresholds=ratio_steps,
                custom__cellOptions={"type": "color-background", "mode": "basic"},
            ),
        ],
    )
    capacity_q = per_job("backup_repository_capacity_bytes", f, by=repo_key)
    free_q = per_job("backup_repository_free_bytes", f, by=repo_key)
    used_ratio = f"({capacity_q} - {free_q}) / {capacity_q}"
    used_steps = thresholds((GREEN, None), (ORANGE, 0.8), (RED, 0.9))
    used_gauge = bargauge(
        "Repository space used",
        grid(0, 17, 8, 7),
        [query(used_ratio, instant=True, legend="{{repository}}")],
        description="Used share of each Veeam repository; orange from 80 %, red from 90 %.",
        unit="percentunit",
        maximum=1,
        steps=used_steps,
    )
    repositories = table(
        "Repositories",
        grid(8, 17, 16, 7),
        table_queries(capacity_q, free_q, f"{capacity_q} - {free_q}", used_ratio),
        description="Capacity and free space of each Veeam repository (repositories whose size Veeam reports "
        "as unknown are left out).",
        columns={
            "target": "Target",
            "repository": "Repository",
            "Value #A": "Capacity",
            "Value #B": "Free",
            "Value #C": "Used",
            "Value #D": "Used %",
        },
        hide=("vendor",),
        sort_by="Used %",
        overrides=[
            override("Capacity", unit="bytes"),
            override("Free", unit="bytes"),
            override("Used", unit="bytes"),
            override(
                "Used %",
                unit="percentunit",
                decimals=1,
                thresholds=used_steps,
                custom__cellOptions={"type": "gauge", "mode": "basic", "valueDisplayMode": "text"},
                max=1,
                min=0,
            ),
        ],
    )
    used_over_time = timeseries(
        "Repository space used",
        grid(0, 24, 12, 8),
        [query(f"{capacity_q} - {free_q}", legend="{{repository}}")],
        description="Used bytes per repository.",
        unit="bytes",
        minimum=0,
    )
    free_over_time = timeseries(
        "Repository free space",
        grid(12, 24, 12, 8),
        [query(free_q, legend="{{repository}}")],
        description="Free bytes per repository.",
        unit="bytes",
        minimum=0,
    )
    return dashboard(
        UID_CAPACITY,
        "Backup snapshots and capacity",
        "Keepit snapshot sizes and change ratios (mass-deletion signal); Veeam repository capacity.",
        vendor_target_variables("backup_target_up"),
        [
            row("Keepit snapshots", 0),
            size,
            ratio,
            latest,
            snapshots,
            row("Veeam repositories", 16),
            used_gauge,
            repositories,
            used_over_time,
            free_over_time,
        ],
        time_from="now-7d",
    )


def exporter_health() -> Json:
    f = matchers()
    per_instance = f"instance, {TARGET_KEY}"
    up_mappings = value_mappings({"1": ("up", GREEN), "0": ("down", RED)})
    up_steps = thresholds((RED, None), (GREEN, 1))
    errors_range = (
        f"sum(max by ({per_instance}, reason) (increase(backup_target_collection_errors_total{f}[$__range]))) "
        "or vector(0)"
    )
    non_2xx = matchers('code!~"2.."')
    requests_range = (
        f"sum(max by ({per_instance}, code) (increase(backup_target_api_requests_total{non_2xx}[$__range]))) "
        "or vector(0)"
    )
    stats = [
        stat(
            "Targets up",
            grid(0, 0, 4, 4),
            [query(f"count({per_job('backup_target_up', f, by=TARGET_KEY)} == 1) or vector(0)", instant=True)],
            description="Targets whose last collection succeeded.",
            fixed_color=GREEN,
        ),
        stat(
            "Targets down",
            grid(4, 0, 4, 4),
            [query(f"count({per_job('backup_target_up', f, by=TARGET_KEY)} == 0) or vector(0)", instant=True)],
            description="Targets whose last collection failed.",
            steps=thresholds((GREEN, None), (RED, 1)),
        ),
        stat(
            "Collection errors",
            grid(8, 0, 4, 4),
            [query(errors_range, instant=True)],
            description="Failed collections in the dashboard's time range, all reasons.",
            steps=thresholds((GREEN, None), (ORANGE, 1)),
            decimals=0,
        ),
        stat(
            "API responses not 2xx",
            grid(12, 0, 4, 4),
            [query(requests_range, instant=True)],
            description="Vendor API requests in the time range that got no 2xx answer (including retried ones).",
            steps=thresholds((GREEN, None), (ORANGE, 1)),
            decimals=0,
        ),
        stat(
            "Exporter instances",
            grid(16, 0, 4, 4),
            [
                query(
                    'count(max by (instance) (backup_exporter_build_info{instance=~"$instance"})) or vector(0)',
                    instant=True,
                )
            ],
            description="Exporter processes Prometheus scrapes (backup_exporter_build_info).",
            fixed_color=BLUE,
        ),
        stat(
            "Config reload",
            grid(20, 0, 4, 4),
            [query('min(backup_exporter_config_last_reload_successful{instance=~"$instance"})', instant=True)],
            description="Whether the last configuration (re)load of every instance succeeded; a failed reload "
            "keeps the old configuration.",
            mappings=value_mappings({"1": ("OK", GREEN), "0": ("failed", RED)}),
            steps=up_steps,
        ),
    ]
    target_up = state_timeline(
        "Target up",
        grid(0, 4, 12, 7),
        [query(per_job("backup_target_up", f, by=TARGET_KEY), legend="{{target}}")],
        description="backup_target_up per target: whether its last collection succeeded.",
        mappings=up_mappings,
        steps=up_steps,
    )
    last_success = bargauge(
        "Since last successful collection",
        grid(12, 4, 12, 7),
        [
            query(
                f"time() - {per_job('backup_target_last_success_timestamp_seconds', f, by=TARGET_KEY)}",
                instant=True,
                legend="{{target}}",
            )
        ],
        description="Time since each target was last collected successfully.",
        unit="s",
        fixed_color=BLUE,
    )
    duration = timeseries(
        "Collection duration",
        grid(0, 11, 12, 8),
        [query(per_job("backup_target_collection_duration_seconds", f, by=TARGET_KEY), legend="{{target}}")],
        description="How long the last collection of each target took.",
        unit="s",
        minimum=0,
    )
    errors = timeseries(
        "Collection errors by reason",
        grid(12, 11, 12, 8),
        [
            query(
                f"sum by (reason) (max by ({per_instance}, reason) "
                f"(rate(backup_target_collection_errors_total{f}[$__rate_interval])))",
                legend="{{reason}}",
                interval="5m",
            )
        ],
        description="Failed collections per second by reason: timeout, auth, http, parse, connection, config. "
        "Averaged over at least 5 minutes, the default poll interval.",
        unit="ops",
        minimum=0,
    )
    requests = timeseries(
        "Vendor API requests by code",
        grid(0, 19, 12, 8),
        [
            query(
                f"sum by ({TARGET_KEY}, code) (max by ({per_instance}, code) "
                f"(rate(backup_target_api_requests_total{f}[$__rate_interval])))",
                legend="{{target}}: {{code}}",
                interval="5m",
            )
        ],
        description="Requests per second made to each vendor API, by HTTP status code (error: no answer). "
        "Averaged over at least 5 minutes, the default poll interval.",
        unit="reqps",
        minimum=0,
    )
    build = 'max by (instance, version) (backup_exporter_build_info{instance=~"$instance"})'

    def with_version(expr: str) -> str:
        return f"({expr}) * on (instance) group_left (version) {build}"

    instances = table(
        "Exporter instances",
        grid(12, 19, 12, 8),
        table_queries(
            with_version('max by (instance) (backup_exporter_targets{instance=~"$instance"})'),
            with_version('max by (instance) (backup_exporter_config_last_reload_successful{instance=~"$instance"})'),
            with_version(
                "time() - max by (instance) "
                '(backup_exporter_config_last_reload_success_timestamp_seconds{instance=~"$instance"})'
            ),
            with_version(f"time() - max by (instance) ({process_metric('process_start_time_seconds')})"),
        ),
        description="Each exporter process: version, targets it collects, last config load, uptime.",
        columns={
            "instance": "Instance",
            "version": "Version",
            "Value #A": "Targets",
            "Value #B": "Config loaded",
            "Value #C": "Since config load",
            "Value #D": "Uptime",
        },
        overrides=[
            override(
                "Config loaded",
                mappings=value_mappings({"1": ("OK", GREEN), "0": ("failed", RED)}),
                custom__cellOptions={"type": "color-text"},
            ),
            override("Since config load", unit="dtdurations", decimals=1),
            override("Uptime", unit="dtdurations", decimals=1),
        ],
    )
    memory = timeseries(
        "Exporter memory",
        grid(0, 27, 6, 7),
        [query(process_metric("process_resident_memory_bytes"), legend="{{instance}}")],
        description="Resident memory of each exporter process.",
        unit="bytes",
        minimum=0,
    )
    cpu = timeseries(
        "Exporter CPU",
        grid(6, 27, 6, 7),
        [
            query(
                process_metric("process_cpu_seconds_total", window="$__rate_interval"),
                legend="{{instance}}",
            )
        ],
        description="CPU seconds per second used by each exporter process.",
        unit="percentunit",
        minimum=0,
    )
    scrape = timeseries(
        "Scrape duration",
        grid(12, 27, 6, 7),
        [query(process_metric("scrape_duration_seconds"), legend="{{job}} {{instance}}")],
        description="How long Prometheus takes to scrape each exporter (whatever its scrape job is called).",
        unit="s",
        minimum=0,
    )
    exporter_up = state_timeline(
        "Exporter scraped",
        grid(18, 27, 6, 7),
        [
            query(
                'max by (job, instance) (up{instance=~"$instance"} and on (job, instance) '
                "last_over_time(backup_exporter_build_info[1d]))",
                legend="{{instance}}",
            )
        ],
        description="Prometheus' `up` for every exporter seen in the last day: down means no fresh data at all.",
        mappings=up_mappings,
        steps=up_steps,
    )
    variables = [
        *vendor_target_variables("backup_target_up"),
        query_variable("instance", "Exporter", "label_values(backup_exporter_build_info, instance)"),
    ]
    return dashboard(
        UID_HEALTH,
        "Backup exporter health",
        "Is the exporter collecting? Targets up, collection durations and errors, vendor API requests, process.",
        variables,
        [*stats, target_up, last_success, duration, errors, requests, instances, memory, cpu, scrape, exporter_up],
        time_from="now-6h",
    )


def build() -> dict[str, Json]:
    """File name → dashboard."""
    return {
        "backup-overview.json": overview(),
        "backup-job-detail.json": job_detail(),
        "backup-capacity.json": capacity(),
        "backup-exporter-health.json": exporter_health(),
    }


def render(dashboard_json: Json) -> str:
    return json.dumps(dashboard_json, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed dashboard is not up to date")
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR, help="directory of the dashboards")
    args = parser.parse_args(argv)
    stale = []
    for name, content in build().items():
        path: Path = args.out / name
        text = render(content)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date (run python -m tools.build_dashboards):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
