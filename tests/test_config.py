"""The config loader: every testdata/config/invalid-*.yml with its exact messages,
then valid configs, secrets handling and the example config."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from exporter.config import (
    Config,
    ConfigError,
    GlobalConfig,
    Secret,
    TargetConfig,
    TlsConfig,
    describe_targets,
    load_config,
    parse_config,
    warn_world_readable,
)
from exporter.model import JobKey
from exporter.vendors import VENDORS as REAL_VENDORS
from exporter.vendors import keepit
from exporter.vendors.base import VendorSpec
from tests.certs import Pki

TESTDATA = Path(__file__).parent / "testdata" / "config"
EXAMPLE = Path(__file__).parents[1] / "config.yaml.example"

ENV_SECRET = "env-s3cret-Tok3n"
INLINE_SECRET = "inline-s3cret"  # the inline password some invalid-*.yml carry
ENVIRON = {"KEEPIT_PASSWORD": ENV_SECRET, "SAME_NAME": "keepit-dk"}

# A fixed map, so that adding a vendor to VENDORS does not change the
# "(one of: ...)" messages; keepit's own spec keeps its option types honest.
VENDORS = {"keepit": keepit.SPEC}
# A vendor with what keepit lacks: secret options, required keys, defaults, list[str].
TOKEN_SPEC = VendorSpec(
    name="tokenvendor",
    client=keepit.KeepitClient,
    options={"client_id": str, "client_secret": str, "scope": str, "jobs": list[str], "page_size": int},
    secrets=("client_secret",),
    required=("client_id", "client_secret"),
    defaults={"scope": "api://default", "jobs": []},
)
# The generic tests below are about the loader, not about keepit's credentials:
# they use keepit's option types without its required keys (tested apart).
LENIENT_KEEPIT = dataclasses.replace(keepit.SPEC, required=())
BOTH_VENDORS = {"keepit": LENIENT_KEEPIT, "tokenvendor": TOKEN_SPEC}


def messages(error: ConfigError) -> list[str]:
    return [f"{location}: {message}" if location else message for location, message in error.problems]


def parse(text: str, *, environ: dict[str, str] | None = None, base_dir: Path | None = None) -> Config:
    return parse_config(text, "test.yml", environ=environ or {}, vendors=BOTH_VENDORS, base_dir=base_dir)


def parse_error(text: str, *, environ: dict[str, str] | None = None, base_dir: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text, environ=environ, base_dir=base_dir)
    return caught.value


def keepit_target(extra: str = "") -> str:
    return "targets:\n  - name: kp\n    vendor: keepit\n    url: https://dk-co.keepit.com\n" + extra


# --- invalid configs ---------------------------------------------------------


def test_keepit_requires_its_api_token_credentials() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(keepit_target(), "test.yml", environ={}, vendors=VENDORS)
    assert messages(caught.value) == [
        "targets[0]: missing required key 'username' (required by vendor keepit)",
        "targets[0]: missing required key 'password' (required by vendor keepit)",
    ]


def test_info_labels_of_the_vendor_are_reserved() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            keepit_target("    username: u\n    password: p\n    labels: {connector_type: x}\n"),
            "test.yml",
            environ={},
            vendors=VENDORS,
        )
    assert messages(caught.value) == [
        "targets[0].labels.connector_type: reserved label name (set by keepit on backup_job_info)"
    ]


INVALID = sorted(TESTDATA.glob("invalid-*.yml"))


def test_invalid_testdata_is_there() -> None:
    assert len(INVALID) >= 30


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_config(path: Path) -> None:
    expected = [
        line.removeprefix("# error: ").replace("{dir}", str(TESTDATA))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("# error: ")
    ]
    assert expected, f"{path.name} has no '# error:' line"
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=ENVIRON, vendors=VENDORS)
    error = caught.value
    assert messages(error) == expected
    assert error.source == str(path)
    assert str(error).splitlines() == [f"{path}: {line}" for line in expected]
    assert ENV_SECRET not in str(error)
    assert INLINE_SECRET not in str(error)
    assert INLINE_SECRET not in repr(error)
    # Nor in a traceback: YAML errors quote the offending line.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yml", environ={}, vendors=VENDORS)
    assert str(caught.value) == f"{tmp_path / 'nope.yml'}: cannot read config file: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path, environ={}, vendors=VENDORS)
    assert messages(caught.value) == ["cannot read config file: Is a directory"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    data = keepit_target("    labels: {city: K\xf8benhavn}\n").encode("latin-1")
    path.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={}, vendors=VENDORS)
    offset = data.index(b"\xf8")
    assert messages(caught.value) == [f"not UTF-8 text (invalid byte at offset {offset})"]


def test_unreadable_secret_file_names_file_not_content(tmp_path: Path) -> None:
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    error = parse_error(keepit_target(f"    password_file: {secret_dir}\n"))
    assert messages(error) == [f"targets[0].password_file: cannot read {secret_dir}: Is a directory"]


def test_empty_secrets_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    error = parse_error(
        "targets:\n"
        "  - {name: a, vendor: keepit, url: 'https://a.example', password: ''}\n"
        "  - {name: b, vendor: keepit, url: 'https://b.example', password: '${EMPTY}'}\n"
        "  - {name: c, vendor: keepit, url: 'https://c.example', password_file: empty}\n",
        environ={"EMPTY": ""},
        base_dir=tmp_path,
    )
    assert messages(error) == [
        "targets[0].password: must not be empty",
        "targets[1].password: must not be empty",
        f"targets[2].password_file: {tmp_path / 'empty'} is empty",
    ]


def test_vendor_spec_rules() -> None:
    error = parse_error(
        "targets:\n"
        "  - name: tv\n"
        "    vendor: tokenvendor\n"
        "    url: https://api.example.com\n"
        "    jobs: [nightly, 7]\n"
        "    page_size: true\n"
        "    client_secret: 123\n"
        "    scope_file: /x\n"
    )
    assert messages(error) == [
        "targets[0].scope_file: unknown key",  # only secrets have a _file form
        "targets[0].client_secret: expected a string, got an integer (quote it)",
        "targets[0].jobs[1]: expected a string, got an integer (quote it)",
        "targets[0].page_size: expected an integer, got a boolean",
        "targets[0]: missing required key 'client_id' (required by vendor tokenvendor)",
    ]


def test_all_problems_reported_with_secret_nearby(tmp_path: Path) -> None:
    """Every kind of failing key next to secrets given inline, by ${VAR} and by file."""
    (tmp_path / "secret").write_text("file-s3cret\n")
    error = parse_error(
        "targets:\n"
        "  - name: tv\n"
        "    vendor: tokenvendor\n"
        "    url: https://api.example.com\n"
        "    username: svc\n"
        "    password: ${PASSWORD}\n"
        "    client_secret_file: secret\n"
        "    client_id: abc\n"
        "    interval: soon\n"
        "    labels: {job: x}\n"
        "  - name: kp\n"
        "    vendor: keepit\n"
        "    url: https://dk-co.keepit.com\n"
        "    password: inline-s3cret\n"
        "    password_file: secret\n"
        "    tls: {insecure_skip_verify: 'yes'}\n",
        environ={"PASSWORD": ENV_SECRET},
        base_dir=tmp_path,
    )
    assert messages(error) == [
        "targets[0].labels.job: reserved label name (set by the exporter or by Prometheus)",
        "targets[0].interval: not a duration: 'soon' (use e.g. 90s, 5m, 26h, 7d or P1M)",
        "targets[1]: give either password or password_file, not both",
        "targets[1].tls.insecure_skip_verify: expected a boolean (true or false), got a string",
    ]
    for secret in (ENV_SECRET, INLINE_SECRET, "file-s3cret"):
        assert secret not in str(error)
        assert secret not in repr(error)


# --- valid configs -----------------------------------------------------------

FULL = """\
global:
  interval: 10m
  timeout: 3m
  lookback: 14d
  max_concurrency: 4
  rpo: 25h
  job_retention: P60D
