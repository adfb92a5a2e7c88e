"""--shard.index / --shard.count: every target in exactly one shard, stable across processes."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from exporter.config import Config, TargetConfig, shard_of

NAMES = st.lists(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,30}", fullmatch=True), unique=True, max_size=60)


@given(NAMES, st.integers(min_value=1, max_value=16))
def test_shards_partition_the_targets(names: list[str], count: int) -> None:
    config = Config(targets=tuple(TargetConfig(name=n, vendor="keepit", url="https://x") for n in names))
    shards = [{t.name for t in config.shard(index, count).targets} for index in range(count)]
    assert sum(len(s) for s in shards) == len(names)  # none duplicated
    assert set().union(*shards) == set(names)  # none lost


def test_shard_assignment_is_the_same_in_another_process() -> None:
    names = [f"target-{i}" for i in range(50)]
    here = [shard_of(n, 7) for n in names]
    code = f"from exporter.config import shard_of; print([shard_of(n, 7) for n in {names!r}])"
    # A new interpreter has a different hash() seed: the assignment must not depend on it.
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert there.stdout.strip() == str(here)
    assert len(set(here)) > 3  # and it spreads


def test_invalid_shard_flags_are_refused() -> None:
    for flags in (["--shard.index=3", "--shard.count=3"], ["--shard.count=0"], ["--shard.index=-1"]):
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "--demo", "--once", *flags],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, flags
        assert "--shard.index must be in" in result.stderr
