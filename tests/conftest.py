"""Shared test fixtures. Vendor- or area-specific fixtures live in their own modules."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.model import Run, Snapshot

GOLDEN_DIR = Path(__file__).parent / "golden"
VENDOR_API_DIR = Path(__file__).resolve().parents[2] / "shared" / "vendor-api"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/* from the code under test (review the diff!)",
    )


class Golden:
    """Compares a value with tests/golden/<name>; rewrites it only with --update-golden."""

    def __init__(self, update: bool) -> None:
        self.update = update

    def check_text(self, name: str, actual: str) -> None:
        path = GOLDEN_DIR / name
        if self.update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual, encoding="utf-8")
            return
        assert path.exists(), f"missing golden file {path}; run pytest --update-golden and review it"
        assert actual == path.read_text(encoding="utf-8"), f"output differs from {path}"

    def check_json(self, name: str, actual: Any) -> None:
        self.check_text(name, json.dumps(actual, indent=2, sort_keys=True, default=str) + "\n")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def run_dict(run: Run) -> dict[str, Any]:
    """Every field of a Run, as golden files hold it."""
    return {
        "run_id": run.run_id,
        "job_name": run.job.job_name,
        "job_type": run.job.job_type,
        "status": run.status.value,
        "start": _iso(run.start),
        "end": _iso(run.end),
        "query_time": _iso(run.query_time),
        "duration": run.duration,
        "processed_bytes": run.processed_bytes,
        "stored_bytes": run.stored_bytes,
        "items": dict(run.items),
        "progress": run.progress,
        "reason": run.reason,
    }


def snapshot_dict(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "job_name": snapshot.job.job_name,
        "job_type": snapshot.job.job_type,
        "timestamp": _iso(snapshot.timestamp),
        "size_bytes": snapshot.size_bytes,
        "complete": snapshot.complete,
    }


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    return Golden(bool(request.config.getoption("--update-golden")))


@pytest.fixture(scope="session")
def vendor_api_dir() -> Path:
    """The vendors' documentation excerpts in ../shared/vendor-api (read-only)."""
    if not VENDOR_API_DIR.is_dir():
        pytest.fail(f"{VENDOR_API_DIR} not found: the tests need ../shared/vendor-api beside the checkout")
    return VENDOR_API_DIR


# --- TLS test certificates ---------------------------------------------------

from tests import certs  # noqa: E402 - this section was appended


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> certs.Pki:
    """A test CA and the certificates it signed (tests/certs.py), made once per session."""
    try:
        return certs.make_pki(tmp_path_factory.mktemp("pki"))
    except RuntimeError as exc:
        pytest.fail(str(exc))
