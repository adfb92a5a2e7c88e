"""Which job types have an RPO: the vendors' normalised job types, by hand."""

from __future__ import annotations

import pytest

from exporter.vendors import VENDORS
from exporter.vendors.base import creates_recovery_points

PROTECTING = ["backup", "backup_copy", "immediate_backup_copy", "agent_backup", "nas_backup", "aux_copy"]
NOT_PROTECTING = ["restore", "srestore", "pstrestore", "zipdownload", "export", "deletion", "retention", "data_aging"]


@pytest.mark.parametrize("job_type", PROTECTING)
def test_backups_have_an_rpo(job_type: str) -> None:
    assert creates_recovery_points(job_type)


@pytest.mark.parametrize("job_type", NOT_PROTECTING)
def test_restores_exports_and_pruning_have_none(job_type: str) -> None:
    assert not creates_recovery_points(job_type)


def test_every_vendor_decides_by_the_shared_rule_unless_it_says_otherwise() -> None:
    for spec in VENDORS.values():
        assert all(spec.protects(t) for t in PROTECTING), spec.name
        assert not any(spec.protects(t) for t in NOT_PROTECTING), spec.name
