"""exporter.allocator: the mmap threshold is pinned unless the operator chose one."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import sys
from exporter.allocator import pin_mmap_threshold

def rss_kb():
    with open("/proc/self/status") as status:
        return int(next(l.split()[1] for l in status if l.startswith("VmRSS")))

pinned = pin_mmap_threshold() if sys.argv[1] == "pin" else False
start = rss_kb()
for size in (40, 30, 20, 30):  # body-sized buffers, as successive rebuilds make

    buffer = bytearray(size * 1024 * 1024)
    buffer[::4096] = b"x" * len(buffer[::4096])
    del buffer
print(pinned, rss_kb() - start)
"""


def _child(env: dict[str, str], mode: str = "pin") -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True, env=env)
    pinned, growth_kb = done.stdout.split()
    return pinned, int(growth_kb)


def test_pinned_threshold_gives_freed_buffers_back() -> None:
    pinned, growth_kb = _child({"PATH": "/usr/bin:/bin"})
    assert pinned == "True"
    # Four buffers of 20-40 MB were touched and freed: none may stay resident.
    assert growth_kb < 8 * 1024


def test_without_pinning_freed_buffers_stay_resident() -> None:
    # What the pin is for: glibc's dynamic threshold keeps them in the heap.
    pinned, growth_kb = _child({"PATH": "/usr/bin:/bin"}, mode="no-pin")
    assert pinned == "False"
    assert growth_kb > 16 * 1024


def test_operator_choice_in_environment_is_respected() -> None:
    pinned, _ = _child({"PATH": "/usr/bin:/bin", "MALLOC_MMAP_THRESHOLD_": "1048576"})
    assert pinned == "False"
