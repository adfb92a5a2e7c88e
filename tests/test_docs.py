"""The README's reference tables and config.yaml.example cannot drift from the code.

Configuration: the keys, defaults and required keys in the README's tables are
compared, both ways, with what exporter/config.py accepts (config_keys(),
config_defaults(), and the loader's own "missing required key" errors), and
config.yaml.example is loaded for real. Metrics: the metric table is compared
with exporter/metrics.py FAMILIES and with the exposition of a real --demo
exporter collecting from all four vendor simulators over loopback.
"""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from exporter.config import ConfigError, config_defaults, config_keys, load_config, parse_config
from exporter.metrics import FAMILIES
from exporter.simulators import SIMULATORS
from exporter.timeutil import parse_duration
from exporter.vendors import VENDORS
from exporter.vendors.base import ERROR_REASONS
from tests import certs
from tests.harness import ExporterProcess, parse_exposition

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLE = ROOT / "config.yaml.example"

# Labels every target/job series has; the README's "extra labels" column lists the rest.
BASE_LABELS = frozenset({"target", "vendor", "job_name", "job_type"})
_CODE = re.compile(r"`([^`]+)`")


# --- README parsing ------------------------------------------------------------


def readme_section(heading: str) -> str:
    """The text of `## heading` up to the next `## `."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def tables(text: str) -> list[list[list[str]]]:
    """Each markdown table of `text` as rows of cells, header and rule left out."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif current:
            found.append(current[2:])
            current = []
    return found


def table_with_header(text: str, first_cell: str, width: int) -> list[list[str]]:
    """The first table whose header starts with `first_cell` and has `width` columns."""
    for match in re.finditer(rf"^\| {re.escape(first_cell)} \|.*$", text, re.M):
        if match.group(0).count("|") == width + 1:
            return tables(text[match.start() :])[0]
    raise AssertionError(f"no table with header '{first_cell}' and {width} columns")


def code(cell: str) -> list[str]:
    return _CODE.findall(cell)


def only_code(cell: str) -> str | None:
    """The cell's value if it is exactly one `code` span, else None (prose)."""
    match = re.fullmatch(r"`([^`]+)`", cell)
    return match.group(1) if match else None


def config_rows() -> dict[str, str]:
    """Reference path -> README default cell, of both configuration tables."""
    section = readme_section("Configuration")
    rows: dict[str, str] = {}
    for key_cell, default, _ in table_with_header(section, "key", 3):
        (path,) = code(key_cell)  # one key per row, so every key has its own default
        assert path not in rows, f"{path} documented twice"
        rows[path] = default
    for vendor, key_cell, default, _ in table_with_header(section, "vendor", 4):
        (key,) = code(key_cell)
        path = f"vendor:{vendor}.{key}"
        assert path not in rows, f"{path} documented twice"
        rows[path] = default
    return rows


def split_path(path: str) -> tuple[str, str]:
    """`targets[].tls.ca_file` -> (`targets[].tls`, `ca_file`); `global.rpo` -> (`global`, `rpo`)."""
    if path.startswith("vendor:"):
        vendor, _, key = path.partition(".")
        return vendor, key
    section, _, key = path.rpartition(".")
    return section, key


