"""Vendor simulators: aiohttp apps answering like the real APIs, for --demo and tests.

Adding a vendor's simulator is one module and one line here.
"""

from __future__ import annotations

from exporter.simulators import avepoint, commvault, keepit, veeam
from exporter.simulators.base import SimulatorSpec, start_simulator

SIMULATORS: dict[str, SimulatorSpec] = {
    spec.name: spec for spec in (keepit.SIMULATOR, veeam.SIMULATOR, commvault.SIMULATOR, avepoint.SIMULATOR)
}

__all__ = ["SIMULATORS", "SimulatorSpec", "start_simulator"]
