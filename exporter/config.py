"""Configuration: YAML -> validated, frozen dataclasses (SPEC section 4).

`load_config` reads the file and returns a `Config`, or raises `ConfigError`
listing every problem found, each with its key path
(`targets[2].url: not a URL ...`), so one `--check-config` run shows them all.

Strict on purpose, because a silently ignored key is a backup nobody watches:
unknown keys, duplicate keys and wrong types are errors. `${VAR}` in any string
value expands from the environment after YAML parsing (expanded text needs no
YAML quoting); `$${` is a literal `${`. `password` and every vendor secret may
be given as `<key>_file`, read relative to the config file's directory. Secret
values never appear in an error message, a repr or `describe()`.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import difflib
import hashlib
import ipaddress
import json
import os
import re
import ssl
import stat
import typing
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from exporter.model import JobKey
from exporter.timeutil import parse_duration

if TYPE_CHECKING:
    from exporter.vendors.base import VendorSpec


class Secret:
    """A secret value that cannot leak through str(), repr() or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('<redacted>')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class TlsConfig:
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    # SHA-256 of the CA bundle as loaded: a reload after the file was
    # replaced at the same path (a renewed CA) makes the target differ, so
    # its collector restarts and trusts the new bundle.
    ca_digest: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class GlobalConfig:
    interval: timedelta = timedelta(minutes=5)
    timeout: timedelta = timedelta(minutes=2)
    lookback: timedelta = timedelta(days=7)
    max_concurrency: int = 8
    rpo: timedelta = timedelta(hours=26)
    job_retention: timedelta = timedelta(days=30)


@dataclass(frozen=True)
class TargetConfig:
    name: str
    vendor: str
    url: str
    username: str | None = None
    password: Secret | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    tls: TlsConfig = TlsConfig()
    interval: timedelta = timedelta(minutes=5)
    timeout: timedelta = timedelta(minutes=2)
    lookback: timedelta = timedelta(days=7)
    rpo: timedelta = timedelta(hours=26)
    # Vendor-specific keys, validated against the vendor's VendorSpec.options;
    # secret ones (VendorSpec.secrets) hold Secret values.
    options: Mapping[str, Any] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        """Every secret value of this target, for redaction: raw, and in the
        forms that go over the wire: base64 (HTTP Basic, Commvault's login) and
        URL encoding (form bodies such as AvePoint's token request)."""
        values = [self.password.reveal()] if self.password else []
        values += [v.reveal() for v in self.options.values() if isinstance(v, Secret)]
        encoded = [base64.b64encode(v.encode()).decode() for v in values if v]
        if self.password and self.username:
            basic = f"{self.username}:{self.password.reveal()}".encode()
            encoded.append(base64.b64encode(basic).decode())
        for value in values:
            encoded += [form for form in dict.fromkeys((quote_plus(value), quote(value, safe=""))) if form != value]
        return [v for v in (*values, *encoded) if v]


@dataclass(frozen=True)
class RpoOverride:
    # Label name -> fully anchored regex. Keys: target, vendor, job_name,
    # job_type, or any static label of the target.
    match: Mapping[str, re.Pattern[str]]
    rpo: timedelta


@dataclass(frozen=True)
class Config:
    global_: GlobalConfig = GlobalConfig()
    targets: tuple[TargetConfig, ...] = ()
    rpo_overrides: tuple[RpoOverride, ...] = ()
    source: str = "<none>"

    def rpo_for(self, target: TargetConfig, job: JobKey) -> timedelta:
        """The first matching override, else the target's rpo."""
        labels = {
            **target.labels,
            "target": target.name,
            "vendor": target.vendor,
            "job_name": job.job_name,
            "job_type": job.job_type,
        }
        for override in self.rpo_overrides:
            if all(name in labels and pattern.fullmatch(labels[name]) for name, pattern in override.match.items()):
                return override.rpo
        return target.rpo

    def secrets(self) -> list[str]:
        return [s for t in self.targets for s in t.secrets()]

    def shard(self, index: int, count: int) -> Config:
        """The targets this replica collects out of `count` (SPEC 8).

        A target's shard is a stable hash of its name (not Python's hash(),
        which differs per process), so every replica agrees without talking
        to the others and a target moves only when `count` changes.
        """
        if count == 1:
            return self
        targets = tuple(t for t in self.targets if shard_of(t.name, count) == index)
        return dataclasses.replace(self, targets=targets)


def shard_of(name: str, count: int) -> int:
    """The shard (0..count-1) a target name belongs to."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


class ConfigError(Exception):
    """Carries (location, message) pairs: `targets[2].url: not a URL`."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}" for loc, msg in problems]
        super().__init__("\n".join(lines))


# --- Loading ----------------------------------------------------------------

