"""The Grafana dashboards and provisioning files, checked without a Grafana or a Prometheus.

Whether every query returns data is checked against a real Prometheus in
test_e2e_prometheus.py; here: structure, variables, layout, the rules every
query follows, that the committed JSON is what tools/build_dashboards.py
generates, and that the renderer draws every panel type the dashboards use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools import build_dashboards
from tools.dashboard_queries import (
    BUILTIN_VARIABLES,
    Series,
    TargetResult,
    TimeRange,
    Variable,
    interpolate,
    iter_panels,
    panel_queries,
    parse_duration,
    referenced_variables,
    regex_escape,
    round_interval,
    variable_query,
)

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = ROOT / "grafana" / "dashboards"
PROVISIONING = ROOT / "grafana" / "provisioning"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
IMAGES = ROOT / "docs" / "img"
PATHS = sorted(DASHBOARD_DIR.glob("*.json"))
DASHBOARDS = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in PATHS}
DRAWABLE = {"stat", "timeseries", "table", "bargauge", "state-timeline", "row"}
# Metrics with one series per job, target, snapshot or repository: a query must
# reduce them to their identity, or a job scraped twice would count twice.
IDENTIFIED = re.compile(r"\bbackup_(?:job|snapshot|repository|target)_\w+")
# Aggregations that drop labels (topk and bottomk keep them); the grouping, if any.
AGGREGATION = re.compile(r"\b(?:sum|min|max|avg|count|group)\s*(?:(by|without)\s*\(([^)]*)\))?\s*$")


def strings_blanked(expr: str) -> str:
    """`expr` with the inside of every "..." replaced by x, positions kept."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: '"' + "x" * (len(m.group(0)) - 2) + '"', expr)


def enclosing_prefixes(expr: str, position: int) -> Iterator[str]:
    """For each parenthesis enclosing `position`, innermost first, the text before it."""
    depth = 0
    for i in range(position - 1, -1, -1):
        if expr[i] == ")":
            depth += 1
        elif expr[i] == "(":
            if depth == 0:
                yield expr[:i]
            else:
                depth -= 1


def unreduced_selectors(expr: str) -> list[str]:
    """Identified metrics in `expr` that are not reduced to their identity: the innermost
    aggregation around them must drop `job` (a process scraped by two jobs counts once),
    and it or one around it must drop `instance` (so must sum the per-process counters)."""
    blank = strings_blanked(expr)
    found = []
    for match in IDENTIFIED.finditer(blank):
        reduced, innermost = False, True
        for prefix in enclosing_prefixes(blank, match.start()):
            aggregation = AGGREGATION.search(prefix)
            if not aggregation:
                continue
            labels = {label.strip() for label in (aggregation.group(2) or "").split(",")}
            keeps = labels if aggregation.group(1) == "by" else {"job", "instance"} - labels
            if aggregation.group(1) is None:
                keeps = set()
            if innermost and "job" in keeps:
                break
            innermost = False
            if "instance" not in keeps:
                reduced = True
                break
        if not reduced:
            found.append(match.group(0))
    return found


def all_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [query.expr for query in panel_queries(dashboard)]


def test_the_four_dashboards_are_there():
    assert set(DASHBOARDS) == {
        "backup-overview.json",
        "backup-job-detail.json",
        "backup-capacity.json",
        "backup-exporter-health.json",
    }


def test_committed_json_is_what_the_generator_writes():
    generated = build_dashboards.build()
    assert set(generated) == set(DASHBOARDS)
    for name, content in generated.items():
        committed = (DASHBOARD_DIR / name).read_text(encoding="utf-8")
        assert committed == build_dashboards.render(content), f"{name}: run python -m tools.build_dashboards"


def test_generator_check_mode_notices_a_stale_file(tmp_path):
    assert build_dashboards.main(["--out", str(tmp_path)]) == 0
    assert build_dashboards.main(["--check", "--out", str(tmp_path)]) == 0
    stale = tmp_path / "backup-overview.json"
    stale.write_text(stale.read_text(encoding="utf-8").replace("Failed jobs", "Failed"), encoding="utf-8")
    assert build_dashboards.main(["--check", "--out", str(tmp_path)]) == 1