targets:
  - name: keepit-dk
    vendor: keepit
    url: https://dk-co.keepit.com/
    username: ${USER_NAME}
    password_file: secrets/keepit
    labels: {tenant: acme, region: eu}
    tls: {ca_file: ca.pem, insecure_skip_verify: false}
    interval: 15m
    timeout: 5m
    lookback: 30d
    rpo: 24h
    account: 5t1sbe-s6zsgx-rtutxq
    connectors: [Microsoft 365, sfnbtx-8uyqk2-gxq2pd]
  - name: tv
    vendor: tokenvendor
    url: http://localhost:8080
    client_id: abc
    client_secret: ${CLIENT_SECRET}
    jobs: [nightly]
    page_size: 50
rpo_overrides:
  - match: {target: keepit-dk, job_name: "SQL.*"}
    rpo: 4h
  - match: {tenant: acme}
    rpo: 2d
"""


def test_full_config(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "keepit").write_text("p@ss word\n")
    (tmp_path / "ca.pem").write_bytes(pki.ca.read_bytes())
    path = tmp_path / "config.yml"
    path.write_text(FULL)
    config = load_config(path, environ={"USER_NAME": "svc@acme", "CLIENT_SECRET": "cs"}, vendors=BOTH_VENDORS)

    assert config.source == str(path)
    assert config.global_ == GlobalConfig(
        interval=timedelta(minutes=10),
        timeout=timedelta(minutes=3),
        lookback=timedelta(days=14),
        max_concurrency=4,
        rpo=timedelta(hours=25),
        job_retention=timedelta(days=60),
    )
    assert config.targets[0] == TargetConfig(
        name="keepit-dk",
        vendor="keepit",
        url="https://dk-co.keepit.com/",
        username="svc@acme",
        password=Secret("p@ss word"),
        labels={"tenant": "acme", "region": "eu"},
        tls=TlsConfig(
            ca_file=str(tmp_path / "ca.pem"),
            insecure_skip_verify=False,
            ca_digest=hashlib.sha256((tmp_path / "ca.pem").read_bytes()).hexdigest(),
        ),
        interval=timedelta(minutes=15),
        timeout=timedelta(minutes=5),
        lookback=timedelta(days=30),
        rpo=timedelta(hours=24),
        options={"account": "5t1sbe-s6zsgx-rtutxq", "connectors": ["Microsoft 365", "sfnbtx-8uyqk2-gxq2pd"]},
    )
    token = config.targets[1]
    assert token.options == {
        "client_id": "abc",
        "client_secret": Secret("cs"),
        "scope": "api://default",
        "jobs": ["nightly"],
        "page_size": 50,
    }
    # Unset per-target values are global's.
    assert (token.interval, token.timeout, token.lookback, token.rpo) == (
        timedelta(minutes=10),
        timedelta(minutes=3),
        timedelta(days=14),
        timedelta(hours=25),
    )
    assert [o.rpo for o in config.rpo_overrides] == [timedelta(hours=4), timedelta(days=2)]
    assert config.rpo_overrides[0].match["job_name"].pattern == "SQL.*"


def test_defaults() -> None:
    config = parse(keepit_target())
    defaults = GlobalConfig()
    assert config.global_ == defaults
    assert config.targets == (
        TargetConfig(
            name="kp",
            vendor="keepit",
            url="https://dk-co.keepit.com",
            interval=defaults.interval,
            timeout=defaults.timeout,
            lookback=defaults.lookback,
            rpo=defaults.rpo,
        ),
    )
    assert config.rpo_overrides == ()


def test_vendor_defaults_are_not_shared() -> None:
    config = parse(
        "targets:\n"
        + "".join(
            f"  - {{name: t{i}, vendor: tokenvendor, url: 'https://x', client_id: a, client_secret: b}}\n"
            for i in range(2)
        )
    )
    first, second = (t.options["jobs"] for t in config.targets)
    assert first == second == []
    assert first is not second


def test_empty_targets_and_nulls_are_allowed() -> None:
    config = parse("global:\ntargets: []\nrpo_overrides:\n")
    assert config == Config(source="test.yml")
    assert parse(keepit_target("    labels:\n    tls:\n    username:\n")).targets[0].labels == {}


def test_unset_timeout_follows_a_shorter_interval() -> None:
    config = parse("global: {interval: 1m}\n" + keepit_target("    interval: 30s\n"))
    assert config.global_.timeout == timedelta(minutes=1)
    assert config.targets[0].timeout == timedelta(seconds=30)


def test_global_timeout_is_capped_for_a_target_with_a_shorter_interval_only_when_unset() -> None:
    config = parse("global: {interval: 10m}\n" + keepit_target("    interval: 1m\n"))
    assert config.targets[0].timeout == timedelta(minutes=1)


def test_variable_expansion() -> None:
    config = parse(
        keepit_target(
            "    username: ${USER}\n"
            "    password: ${PASSWORD}\n"
            "    labels: {tenant: '${TENANT}', literal: '$${NOT_A_VAR}', mixed: 'a-${TENANT}-$$${X}', dollar: $HOME}\n"
            "    connectors: ['${CONNECTOR}']\n"
            "rpo_overrides:\n"
            "  - match: {job_name: '${JOB_RE}'}\n"
            "    rpo: ${RPO}\n"
        ),
        environ={
            # Expanded after parsing: YAML specials in values are just text.
            "USER": "svc: #1",
            "PASSWORD": "'\"{[&*!|>%@`",
            "TENANT": "acme",
            "CONNECTOR": "- not: a list",
            "JOB_RE": "SQL.*",
            "RPO": "4h",
        },
    )
    target = config.targets[0]
    assert target.username == "svc: #1"
    assert target.password == Secret("'\"{[&*!|>%@`")
    assert target.labels == {"tenant": "acme", "literal": "${NOT_A_VAR}", "mixed": "a-acme-$${X}", "dollar": "$HOME"}
    assert target.options["connectors"] == ["- not: a list"]
    assert config.rpo_overrides[0].rpo == timedelta(hours=4)


def test_keys_are_not_expanded() -> None:
    error = parse_error(keepit_target("    labels: {'${TENANT}': acme}\n"), environ={"TENANT": "tenant"})
    assert messages(error) == ["targets[0].labels.${TENANT}: invalid label name (must match [a-zA-Z_][a-zA-Z0-9_]*)"]


def test_password_file_relative_to_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "pw").write_text("s3cret\n")
    (tmp_path / "conf" / "config.yml").write_text(keepit_target("    username: u\n    password_file: pw\n"))
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    config = load_config("conf/config.yml", environ={}, vendors=VENDORS)
    assert config.targets[0].password == Secret("s3cret")


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        (b"s3cret", "s3cret"),
        (b"s3cret\n", "s3cret"),
        (b"s3cret\r\n", "s3cret"),
        (b"s3cret\n\n", "s3cret\n"),  # one newline only: the rest is the secret's
        (b" s3cret \n", " s3cret "),
        (b"a\rb\n", "a\rb"),
    ],
)
def test_secret_file_content(tmp_path: Path, content: bytes, secret: str) -> None:
    (tmp_path / "pw").write_bytes(content)
    config = parse(keepit_target("    password_file: pw\n"), base_dir=tmp_path)
    assert config.targets[0].password == Secret(secret)


def test_vendor_secret_file_and_variable_in_path(tmp_path: Path) -> None:
    (tmp_path / "client-secret").write_text("cs\n")
    config = parse(
        "targets:\n"
        "  - name: tv\n"
        "    vendor: tokenvendor\n"
        "    url: https://api.example.com\n"
        "    client_id: abc\n"
        "    client_secret_file: ${CREDENTIALS_DIRECTORY}/client-secret\n",
        environ={"CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert config.targets[0].options["client_secret"] == Secret("cs")


def test_merge_keys_may_be_overridden() -> None:
    # `<<` merges are no duplicate keys: overriding merged values is their point.
    config = parse(
        "targets:\n"
        "  - &first {name: a, vendor: keepit, url: 'https://dk-co.keepit.com', rpo: 24h}\n"
        "  - {<<: *first, name: b, rpo: 12h}\n"
    )
    assert [(t.name, t.rpo) for t in config.targets] == [("a", timedelta(hours=24)), ("b", timedelta(hours=12))]


# --- rpo_for -----------------------------------------------------------------


def test_rpo_for_first_match_wins_fully_anchored() -> None:
    config = parse(
        "targets:\n"
        "  - {name: db, vendor: keepit, url: 'https://a.example', rpo: 26h, labels: {tier: gold}}\n"
        "  - {name: other, vendor: keepit, url: 'https://b.example'}\n"
        "rpo_overrides:\n"
        "  - match: {target: db, job_name: 'SQL.*'}\n"
        "    rpo: 4h\n"
        "  - match: {job_name: 'SQL.*|MySQL'}\n"
        "    rpo: 8h\n"
        "  - match: {tier: gold}\n"
        "    rpo: 12h\n"
        "  - match: {vendor: keepit, job_type: restore}\n"
        "    rpo: 1h\n"
    )
    db, other = config.targets

    def rpo(target: TargetConfig, job_name: str, job_type: str = "backup") -> timedelta:
        return config.rpo_for(target, JobKey(job_name, job_type))

    assert rpo(db, "SQL nightly") == timedelta(hours=4)
    assert rpo(other, "SQL nightly") == timedelta(hours=8)
    assert rpo(db, "MySQL") == timedelta(hours=8)  # SQL.* must not match MySQL
    assert rpo(other, "MySQL") == timedelta(hours=8)
    assert rpo(other, "MySQL2") == timedelta(hours=26)  # nor MySQL match MySQL2
    assert rpo(db, "Files") == timedelta(hours=12)  # a static label
    assert rpo(other, "Files") == timedelta(hours=26)  # no such label: no match
    assert rpo(other, "Files", "restore") == timedelta(hours=1)


# --- secrets -----------------------------------------------------------------


def test_secrets_never_shown(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("file-s3cret\n")
    config = parse(
        "targets:\n"
        "  - {name: a, vendor: keepit, url: 'https://a.example', username: u, password: inline-s3cret}\n"
        "  - {name: b, vendor: keepit, url: 'https://b.example', password_file: pw}\n"
        "  - {name: c, vendor: tokenvendor, url: 'https://c.example', client_id: i, client_secret: '${CS}'}\n",
        environ={"CS": ENV_SECRET},
        base_dir=tmp_path,
    )
    raw = [INLINE_SECRET, "file-s3cret", ENV_SECRET]
    # Raw, and base64 as they go over the wire: each alone, and HTTP Basic's user:password.
    encoded = [base64.b64encode(s.encode()).decode() for s in [*raw, f"u:{INLINE_SECRET}"]]
    assert sorted(config.secrets()) == sorted(raw + encoded)
    shown = [str(config), repr(config), describe_targets(config, BOTH_VENDORS), *(str(t) for t in config.targets)]
    for text in shown:
        for secret in config.secrets():
            assert secret not in text


def _blocks(text: str) -> dict[str, list[str]]:
    """--check-config's blocks by target name: the first line, then `field: value` lines."""
    blocks = {}
    for block in text.split("\n\n"):
        lines = block.splitlines()
        blocks[lines[0].split(":", 1)[0]] = lines
    return blocks