RESERVED_LABELS: Final = frozenset(
    {
        # Set by the exporter on its own series.
        "target",
        "vendor",
        "job_name",
        "job_type",
        "status",
        "reason",
        "state",
        "snapshot_type",
        "repository",
        "code",
        "le",
        "version",
        # Owned by Prometheus.
        "job",
        "instance",
    }
)
# What an rpo_overrides match may name besides a target's static labels (Config.rpo_for).
MATCH_LABELS: Final = ("target", "vendor", "job_name", "job_type")

_TOP_KEYS: Final = ("global", "targets", "rpo_overrides")
_GLOBAL_KEYS: Final = ("interval", "timeout", "lookback", "max_concurrency", "rpo", "job_retention")
_TARGET_KEYS: Final = (
    "name",
    "vendor",
    "url",
    "username",
    "password",
    "password_file",
    "labels",
    "tls",
    "interval",
    "timeout",
    "lookback",
    "rpo",
)
_TLS_KEYS: Final = ("ca_file", "insecure_skip_verify")
_OVERRIDE_KEYS: Final = ("match", "rpo")
# Target keys a vendor's VendorSpec cannot redefine as options or require itself.
_CORE_KEYS: Final = ("name", "vendor", "url")

_TARGET_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_VAR_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# `$${` is an escaped literal `${`; `${` without its `}` is caught as unterminated.
_REFERENCE: Final = re.compile(r"\$\$\{|\$\{(?P<name>[^}]*)(?P<close>\}?)")
_DURATION_HINT: Final = "use e.g. 90s, 5m, 26h, 7d or P1M"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"

# A value whose ${VAR} expansion failed: already reported, so checked no further.
_INVALID: Final[Any] = object()

Problem = tuple[str, str]


def load_config(
    path: str | Path,
    *,
    environ: Mapping[str, str] | None = None,
    vendors: Mapping[str, VendorSpec] | None = None,
) -> Config:
    """Read and validate the config file; raise ConfigError listing every problem."""
    source = str(path)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read config file: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [("", f"not UTF-8 text (invalid byte at offset {exc.start})")]) from None
    # absolute(), not resolve(): relative paths are meant relative to where the
    # operator put the file, even when that is a symlink (Kubernetes ConfigMaps).
    return parse_config(text, source, environ=environ, vendors=vendors, base_dir=file.absolute().parent)