def test_uids_and_titles_are_unique_and_fixed():
    uids = [d["uid"] for d in DASHBOARDS.values()]
    titles = [d["title"] for d in DASHBOARDS.values()]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)
    for name, dashboard in DASHBOARDS.items():
        assert name == f"{dashboard['uid']}.json"
        assert dashboard["id"] is None  # provisioned dashboards get their id from Grafana
        assert 36 <= dashboard["schemaVersion"] <= 41, name
        assert "backup-exporter" in dashboard["tags"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_and_variable_uses_the_datasource_variable(name):
    dashboard = DASHBOARDS[name]
    variables = dashboard["templating"]["list"]
    datasource = [v for v in variables if v["type"] == "datasource"]
    assert len(datasource) == 1
    assert datasource[0]["name"] == "datasource"
    assert datasource[0]["query"] == "prometheus"
    assert variables[0] is datasource[0], "the data source variable comes first: the others query it"
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for variable in variables:
        if variable["type"] == "query":
            assert variable["datasource"] == expected, variable["name"]
    for panel in iter_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, (panel["title"], target["refId"])


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_referenced_variable_is_defined(name):
    dashboard = DASHBOARDS[name]
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    texts = all_exprs(dashboard)
    texts += [variable_query(v) for v in dashboard["templating"]["list"]]
    texts += [json.dumps(panel.get("fieldConfig", {})) for panel in iter_panels(dashboard)]
    texts += [panel.get("title", "") for panel in iter_panels(dashboard)]
    used = set().union(*(referenced_variables(text) for text in texts))
    assert used - defined - BUILTIN_VARIABLES == set()
    # Each variable only uses the ones defined before it (Grafana resolves them in order).
    seen: set[str] = set()
    for variable in dashboard["templating"]["list"]:
        assert referenced_variables(variable_query(variable)) <= seen, variable["name"]
        seen.add(variable["name"])


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_multi_value_variables_are_matched_as_regexes(name):
    """Grafana escapes multi-value and All values as regexes: `label="$var"` would match nothing."""
    dashboard = DASHBOARDS[name]
    multi = {v["name"] for v in dashboard["templating"]["list"] if v.get("multi") or v.get("includeAll")}
    texts = all_exprs(dashboard) + [variable_query(v) for v in dashboard["templating"]["list"]]
    uses = [m for text in texts for m in re.finditer(r'(\w+)\s*(=~|!~|!=|=)\s*"\$\{?(\w+)', text)]
    assert uses
    for use in uses:
        if use.group(3) in multi:
            assert use.group(2) in ("=~", "!~"), use.group(0)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_variables_are_chained_label_values(name):
    variables = [v for v in DASHBOARDS[name]["templating"]["list"] if v["type"] == "query"]
    assert [v["name"] for v in variables][:2] == ["vendor", "target"]
    for variable in variables:
        assert re.fullmatch(r"label_values\(.+, \w+\)", variable_query(variable)), variable["name"]
        assert variable["definition"] == variable_query(variable)
    assert 'vendor=~"$vendor"' in variable_query(variables[1])


def test_job_detail_variables():
    variables = {v["name"]: v for v in DASHBOARDS["backup-job-detail.json"]["templating"]["list"]}
    assert list(variables) == ["datasource", "vendor", "target", "job", "job_type"]
    assert 'target=~"$target"' in variable_query(variables["job"])
    assert 'job_name=~"$job"' in variable_query(variables["job_type"])
    assert variables["job"]["multi"]
    assert not variables["job"]["includeAll"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_grid_positions_fit_and_do_not_overlap(name):
    panels = list(iter_panels(DASHBOARDS[name]))
    boxes = []
    for panel in panels:
        grid = panel["gridPos"]
        assert min(grid["x"], grid["y"]) >= 0, panel["title"]
        assert min(grid["w"], grid["h"]) > 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        boxes.append((panel["title"], grid))
    for i, (title_a, a) in enumerate(boxes):
        for title_b, b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, f"{title_a} overlaps {title_b}"
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_job_and_target_series_are_reduced_to_their_identity(name):
    for expr in all_exprs(DASHBOARDS[name]):
        assert unreduced_selectors(expr) == [], expr


def test_the_reduction_check_can_fail():
    assert unreduced_selectors("backup_job_last_status == 1") == ["backup_job_last_status"]
    assert unreduced_selectors("sum by (job, target) (backup_target_up)") == ["backup_target_up"]
    assert unreduced_selectors("max without (job) (backup_job_info)") == ["backup_job_info"]
    assert unreduced_selectors('max by (target) (backup_target_up{x="("})') == []
    per_process = "sum({} by ({}target) (rate(backup_target_api_requests_total[1m])))"
    assert unreduced_selectors(per_process.format("max", "instance, ")) == []
    assert unreduced_selectors(per_process.format("max", "job, instance, ")) == ["backup_target_api_requests_total"]
    assert unreduced_selectors("max by (instance, target) (backup_target_up)") == ["backup_target_up"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_no_hard_coded_rpo(name):
    """RPOs come from backup_job_rpo_seconds: no hour-sized literal or window in any query."""
    for expr in all_exprs(DASHBOARDS[name]):
        blank = strings_blanked(expr)
        assert not re.search(r"\[\d+h\]", blank), expr
        numbers = [float(n) for n in re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])", blank)]
        assert all(number < 3600 for number in numbers), expr


def test_rpo_comparisons_use_the_rpo_metric():
    overview = all_exprs(DASHBOARDS["backup-overview.json"])
    past_rpo = [e for e in overview if "> bool" in e and "backup_job_last_success_timestamp_seconds" in e]
    assert past_rpo
    assert all("backup_job_rpo_seconds" in e for e in past_rpo)
    # Jobs that never succeeded count as past their RPO.
    assert all("unless" in e for e in past_rpo)


def test_every_panel_type_can_be_drawn_and_queries_are_prometheus():
    for dashboard in DASHBOARDS.values():
        for panel in iter_panels(dashboard):
            assert panel["type"] in DRAWABLE, panel["title"]
        for query in panel_queries(dashboard):
            assert query.fmt in ("time_series", "table", "heatmap")
            if query.panel_type in ("stat", "table", "bargauge"):
                assert query.instant, (query.panel_title, query.ref_id)
            if query.panel_type in ("timeseries", "state-timeline"):
                assert not query.instant, (query.panel_title, query.ref_id)
            if query.fmt == "table":
                assert query.panel_type == "table"


def test_tables_rename_only_fields_their_queries_produce():
    for dashboard in DASHBOARDS.values():
        for panel in iter_panels(dashboard):
            if panel["type"] != "table":
                continue
            refs = [t["refId"] for t in panel["targets"]]
            values = {"Value"} if len(refs) == 1 else {f"Value #{ref}" for ref in refs}
            organize = next(t for t in panel["transformations"] if t["id"] == "organize")["options"]
            for field in organize["renameByName"]:
                if field.startswith("Value"):
                    assert field in values, (panel["title"], field)
                else:
                    assert all(field in t["expr"] for t in panel["targets"]), (panel["title"], field)
            shown = set(organize["renameByName"].values()) | set(organize["indexByName"])
            for override in panel["fieldConfig"]["overrides"]:
                assert override["matcher"]["options"] in shown, (panel["title"], override["matcher"])


def test_links_go_to_existing_dashboards_with_their_variables():
    uids = {d["uid"]: d for d in DASHBOARDS.values()}
    found = 0
    for dashboard in DASHBOARDS.values():
        assert any(link["type"] == "dashboards" and link["includeVars"] for link in dashboard["links"])
        for panel in iter_panels(dashboard):
            for override in panel.get("fieldConfig", {}).get("overrides", []):
                for prop in override["properties"]:
                    if prop["id"] != "links":
                        continue
                    for link in prop["value"]:
                        found += 1
                        target = re.match(r"/d/([\w-]+)/", link["url"])
                        assert target, link["url"]
                        assert target.group(1) in uids, link["url"]
                        names = {v["name"] for v in uids[target.group(1)]["templating"]["list"]}
                        params = set(re.findall(r"var-(\w+)=", link["url"])) | {"datasource"}
                        assert params == names, link["url"]
    assert found >= 2  # the overview's job table and failure table link to the job detail


def test_datasource_provisioning():
    document = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    [source] = document["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["uid"]
    assert source["isDefault"] is True
    parse_duration(source["jsonData"]["timeInterval"])


def test_dashboard_provisioning_points_at_the_mounted_dashboards():
    document = yaml.safe_load((PROVISIONING / "dashboards" / "backup-exporter.yml").read_text(encoding="utf-8"))
    assert document["apiVersion"] == 1
    [provider] = document["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert path.startswith("/")
    if not COMPOSE.exists():
        pytest.skip("no deploy/docker-compose.yml to check the mounts against")
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    volumes = compose["services"]["grafana"]["volumes"]
    mounts = {}
    for volume in volumes:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[(COMPOSE.parent / source).resolve()] = target
    assert mounts.get(DASHBOARD_DIR.resolve()) == path
    assert mounts.get(PROVISIONING.resolve()) == "/etc/grafana/provisioning"


def test_every_dashboard_has_a_committed_picture():
    from tools.render_dashboards import image_name

    for dashboard in DASHBOARDS.values():
        picture = IMAGES / image_name(dashboard)
        assert picture.exists(), picture
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert picture.stat().st_size < 300 * 1024, picture


# --- the query helpers shared with the end-to-end test and the renderer ------------------------


def test_regex_escape_matches_grafana():
    # "Backup Job 1 (vbr01.lab.local)" is a real Veeam job name of the demo.
    assert regex_escape("Backup Job 1 (vbr01.lab.local)") == r"Backup Job 1 \\(vbr01\\.lab\\.local\\)"
    assert regex_escape("a|b") == r"a\\|b"
    assert regex_escape("plain-name/x") == "plain-name/x"


def test_interpolate_and_intervals():
    values = {"vendor": "(keepit|veeam)", "job": "x"}
    builtins = {"__rate_interval": "4m"}
    text = 'rate(m{vendor=~"$vendor", job_name=~"${job}"}[$__rate_interval])'
    assert interpolate(text, values, builtins) == 'rate(m{vendor=~"(keepit|veeam)", job_name=~"x"}[4m])'
    with pytest.raises(KeyError):
        interpolate("$unknown", values, builtins)
    assert parse_duration("1h30m") == 5400
    with pytest.raises(ValueError, match="duration"):
        parse_duration("5 minutes")
    assert round_interval(4.2) == 5
    assert round_interval(100) == 120


def test_renderer_draws_every_dashboard(tmp_path):
    """Every panel of every dashboard drawn from series shaped like the demo's (no Prometheus here)."""
    from tools.render_dashboards import build_table, format_value, render_dashboard

    now = 1_800_000_000.0
    time_range = TimeRange(now - 3600, now)
    labels = {"vendor": "veeam", "target": "veeam-demo", "job_name": "SQL Backup", "job_type": "backup"}
    for name, dashboard in DASHBOARDS.items():
        data: dict[int, list[TargetResult]] = {}
        for query in panel_queries(dashboard):
            if query.instant:
                points: tuple[tuple[float, float], ...] = ((now, 1.0),)
            else:
                points = tuple((now - 3600 + 60 * i, float(i % 7)) for i in range(61))
            extra = {"le": "60.0"} if query.fmt == "heatmap" else {"status": "success", "reason": "disk full"}
            series = (Series({**labels, **extra}, points),)
            data.setdefault(query.panel_id, []).append(TargetResult(query, query.expr, series, 60.0))
        variables = {"vendor": Variable("vendor", "Vendor", ("veeam",), ("$__all",), ".*")}
        path = tmp_path / f"{name}.png"
        render_dashboard(dashboard, data, variables, time_range, path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert 10_000 < path.stat().st_size < 300 * 1024
    jobs = next(
        p for p in iter_panels(DASHBOARDS["backup-overview.json"]) if p["title"] == "Jobs" and p["type"] == "table"
    )
    results = [
        TargetResult(q, q.expr, (Series(labels, ((now, 4.0 if q.ref_id == "A" else 1.0),)),), None)
        for q in panel_queries({"panels": [jobs]})
    ]
    table = build_table(jobs, results)
    assert table.columns[:6] == ["Vendor", "Target", "Job", "Type", "Last status", "Since last success"]
    assert len(table.rows) == 1
    assert table.rows[0][:5] == ["veeam", "veeam-demo", "SQL Backup", "backup", 4.0]
    assert format_value(93600, "dtdurations", 1) == "1 day, 2 hours"
    assert format_value(1.5 * 1024**3, "bytes") == "1.5 GiB"
    assert format_value(0.4, "percentunit", 0) == "40%"
