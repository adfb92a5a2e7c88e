"""`make bench` still runs: every benchmark at its tiny size, and the CLI.

Speed is never asserted here (the machines are shared and noisy); only that
each benchmark completes and reports a figure, a same-run baseline and a
finite ratio between them.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from benchmarks.__main__ import BENCHMARKS, load


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_runs_at_tiny_size(name: str) -> None:
    results = load(name)(quick=True)
    assert results, f"{name} reported nothing"
    for result in results:
        assert result.name, result
        assert result.figure, result
        assert result.baseline, result
        assert math.isfinite(result.ratio), result
        assert result.ratio >= 0, result


def test_cli_prints_machine_and_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "render"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("machine: ")
    assert "CPUs" in lines[0]
    assert lines[1].split()[:4] == ["benchmark", "figure", "baseline", "ratio"]
    assert any(line.startswith("render after 1 of") for line in lines)


def test_cli_rejects_unknown_benchmark() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nonesuch"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
