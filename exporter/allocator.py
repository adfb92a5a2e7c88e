"""Give large freed buffers back to the operating system.

Each rebuild of the exposition allocates and frees body-sized buffers (tens
to hundreds of MB at scale). glibc serves blocks above its mmap threshold with
mmap and unmaps them on free, but raises that threshold dynamically after the
first such free, after which big buffers come from the heap and freed ones
stay in the process: RSS creeps up with no object alive (measured by
`make bench`, benchmark "memory"). Pinning the threshold keeps RSS flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt(3): M_MMAP_THRESHOLD; setting it also turns the dynamic adjustment off.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def pin_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold; False where there is no glibc (musl, macOS)
    or where the operator already chose one through the environment."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