def test_describe_targets_says_where_what_and_how_without_secrets() -> None:
    config = parse(
        "targets:\n"
        "  - name: keepit-dk\n"
        "    vendor: keepit\n"
        "    url: https://dk-co.keepit.com\n"
        "    username: svc\n"
        "    password: hunter2\n"
        "    labels: {tenant: acme, region: eu}\n"
        "    tls: {insecure_skip_verify: true}\n"
        "    connectors: [Microsoft 365]\n"
        "  - {name: tv, vendor: tokenvendor, url: 'https://c.example', client_id: i, client_secret: s, rpo: 90m}\n"
    )
    text = describe_targets(config, BOTH_VENDORS)
    assert "hunter2" not in text
    blocks = _blocks(text)
    assert list(blocks) == ["keepit-dk", "tv"]

    keepit_dk = blocks["keepit-dk"]
    assert keepit_dk[0] == "keepit-dk: vendor=keepit url=https://dk-co.keepit.com"
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in keepit_dk[1:]}
    # In the vendor's own words (keepit.describe_collection), with its options.
    assert fields["collects"].startswith('connectors ["Microsoft 365"] only')
    assert fields["timing"] == "interval=5m timeout=2m lookback=7d rpo=1d2h"
    assert "NOT verified" in fields["tls"]
    assert fields["labels"] == 'region="eu" tenant="acme"'
    assert fields["credentials"] == 'username="svc" password=<secret>'
    assert "verification is OFF" in fields["WARNING"]

    tv = blocks["tv"]
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in tv[1:]}
    # A vendor that does not describe itself: its options say it.
    assert fields["collects"] == "as the vendor module defines (see options)"
    assert fields["timing"].endswith("rpo=1h30m")
    assert 'client_id="i" client_secret=<secret>' in fields["options"]
    assert "WARNING" not in fields


