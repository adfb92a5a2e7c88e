"""The vendor map: adding a vendor is one module and one line here."""

from __future__ import annotations

from exporter.vendors import avepoint, commvault, keepit, veeam
from exporter.vendors.base import VendorSpec

VENDORS: dict[str, VendorSpec] = {spec.name: spec for spec in (keepit.SPEC, veeam.SPEC, commvault.SPEC, avepoint.SPEC)}