def parse_config(
    text: str,
    source: str,
    *,
    environ: Mapping[str, str] | None = None,
    vendors: Mapping[str, VendorSpec] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Validate config text; `source` names it in messages, `base_dir` anchors relative paths
    (default: the working directory)."""
    try:
        data, duplicates = _parse_yaml(text)
    except yaml.YAMLError as exc:
        # `from None`: the YAML exception's text quotes the offending line,
        # which may hold a secret; a logged traceback must not show it.
        raise ConfigError(source, [_yaml_problem(exc)]) from None
    ctx = _Context(environ=os.environ if environ is None else environ, base_dir=base_dir, problems=duplicates)
    config = _build_config(ctx, data, source, _registered_vendors() if vendors is None else vendors)
    if ctx.problems or config is None:
        raise ConfigError(source, ctx.problems)
    return config


def warn_world_readable(path: str | Path, *, vendors: Mapping[str, VendorSpec] | None = None) -> str | None:
    """A warning if the file is readable by other users and holds secrets inline
    (not through <key>_file or ${VAR}); None otherwise, or if it cannot be read."""
    try:
        mode = Path(path).stat().st_mode
        if not mode & stat.S_IROTH:
            return None
        data, _ = _parse_yaml(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # load_config reports these
    inline = _inline_secrets(data, _registered_vendors() if vendors is None else vendors)
    if not inline:
        return None
    return (
        f"{path} is readable by other users (mode {stat.S_IMODE(mode):04o}) and holds secrets inline "
        f"at {', '.join(inline)}: remove read access for others (chmod o-r) or move them to <key>_file or ${{VAR}}"
    )


def security_warnings(config: Config) -> list[tuple[str, str]]:
    """(target name, warning) for each target whose settings expose its traffic,
    credentials included: certificate verification off, or plain HTTP to
    another machine. Valid settings, but nobody should have them unknowingly."""
    warnings = []
    for target in config.targets:
        parts = urlsplit(target.url)
        if target.tls.insecure_skip_verify:
            warnings.append(
                (
                    target.name,
                    f"target {target.name}: TLS certificate verification is OFF (tls.insecure_skip_verify: true): "
                    f"anyone on the way to {parts.hostname} can pose as it and read the credentials; "
                    "trust its certificate with tls.ca_file instead",
                )
            )
        if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            warnings.append(
                (
                    target.name,
                    f"target {target.name}: url is plain http:// to {parts.hostname}: credentials and data "
                    "cross the network unencrypted; use https://",
                )
            )
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _registered_vendors() -> Mapping[str, VendorSpec]:
    # Imported here, not at the top: vendor modules import this module.
    from exporter.vendors import VENDORS

    return VENDORS


# --- YAML -------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that also reports duplicate keys, which PyYAML silently
    resolves to the last value: exactly the mistake an operator cannot see."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[Problem] = []

    def construct_document(self, node: Node) -> Any:
        # The node tree still knows lines and key order; the built dicts do not.
        self.duplicates += _duplicate_keys(node, "", set(), set())
        return super().construct_document(node)


def _parse_yaml(text: str) -> tuple[Any, list[Problem]]:
    """The document and its duplicate-key problems; raises yaml.YAMLError on bad syntax."""
    loader = _StrictLoader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    finally:
        loader.dispose()


def _duplicate_keys(node: Node, location: str, ancestors: set[int], visited: set[int]) -> list[Problem]:
    if id(node) in ancestors:
        # Would make every later walk over the data endless.
        raise yaml.constructor.ConstructorError(
            None, None, "recursive alias (an anchor used inside itself)", node.start_mark
        )
    if id(node) in visited:  # an alias: its node was checked where its anchor is
        return []
    visited.add(id(node))
    children: list[tuple[str, Node]] = []
    problems: list[Problem] = []
    if isinstance(node, SequenceNode):
        children = [(f"{location}[{i}]", child) for i, child in enumerate(node.value)]
    elif isinstance(node, MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                # `<<: *defaults` may be overridden by explicit keys: that is its point.
                children.append((location, value_node))
                continue
            key_location = _join(location, key_node.value)
            line = key_node.start_mark.line + 1
            identity = (key_node.tag, key_node.value)  # `1` and `"1"` are different keys
            if identity in first_line:
                problems.append((key_location, f"duplicate key on line {line} (first on line {first_line[identity]})"))
            else:
                first_line[identity] = line
            children.append((key_location, value_node))
    ancestors.add(id(node))
    for child_location, child in children:
        problems += _duplicate_keys(child, child_location, ancestors, visited)
    ancestors.discard(id(node))
    return problems


def _yaml_problem(exc: yaml.YAMLError) -> Problem:
    """Position and problem only: str(exc) quotes the offending line, maybe a secret."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        message = f"{exc.context}: {exc.problem}" if exc.context else str(exc.problem)
        return f"line {mark.line + 1}, column {mark.column + 1}", f"invalid YAML: {message}"
    if isinstance(exc, yaml.reader.ReaderError):
        return "", f"invalid YAML: {exc.reason} (character #x{exc.character:04x} at offset {exc.position})"
    return "", f"invalid YAML ({type(exc).__name__})"


# --- Validation helpers -----------------------------------------------------


@dataclass
class _Context:
    environ: Mapping[str, str]
    base_dir: Path | None
    problems: list[Problem]

    def error(self, location: str, message: str) -> None:
        self.problems.append((location, message))

    def expand(self, value: Any, location: str) -> Any:
        """`value` with ${VAR} expanded in every string inside it (never in keys)."""
        if isinstance(value, str):
            return self._expand_text(value, location)
        if isinstance(value, list):
            return [self.expand(item, f"{location}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, dict):
            return {key: self.expand(item, _join(location, key)) for key, item in value.items()}
        return value

    def _expand_text(self, text: str, location: str) -> str:
        # Messages name the variable, never the text around it nor the result:
        # either may be a secret.
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match.group("name")
            if not match.group("close"):
                self.error(location, "unterminated ${ (write $${ for a literal ${)")
            elif not _VAR_NAME.fullmatch(name):
                self.error(location, "invalid variable reference (expected ${NAME}; write $${ for a literal ${)")
            elif name not in self.environ:
                self.error(location, f"environment variable {name} is not set")
            else:
                return self.environ[name]
            return ""

        return _REFERENCE.sub(replace, text)

    def resolve(self, path: str) -> Path:
        """A path from the config, relative ones taken from the config file's directory."""
        result = Path(path)
        if self.base_dir is None or result.is_absolute():
            return result
        return self.base_dir / result


class _Section:
    """One mapping of the config, read key by key, each read reporting its own problems."""

    def __init__(self, ctx: _Context, data: dict[Any, Any], location: str) -> None:
        self.ctx = ctx
        self.data = data
        self.location = location

    def loc(self, key: object) -> str:
        return _join(self.location, key)

    def error(self, key: object, message: str) -> None:
        self.ctx.error(self.loc(key), message)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def check_keys(self, allowed: Collection[str]) -> None:
        for key in self.data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.8)
                self.error(key, f"unknown key (did you mean {close[0]}?)" if close else "unknown key")

    def value(self, key: str) -> Any:
        """The value with ${VAR} expanded; _INVALID if expansion failed (already reported)."""
        before = len(self.ctx.problems)
        value = self.ctx.expand(self.data.get(key), self.loc(key))
        return _INVALID if len(self.ctx.problems) > before else value

    def present(self, key: str, *, required: bool = False) -> Any:
        """The expanded value; None if absent or null (reported when required) or invalid."""
        if key not in self.data:
            if required:
                self.ctx.error(self.location, f"missing required key '{key}'")
            return None
        if self.data[key] is None:
            if required:
                self.error(key, "must not be empty")
            return None
        value = self.value(key)
        return None if value is _INVALID else value

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self.present(key, required=required)
        if value is None:
            return None
        if not isinstance(value, str):
            self.error(key, _expected("a string", value))
            return None
        if required and not value:
            self.error(key, "must not be empty")
            return None
        return value

    def boolean(self, key: str) -> bool | None:
        value = self.present(key)
        if value is None or isinstance(value, bool):
            return value
        self.error(key, _expected("a boolean (true or false)", value))
        return None

    def integer(self, key: str, *, minimum: int) -> int | None:
        value = self.present(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, _expected("an integer", value))
            return None
        if value < minimum:
            self.error(key, f"must be at least {minimum}, got {value}")
            return None
        return value

    def duration(self, key: str, *, required: bool = False) -> timedelta | None:
        value = self.present(key, required=required)
        if value is None:
            return None
        # Bare numbers are refused: seconds or minutes is anyone's guess.
        result = _parse_duration(value) if isinstance(value, str) else None
        if result is None:
            self.error(key, f"not a duration: {value!r} ({_DURATION_HINT})")
            return None
        if result <= timedelta(0):
            self.error(key, f"must be greater than zero, got {value!r}")
            return None
        return result

    def sub(self, key: str, *, required: bool = False) -> _Section | None:
        """A nested mapping, unexpanded: its own reads expand each value exactly once."""
        value = self.present_raw(key, required=required)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.error(key, _expected("a mapping", value))
            return None
        return _Section(self.ctx, value, self.loc(key))

    def items(self, key: str, *, required: bool = False) -> list[_Section]:
        """A list of mappings, each as a section."""
        value = self.present_raw(key, required=required)
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(key, _expected("a list", value))
            return []
        sections = []
        for i, item in enumerate(value):
            location = f"{self.loc(key)}[{i}]"
            if isinstance(item, dict):
                sections.append(_Section(self.ctx, item, location))
            else:
                self.ctx.error(location, _expected("a mapping", item))
        return sections

    def present_raw(self, key: str, *, required: bool) -> Any:
        if self.data.get(key) is None:
            if required:
                self.ctx.error(self.location, f"missing required key '{key}'")
            return None
        return self.data[key]


def _join(location: str, key: object) -> str:
    return f"{location}.{key}" if location else str(key)


def _parse_duration(text: str) -> timedelta | None:
    try:
        return parse_duration(text)
    except (ValueError, OverflowError):
        return None


_KINDS: Final[tuple[tuple[type, str], ...]] = (
    (bool, "a boolean"),  # before int: bool is an int subclass
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "a mapping"),
    (date, "a date"),  # YAML reads 2024-01-01 as a date; covers datetime too
)


def _kind(value: object) -> str:
    """What YAML made of a value, for messages; never the value itself (it may be a secret)."""
    if value is None:
        return "null"
    for kind, name in _KINDS:
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _expected(expected: str, value: object) -> str:
    message = f"expected {expected}, got {_kind(value)}"
    if expected == "a string" and isinstance(value, int | float | date):
        # `name: 123`, `tenant: no` or `day: 2024-01-01` are strings only when quoted.
        message += " (quote it)"
    return message


# --- Schema -----------------------------------------------------------------


def _build_config(ctx: _Context, data: Any, source: str, vendors: Mapping[str, VendorSpec]) -> Config | None:
    if data is None:
        ctx.error("", "the file is empty (expected a mapping with a 'targets' list)")
        return None
    if not isinstance(data, dict):
        ctx.error("", f"expected a mapping at the top level, got {_kind(data)}")
        return None
    top = _Section(ctx, data, "")
    top.check_keys(_TOP_KEYS)
    global_, explicit_timeout = _build_global(top)
    targets, label_names = _build_targets(top, global_, explicit_timeout, vendors)
    overrides = [_build_override(section, label_names) for section in top.items("rpo_overrides")]
    return Config(
        global_=global_,
        targets=tuple(t for t in targets if t is not None),
        rpo_overrides=tuple(o for o in overrides if o is not None),
        source=source,
    )


def _build_global(top: _Section) -> tuple[GlobalConfig, bool]:
    """The global section with defaults filled in, and whether its timeout was set."""
    section = top.sub("global")
    if section is None:
        return GlobalConfig(), False
    section.check_keys(_GLOBAL_KEYS)
    changes: dict[str, Any] = {}
    for key in ("interval", "timeout", "lookback", "rpo", "job_retention"):
        value = section.duration(key)
        if value is not None:
            changes[key] = value
    max_concurrency = section.integer("max_concurrency", minimum=1)
    if max_concurrency is not None:
        changes["max_concurrency"] = max_concurrency
    result = replace(GlobalConfig(), **changes)
    explicit_timeout = "timeout" in changes
    if not explicit_timeout:
        # As Prometheus does with scrape_timeout: an unset timeout never exceeds the interval.
        result = replace(result, timeout=min(result.timeout, result.interval))
    elif result.timeout > result.interval:
        section.error(
            "timeout",
            f"must not exceed global.interval ({_format_duration(result.timeout)} > "
            f"{_format_duration(result.interval)})",
        )
    return result, explicit_timeout


@dataclass
class _Seen:
    """What the targets read so far tell the checks that follow."""

    names: dict[str, str] = field(default_factory=dict)  # target name -> its location
    label_names: set[str] = field(default_factory=set)


def _build_targets(
    top: _Section, global_: GlobalConfig, explicit_timeout: bool, vendors: Mapping[str, VendorSpec]
) -> tuple[list[TargetConfig | None], set[str]]:
    seen = _Seen()
    targets = [
        _build_target(section, global_, explicit_timeout, vendors, seen)
        for section in top.items("targets", required=True)
    ]
    return targets, seen.label_names


def _build_target(
    section: _Section,
    global_: GlobalConfig,
    explicit_timeout: bool,
    vendors: Mapping[str, VendorSpec],
    seen: _Seen,
) -> TargetConfig | None:
    name = _target_name(section, seen)
    spec = _vendor(section, vendors)
    if spec is not None:
        # Without a known vendor its own keys cannot be told from typos: only
        # the vendor is reported then.
        section.check_keys(_allowed_target_keys(spec))
    url = _url(section)
    username = section.string("username")
    password = _secret(section, "password")
    labels = _labels(section, spec)
    seen.label_names.update(labels)
    tls = _tls(section)
    timing = _target_timing(section, global_, explicit_timeout)
    options = _vendor_options(section, spec) if spec is not None else {}
    if name is None or spec is None or url is None:
        return None
    target = TargetConfig(
        name=name,
        vendor=spec.name,
        url=url,
        username=username,
        password=password,
        labels=labels,
        tls=tls,
        options=options,
        **timing,
    )
    if spec.validate is not None:
        for key, message in spec.validate(target):
            section.error(key, message)
    return target


def _target_name(section: _Section, seen: _Seen) -> str | None:
    name = section.string("name", required=True)
    if name is None:
        return None
    if not _TARGET_NAME.fullmatch(name):
        section.error(
            "name",
            f"invalid target name {name!r} (use letters, digits, '_', '.', ':' and '-', "
            "starting with a letter or digit)",
        )
        return None
    first = seen.names.setdefault(name, section.location)
    if first != section.location:
        section.error("name", f"duplicate target name {name!r} (also {first})")
        return None
    return name


def _vendor(section: _Section, vendors: Mapping[str, VendorSpec]) -> VendorSpec | None:
    name = section.string("vendor", required=True)
    if name is None:
        return None
    spec = vendors.get(name)
    if spec is None:
        section.error("vendor", f"unknown vendor {name!r} (one of: {', '.join(sorted(vendors))})")
    return spec


def _allowed_target_keys(spec: VendorSpec) -> set[str]:
    common = set(_TARGET_KEYS) if spec.credentials else set(_TARGET_KEYS) - {"username", "password", "password_file"}
    return {*common, *spec.options, *spec.secrets, *(f"{key}_file" for key in spec.secrets)}


def _url(section: _Section) -> str | None:
    url = section.string("url", required=True)
    if url is None:
        return None
    # Never quote the URL back: it may carry credentials.
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        valid = False
    if not valid:
        section.error("url", "not a URL (expected http:// or https://)")
        return None
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and error messages; the
        # secret-handling keys exist to avoid exactly that.
        section.error("url", "credentials in the URL are not allowed (use username and password or password_file)")
        return None
    return url


def _secret(section: _Section, key: str) -> Secret | None:
    """`key` inline (or ${VAR}) or `<key>_file`, never both; messages never hold the value."""
    file_key = f"{key}_file"
    if section.has(key) and section.has(file_key):
        section.ctx.error(section.location, f"give either {key} or {file_key}, not both")
        return None
    if section.has(file_key):
        return _read_secret_file(section, file_key)
    value = section.string(key)
    if value is None:
        return None
    if not value:
        section.error(key, "must not be empty")
        return None
    return Secret(value)


def _read_secret_file(section: _Section, file_key: str) -> Secret | None:
    path_text = section.string(file_key, required=True)
    if path_text is None:
        return None
    path = section.ctx.resolve(path_text)
    try:
        # Bytes, then decode: read_text() would translate a \r inside the secret.
        content = path.read_bytes().decode("utf-8")
    except OSError as exc:
        section.error(file_key, f"cannot read {path}: {exc.strerror or type(exc).__name__}")
        return None
    except UnicodeDecodeError:
        section.error(file_key, f"{path} is not UTF-8 text")
        return None
    # Editors and `echo` add one final newline (\r\n on Windows); any other
    # whitespace is part of the secret.
    if content.endswith("\n"):
        content = content.removesuffix("\n").removesuffix("\r")
    if not content:
        section.error(file_key, f"{path} is empty")
        return None
    return Secret(content)


def _labels(target: _Section, spec: VendorSpec | None) -> dict[str, str]:
    section = target.sub("labels")
    if section is None:
        return {}
    labels: dict[str, str] = {}
    for name in section.data:
        if not isinstance(name, str):
            section.error(name, f"label name must be a string, got {_kind(name)} (quote it)")
            continue
        problem = _label_name_problem(name)
        if not problem and spec is not None and name in spec.info_labels:
            problem = f"reserved label name (set by {spec.name} on backup_job_info)"
        if problem:
            section.error(name, problem)
            continue
        value = section.string(name, required=True)
        if value is not None:
            labels[name] = value
    return labels


def _label_name_problem(name: str) -> str | None:
    if not _LABEL_NAME.fullmatch(name):
        return "invalid label name (must match [a-zA-Z_][a-zA-Z0-9_]*)"
    if name.startswith("__"):
        return "label names starting with __ are reserved for Prometheus"
    if name in RESERVED_LABELS:
        return "reserved label name (set by the exporter or by Prometheus)"
    return None


def _tls(target: _Section) -> TlsConfig:
    section = target.sub("tls")
    if section is None:
        return TlsConfig()
    section.check_keys(_TLS_KEYS)
    ca_file = _ca_file(section)
    insecure = bool(section.boolean("insecure_skip_verify"))
    if insecure and section.has("ca_file"):
        # Verification off makes ca_file do nothing: one of them is a mistake.
        section.ctx.error(section.location, "give either ca_file or insecure_skip_verify: true, not both")
    return TlsConfig(ca_file=ca_file, insecure_skip_verify=insecure, ca_digest=_digest(ca_file))


def _digest(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        # Just loaded by _ca_file; gone since: the poller's load reports it.
        return None


def _ca_file(section: _Section) -> str | None:
    """The path of a CA bundle that loads as the poller will load it; messages never quote its content."""
    text = section.string("ca_file")
    if text is None:
        return None
    if not text:
        section.error("ca_file", "must not be empty")
        return None
    path = section.ctx.resolve(text)
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:
        # Found at load, not at the first poll: a target that cannot verify its vendor is a config error.
        section.error(
            "ca_file",
            f"{path} holds no valid PEM certificate (expected '-----BEGIN CERTIFICATE-----' blocks; "
            "convert a DER file with: openssl x509 -inform der -in FILE -out FILE.pem)",
        )
        return None
    except OSError as exc:
        section.error("ca_file", f"cannot read {path}: {exc.strerror or type(exc).__name__}")
        return None
    return str(path)


def _target_timing(section: _Section, global_: GlobalConfig, explicit_global_timeout: bool) -> dict[str, timedelta]:
    """Effective interval, timeout, lookback and rpo: the target's own, else global's."""
    own = {key: section.duration(key) for key in ("interval", "timeout", "lookback", "rpo")}
    interval = own["interval"] or global_.interval
    timeout = own["timeout"] or global_.timeout
    interval_from = section.loc("interval") if own["interval"] else "global.interval"
    if own["timeout"] is not None and timeout > interval:
        section.error(
            "timeout",
            f"must not exceed {interval_from} ({_format_duration(timeout)} > {_format_duration(interval)})",
        )
    elif own["timeout"] is None and timeout > interval:
        # Only this target's own interval is its mistake; global's is reported once, in _build_global.
        if explicit_global_timeout and own["interval"] is not None:
            section.error(
                "interval",
                f"must not be shorter than global.timeout ({_format_duration(interval)} < "
                f"{_format_duration(timeout)}); set this target's timeout",
            )
        # An unset timeout follows the interval down, as in _build_global.
        timeout = interval
    return {
        "interval": interval,
        "timeout": timeout,
        "lookback": own["lookback"] or global_.lookback,
        "rpo": own["rpo"] or global_.rpo,
    }


def _vendor_options(section: _Section, spec: VendorSpec) -> dict[str, Any]:
    """The vendor's own keys, type-checked, with its defaults; secrets as Secret."""
    options: dict[str, Any] = {}
    for key in dict.fromkeys([*spec.options, *spec.secrets]):
        if key in _TARGET_KEYS:
            continue  # the common keys keep their own meaning and checks
        if key in spec.secrets:
            value: Any = _secret(section, key)
        elif section.has(key):
            value = _typed_option(section, key, spec.options[key])
            allowed = spec.choices.get(key)
            if value is not None and allowed is not None and value not in allowed:
                section.error(key, f"must be one of {', '.join(allowed)}, got {value!r}")
                value = None
        else:
            value = copy.deepcopy(spec.defaults.get(key))  # never share a mutable default
        if value is not None:
            options[key] = value
    secret_keys = {"password", *spec.secrets}
    for key in spec.required:
        given = section.has(key) or (key in secret_keys and section.has(f"{key}_file"))
        if key not in _CORE_KEYS and not given:
            section.ctx.error(section.location, f"missing required key '{key}' (required by vendor {spec.name})")
    return options


def _typed_option(section: _Section, key: str, expected: type | tuple[type, ...]) -> Any:
    value = section.present(key)
    if value is None:
        return None
    types = expected if isinstance(expected, tuple) else (expected,)
    for kind in types:
        if _is_instance(value, kind):
            return _check_items(section, key, value, kind)
    section.error(key, _expected(" or ".join(_type_name(kind) for kind in types), value))
    return None


def _is_instance(value: object, kind: Any) -> bool:
    kind = typing.get_origin(kind) or kind  # list[str] -> list
    if isinstance(value, bool):
        return kind is bool  # YAML `yes` is not the number 1
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _check_items(section: _Section, key: str, value: Any, kind: Any) -> Any:
    """For a `list[X]` option, each item must be an X; other types need nothing more."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) is not list or not args:
        return value
    bad = [i for i, item in enumerate(value) if not _is_instance(item, args[0])]
    for i in bad:
        section.ctx.error(f"{section.loc(key)}[{i}]", _expected(_type_name(args[0]), value[i]))
    return None if bad else value


def _type_name(kind: Any) -> str:
    names = {**dict(_KINDS), bool: "a boolean (true or false)"}
    return names.get(typing.get_origin(kind) or kind, getattr(kind, "__name__", str(kind)))


def _build_override(section: _Section, label_names: Iterable[str]) -> RpoOverride | None:
    section.check_keys(_OVERRIDE_KEYS)
    match = _override_match(section, sorted({*MATCH_LABELS, *label_names}))
    rpo = section.duration("rpo", required=True)
    if match is None or rpo is None:
        return None
    return RpoOverride(match=match, rpo=rpo)


def _override_match(override: _Section, known: list[str]) -> dict[str, re.Pattern[str]] | None:
    section = override.sub("match", required=True)
    if section is None:
        return None
    if not section.data:
        override.error("match", "must not be empty (set global.rpo to change the default of every job)")
        return None
    match: dict[str, re.Pattern[str]] = {}
    ok = True
    for name in section.data:
        # A misspelt label would make the override silently match nothing.
        if name not in known:
            section.error(name, f"unknown label (one of: {', '.join(known)})")
            ok = False
            continue
        pattern = section.string(name, required=True)
        if pattern is None:
            ok = False
            continue
        try:
            # Compiled as written; Config.rpo_for anchors it with fullmatch.
            match[name] = re.compile(pattern)
        except re.error as exc:
            section.error(name, f"invalid regex: {exc}")
            ok = False
    return match if ok else None


# --- Reporting --------------------------------------------------------------


def _inline_secrets(data: Any, vendors: Mapping[str, VendorSpec]) -> list[str]:
    """Locations of secrets written into the file itself."""
    targets = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(targets, list):
        return []
    found = []
    for i, target in enumerate(targets):
        if not isinstance(target, dict):
            continue
        vendor = target.get("vendor")
        spec = vendors.get(vendor) if isinstance(vendor, str) else None
        for key in ("password", *(spec.secrets if spec else ())):
            value = target.get(key)
            if isinstance(value, str) and value and not _has_variable(value):
                found.append(f"targets[{i}].{key}")
    return found


def _has_variable(text: str) -> bool:
    return any(match.group(0) != "$${" for match in _REFERENCE.finditer(text))


def describe_targets(config: Config, vendors: Mapping[str, VendorSpec] | None = None) -> str:
    """What `--check-config` prints: a block per target saying where it goes,
    what it collects (in its vendor's words) and how; secrets show as <secret>."""
    specs = _registered_vendors() if vendors is None else vendors
    if not config.targets:
        return f"{config.source}: no targets configured"
    warnings: dict[str, list[str]] = {}
    for name, warning in security_warnings(config):
        warnings.setdefault(name, []).append(warning)
    blocks = []
    for target in config.targets:
        lines = _target_block(target, specs)
        lines += [f"  {'WARNING:':<13}{warning}" for warning in warnings.get(target.name, [])]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _target_block(target: TargetConfig, vendors: Mapping[str, VendorSpec]) -> list[str]:
    # The first line keeps the one-line form's `name: vendor=...` start, which
    # operators grep for.
    lines = [f"{target.name}: vendor={target.vendor} url={_without_userinfo(target.url)}"]
    fields = [
        ("collects", _collects(target, vendors)),
        (
            "timing",
            f"interval={_format_duration(target.interval)} timeout={_format_duration(target.timeout)} "
            f"lookback={_format_duration(target.lookback)} rpo={_format_duration(target.rpo)}",
        ),
        ("tls", _tls_summary(target)),
        ("labels", " ".join(f"{k}={_show(v)}" for k, v in sorted(target.labels.items())) or "(none)"),
        ("credentials", _credentials(target)),
        ("options", " ".join(f"{k}={_show(v)}" for k, v in sorted(target.options.items())) or "(none)"),
    ]
    lines += [f"  {name + ':':<13}{value}" for name, value in fields]
    return lines


def _collects(target: TargetConfig, vendors: Mapping[str, VendorSpec]) -> str:
    spec = vendors.get(target.vendor)
    if spec is None or spec.describe is None:
        return "as the vendor module defines (see options)"
    return spec.describe(target.options)


def _tls_summary(target: TargetConfig) -> str:
    if urlsplit(target.url).scheme == "http":
        return "none: plain http://"
    if target.tls.insecure_skip_verify:
        return "insecure_skip_verify=true: the certificate is NOT verified"
    if target.tls.ca_file:
        return f"certificate verified against ca_file={target.tls.ca_file}"
    return "certificate verified against the system's CAs"


def _credentials(target: TargetConfig) -> str:
    shown = []
    if target.username is not None:
        shown.append(f"username={_show(target.username)}")
    if target.password is not None:
        shown.append(f"password={_show(target.password)}")
    return " ".join(shown) or "(see options)"


def _show(value: Any) -> str:
    if isinstance(value, Secret):
        return "<secret>"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _without_userinfo(url: str) -> str:
    # The loader refuses credentials in URLs, but TargetConfig is also built
    # in code (--demo); describe() must not leak them either way.
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _format_duration(value: timedelta) -> str:
    """Prometheus style: 26h -> 1d2h, 90s -> 1m30s."""
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


# --- Reference --------------------------------------------------------------


def config_keys(vendors: Mapping[str, VendorSpec] | None = None) -> dict[str, tuple[str, ...]]:
    """Every key the loader accepts, by section, from the very sets it checks
    against; the README's reference is tested against this (tests/test_docs.py).

    Sections: "" (top level), "global", "targets[]", "targets[].tls",
    "rpo_overrides[]", and "vendor:<name>" for a vendor's own keys (those
    beyond "targets[]"). "targets[]" keys a vendor refuses (username and
    password for OAuth vendors) are under "refused:<name>".
    """
    specs = _registered_vendors() if vendors is None else vendors
    keys: dict[str, tuple[str, ...]] = {
        "": _TOP_KEYS,
        "global": _GLOBAL_KEYS,
        "targets[]": _TARGET_KEYS,
        "targets[].tls": _TLS_KEYS,
        "rpo_overrides[]": _OVERRIDE_KEYS,
    }
    for name, spec in sorted(specs.items()):
        allowed = _allowed_target_keys(spec)
        keys[f"vendor:{name}"] = tuple(sorted(allowed - set(_TARGET_KEYS)))
        keys[f"refused:{name}"] = tuple(key for key in _TARGET_KEYS if key not in allowed)
    return keys


def config_defaults(vendors: Mapping[str, VendorSpec] | None = None) -> dict[str, Any]:
    """The default of every key that has one, by its reference path
    ("global.interval", "targets[].tls.insecure_skip_verify", "vendor:avepoint.scope"),
    taken from the dataclasses and VendorSpecs the loader fills values in from.
    A target's interval, timeout, lookback and rpo default to global's, so they
    are not listed."""
    specs = _registered_vendors() if vendors is None else vendors
    own_keys = [key for key in _TARGET_KEYS if key not in ("interval", "timeout", "lookback", "rpo", "tls")]
    defaults = {
        **_field_defaults("global", GlobalConfig, _GLOBAL_KEYS),
        **_field_defaults("targets[]", TargetConfig, own_keys),
        **_field_defaults("targets[].tls", TlsConfig, _TLS_KEYS),
    }
    for name, spec in sorted(specs.items()):
        defaults |= {f"vendor:{name}.{key}": copy.deepcopy(value) for key, value in spec.defaults.items()}
    return defaults


def _field_defaults(section: str, cls: type, keys: Collection[str]) -> dict[str, Any]:
    """`section.key` -> the dataclass field's default, for the keys that have one."""
    defaults = {}
    for item in dataclasses.fields(cls):
        if item.name not in keys:
            continue
        value = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        if value is not None and value is not dataclasses.MISSING:
            defaults[f"{section}.{item.name}"] = value
    return defaults