def test_every_registered_vendor_describes_what_it_collects() -> None:
    for name, spec in REAL_VENDORS.items():
        assert spec.describe is not None, name
        assert spec.describe(spec.defaults), name


def test_describe_targets_of_no_targets_says_so() -> None:
    assert describe_targets(Config(source="empty.yml")) == "empty.yml: no targets configured"


def test_describe_strips_userinfo_of_targets_built_in_code() -> None:
    target = TargetConfig(name="demo", vendor="keepit", url="http://user:pw@127.0.0.1:8080/api")
    text = describe_targets(Config(targets=(target,)))
    assert text.splitlines()[0] == "demo: vendor=keepit url=http://127.0.0.1:8080/api"
    assert "pw" not in text


@pytest.mark.parametrize(
    ("secret_line", "mode", "warned"),
    [
        ("password: inline-s3cret", 0o644, True),
        ("password: inline-s3cret", 0o640, False),
        ("password: ${KEEPIT_PASSWORD}", 0o644, False),
        ("password_file: /run/secrets/keepit", 0o644, False),
        ("password: $${literal}", 0o604, True),  # an escaped ${ is no variable
    ],
)
def test_world_readable_warning(tmp_path: Path, secret_line: str, mode: int, warned: bool) -> None:
    path = tmp_path / "config.yml"
    path.write_text(keepit_target(f"    {secret_line}\n"))
    path.chmod(mode)
    warning = warn_world_readable(path, vendors=VENDORS)
    if not warned:
        assert warning is None
        return
    assert warning == (
        f"{path} is readable by other users (mode {mode:04o}) and holds secrets inline at targets[0].password: "
        "remove read access for others (chmod o-r) or move them to <key>_file or ${VAR}"
    )
    assert INLINE_SECRET not in warning