def with_containers(keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Adds the keys that hold documented sections: `targets[].tls.x` documents `targets[].tls`."""
    result = set(keys)
    for section, _ in keys:
        while section and not section.startswith("vendor:"):
            parent, _, key = section.rpartition(".")
            result.add((parent, key.removesuffix("[]")))
            section = parent
    return result


# --- Configuration reference ------------------------------------------------------


def test_every_accepted_key_is_documented_and_every_documented_key_accepted() -> None:
    accepted = {
        (section, key) for section, keys in config_keys().items() if not section.startswith("refused:") for key in keys
    }
    documented = with_containers({split_path(path) for path in config_rows()})

    assert sorted(accepted - documented) == [], "accepted by exporter/config.py but not in the README"
    assert sorted(documented - accepted) == [], "in the README but refused by exporter/config.py"


def test_documented_defaults_are_the_codes_defaults() -> None:
    defaults = config_defaults()
    rows = config_rows()
    assert sorted(set(defaults) - set(rows)) == [], "keys with a default the README does not list"
    for path, cell in rows.items():
        token = only_code(cell)
        if token is None:
            # Prose ("required", "discovered", "from `global`", empty): the code
            # must not have a default the README fails to state.
            assert path not in defaults, f"{path}: README says {cell!r}, the code defaults to {defaults[path]!r}"
            continue
        assert path in defaults, f"{path}: README states default {cell}, the code has none"
        expected = defaults[path]
        stated: Any = parse_duration(token) if isinstance(expected, timedelta) else yaml.safe_load(token)
        assert stated == expected, f"{path}: README says {token}, the code's default is {expected!r}"


def minimal_config() -> dict[str, Any]:
    return {
        "targets": [
            {"name": "k", "vendor": "keepit", "url": "https://k.example", "username": "u", "password": "p"},
        ],
        "rpo_overrides": [{"match": {"vendor": "keepit"}, "rpo": "1h"}],
    }


def missing_required(document: dict[str, Any], location: str, key: str) -> bool:
    """Whether the loader calls `key` required when it is left out at `location`."""
    try:
        parse_config(yaml.safe_dump(document), "docs.yml", environ={})
    except ConfigError as exc:
        return (location, f"missing required key '{key}'") in exc.problems
    return False


def test_keys_the_readme_calls_required_are_the_ones_the_loader_requires() -> None:
    assert not missing_required(minimal_config(), "", ""), "the minimal config itself must load"
    rows = config_rows()
    for path, cell in rows.items():
        section, key = split_path(path)
        if section.startswith("vendor:"):
            required = key in VENDORS[section.removeprefix("vendor:")].required
        elif section in ("targets[]", "rpo_overrides[]"):
            document = minimal_config()
            item = document[section.removesuffix("[]")][0]
            item.pop(key, None)
            # Vendors' own requirements (keepit's username) read differently and
            # are stated in prose: only the loader's own required keys match here.
            required = missing_required(document, f"{section.removesuffix('[]')}[0]", key)
        else:
            required = False  # global keys all have defaults
        assert (cell == "required") == required, f"{path}: README says {cell!r}, loader requires it: {required}"


def test_which_vendors_take_username_and_password_is_stated_right() -> None:
    section = readme_section("Configuration")
    match = re.search(r"`username`/`password` are required for (.+?), and not\s+accepted for (.+?) \(", section)
    assert match, "the README's sentence on username/password is gone"

    def names(text: str) -> set[str]:
        return {name.strip() for name in re.split(r",|\band\b", text) if name.strip()}

    refused = {name for name in VENDORS if "username" in config_keys()[f"refused:{name}"]}
    required = {name for name, spec in VENDORS.items() if {"username", "password"} <= set(spec.required)}
    assert names(match.group(1)) == required
    assert names(match.group(2)) == refused


# --- config.yaml.example --------------------------------------------------------------


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory, pki: certs.Pki) -> Path:
    """config.yaml.example with what it refers to: a CA file and one secret file per vendor."""
    directory = tmp_path_factory.mktemp("example")
    shutil.copy(EXAMPLE, directory / "config.yaml")
    shutil.copy(pki.ca, directory / "corp-ca.pem")
    credentials = directory / "credentials"
    credentials.mkdir()
    for vendor in VENDORS:
        (credentials / vendor).write_text(f"{vendor}-secret\n")
    return directory


def example_environ(directory: Path, text: str) -> dict[str, str]:
    """A value for every ${VAR} the example mentions, comments included."""
    environ = {name: f"value-of-{name}" for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)}
    environ["CREDENTIALS_DIRECTORY"] = str(directory / "credentials")
    return environ


def test_example_loads_and_covers_every_vendor(example_dir: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    config = load_config(example_dir / "config.yaml", environ=example_environ(example_dir, text))
    assert {target.vendor for target in config.targets} == set(VENDORS)
    assert config.rpo_overrides, "the example shows rpo_overrides"


COMMENTED_KEY = re.compile(r"^(?P<indent>\s+)# (?P<line>(?P<key>[a-z_]+): \S.*)$")


def target_block(lines: list[str], index: int) -> range:
    """The lines of the target (`  - name: ...`) that line `index` is in."""
    start = max(i for i in range(index + 1) if lines[i].startswith("  - "))
    end = next((i for i in range(index + 1, len(lines)) if not lines[i].startswith("   ")), len(lines))
    return range(start, end)


def uncommented_variants(text: str) -> Iterator[tuple[str, str]]:
    """(key, example text with that one commented-out key line made live).

    A commented-out `key: value` line counts as showing the key only if it
    works: it is uncommented alone (for a secret, its `_file` or inline twin is
    commented out instead, since giving both is an error) and must load."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = COMMENTED_KEY.match(line)
        if not match or not line.startswith("    "):
            continue
        key = match.group("key")
        variant = list(lines)
        variant[i] = match.group("indent") + match.group("line")
        twin = key.removesuffix("_file") if key.endswith("_file") else f"{key}_file"
        for j in target_block(lines, i):
            if re.match(rf"^\s+{twin}:", lines[j]):
                variant[j] = "#" + lines[j]
        yield key, "\n".join(variant) + "\n"


def shown_keys(document: dict[str, Any]) -> set[tuple[str, str]]:
    """(section, key) pairs a parsed config document uses, sections as in config_keys()."""
    shown = {("", key) for key in document}
    shown |= {("global", key) for key in document.get("global") or {}}
    shown |= {("rpo_overrides[]", key) for item in document.get("rpo_overrides") or [] for key in item}
    common = set(config_keys()["targets[]"])
    for target in document["targets"]:
        for key in target:
            shown.add(("targets[]", key) if key in common else (f"vendor:{target['vendor']}", key))
        shown |= {("targets[].tls", key) for key in target.get("tls") or {}}
    return shown


def test_example_shows_every_key_and_its_commented_lines_load(example_dir: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    environ = example_environ(example_dir, text)
    shown = shown_keys(yaml.safe_load(text))
    variants = list(uncommented_variants(text))
    assert len(variants) >= 5, "the example's optional keys are shown as commented-out lines"
    for key, variant in variants:
        try:
            parse_config(variant, f"example with {key} uncommented", environ=environ, base_dir=example_dir)
        except ConfigError as exc:
            pytest.fail(f"uncommenting {key} breaks the example: {exc}")
        shown |= shown_keys(yaml.safe_load(variant))

    accepted = {
        (section, key) for section, keys in config_keys().items() if not section.startswith("refused:") for key in keys
    }
    assert sorted(accepted - shown) == [], "keys config.yaml.example never shows"


# --- Metrics reference --------------------------------------------------------------------


def metric_rows() -> dict[str, tuple[str, set[str]]]:
    """Metric name -> (type, extra labels) from the README's metric table."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for name_cell, kind, labels, _ in table_with_header(readme_section("Metrics"), "metric", 4):
        (name,) = code(name_cell)
        assert name not in rows, f"{name} documented twice"
        rows[name] = (kind, set(code(labels)))
    return rows


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def demo_exposition(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """What a --demo exporter serves once every vendor has been collected."""
    tmp = tmp_path_factory.mktemp("docs-demo")
    process = ExporterProcess(tmp / "absent.yaml", tmp / "data", extra_args=["--demo"])
    await process.start()
    try:
        await process.wait_for(lambda status: status == 200, what="ready", within=60)
        status, body, _ = await process.get("/metrics")
        assert status == 200
        yield body.decode()
    finally:
        await process.stop()


def exposed_families(text: str) -> dict[str, tuple[str, set[str]]]:
    """Family -> (type from its # TYPE line, label names of its samples beyond the base ones)."""
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    static = {name for spec in SIMULATORS.values() for name in spec.demo_target("http://x").get("labels", {})}
    labels: dict[str, set[str]] = defaultdict(set)
    for name, sample_labels, _ in parse_exposition(text):
        family = name
        if name not in types:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert types.get(base) == "histogram", f"sample {name} has no # TYPE line"
            family = base
        labels[family] |= set(sample_labels) - BASE_LABELS - static
    return {family: (kind, labels[family]) for family, kind in types.items()}


@pytest.mark.asyncio(loop_scope="module")
async def test_every_exposed_metric_is_documented_with_its_type_and_labels(demo_exposition: str) -> None:
    exposed = exposed_families(demo_exposition)
    assert {"backup_job_runs_total", "backup_repository_free_bytes", "backup_exporter_targets"} <= set(exposed)
    documented = metric_rows()
    assert sorted(set(exposed) - set(documented)) == [], "served by --demo but missing from the README"
    for name, (kind, labels) in exposed.items():
        assert documented[name][0] == kind, f"{name}: README says {documented[name][0]}, served as {kind}"
        assert documented[name][1] == labels, f"{name}: README lists {documented[name][1]}, served with {labels}"


@pytest.mark.asyncio(loop_scope="module")
async def test_every_documented_metric_exists_in_code_or_exposition(demo_exposition: str) -> None:
    exposed = exposed_families(demo_exposition)
    in_code = {family.name: family.type for family in FAMILIES}
    for name, (kind, _) in metric_rows().items():
        assert name in exposed or name in in_code, f"{name}: documented, but neither served nor in FAMILIES"
        if name in in_code:
            assert in_code[name] == kind, f"{name}: README says {kind}, FAMILIES says {in_code[name]}"


def test_every_family_in_code_is_documented() -> None:
    # Also covers families the demo might stop producing.
    documented = metric_rows()
    assert sorted({family.name for family in FAMILIES} - set(documented)) == []


def test_job_info_labels_are_every_vendors_info_labels() -> None:
    _, labels = metric_rows()["backup_job_info"]
    assert labels == {label for spec in VENDORS.values() for label in spec.info_labels}


@pytest.mark.asyncio(loop_scope="module")
async def test_every_error_reason_is_served_and_explained(demo_exposition: str) -> None:
    served = {
        labels["reason"]
        for name, labels, _ in parse_exposition(demo_exposition)
        if name == "backup_target_collection_errors_total"
    }
    assert served == set(ERROR_REASONS)
    troubleshooting = table_with_header(readme_section("Troubleshooting"), "reason", 3)
    assert sorted(only_code(row[0]) or row[0] for row in troubleshooting) == sorted(ERROR_REASONS)