def test_world_readable_warning_covers_vendor_secrets(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(
        "targets:\n  - {name: c, vendor: tokenvendor, url: 'https://c.example', client_id: i, client_secret: s}\n"
    )
    path.chmod(0o644)
    warning = warn_world_readable(path, vendors=BOTH_VENDORS)
    assert warning is not None
    assert "targets[0].client_secret:" in warning


def test_world_readable_warning_ignores_unreadable_files(tmp_path: Path) -> None:
    assert warn_world_readable(tmp_path / "missing.yml", vendors=VENDORS) is None


# --- the shipped example -----------------------------------------------------


def test_example_config_loads(tmp_path: Path, pki: Pki) -> None:
    """Loaded with the real vendor map, so the example cannot drift from the code."""
    shutil.copy(EXAMPLE, tmp_path / "config.yml")
    (tmp_path / "corp-ca.pem").write_bytes(pki.ca.read_bytes())
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for vendor in ("keepit", "veeam", "commvault", "avepoint"):
        (credentials / vendor).write_text(f"{vendor}-password\n")
    (credentials / "keepit").write_text("token-password\n")

    config = load_config(
        tmp_path / "config.yml",
        environ={"KEEPIT_USER": "svc", "CREDENTIALS_DIRECTORY": str(credentials), "AVEPOINT_CLIENT_ID": "app-id"},
        vendors=REAL_VENDORS,
    )

    target, veeam_target, commvault_target, avepoint_target = config.targets
    assert [t.vendor for t in config.targets] == ["keepit", "veeam", "commvault", "avepoint"]
    assert veeam_target.password == Secret("veeam-password")
    assert commvault_target.password == Secret("commvault-password")
    assert avepoint_target.options["client_secret"] == Secret("avepoint-password")
    assert avepoint_target.options["client_id"] == "app-id"
    assert config.rpo_for(veeam_target, JobKey("SQL Backup", "backup")) == timedelta(hours=4)
    assert config.rpo_for(veeam_target, JobKey("MySQL Backup", "backup")) == timedelta(days=2)  # tenant: acme
    assert target.vendor == "keepit"
    assert target.password == Secret("token-password")
    assert target.tls.ca_file == str(tmp_path / "corp-ca.pem")
    assert target.options["connectors"] == ["Microsoft 365", "sfnbtx-8uyqk2-gxq2pd"]
    assert config.rpo_for(target, JobKey("Microsoft 365 (Exchange)", "backup")) == timedelta(hours=12)
    assert config.rpo_for(target, JobKey("Salesforce", "backup")) == timedelta(days=2)
    assert warn_world_readable(tmp_path / "config.yml") is None


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    keys = {m.group(1) for m in re.finditer(r"^\s*-?\s*([a-z_]+):", text, re.MULTILINE)}
    assert {"interval", "timeout", "lookback", "max_concurrency", "rpo", "job_retention"} <= keys
    assert {"name", "vendor", "url", "username", "password_file", "labels", "tls", "ca_file"} <= keys
    assert {"insecure_skip_verify", "account", "connectors", "rpo_overrides", "match"} <= keys


# --- vendor spec hooks: choices, credentials, validate -------------------------

HOOKS_SPEC = VendorSpec(
    name="hooks",
    client=keepit.KeepitClient,
    options={"format": str, "services": list[str]},
    secrets=("client_secret",),
    choices={"format": ("xml", "json")},
    credentials=False,
    validate=lambda target: [
        ("services", f"unknown entry {entry!r}") for entry in target.options.get("services", []) if entry != "mail"
    ],
)


def test_choices_credentials_and_validate_hooks() -> None:
    text = (
        "targets:\n  - name: h\n    vendor: hooks\n    url: https://h.example\n"
        "    username: u\n    format: yaml\n    services: [mail, fax]\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yml", environ={}, vendors={"hooks": HOOKS_SPEC})
    assert messages(caught.value) == [
        "targets[0].username: unknown key",
        "targets[0].format: must be one of xml, json, got 'yaml'",
        "targets[0].services: unknown entry 'fax'",
    ]
    ok = (
        "targets:\n  - name: h\n    vendor: hooks\n    url: https://h.example\n    format: json\n    services: [mail]\n"
    )
    config = parse_config(ok, "test.yml", environ={}, vendors={"hooks": HOOKS_SPEC})
    assert config.targets[0].options["format"] == "json"
