"""The process's allocator told to keep freed memory for reuse: each encoder pass frees and
allocates the same blocks, and glibc by default hands large ones back to the system after each,
so the next pass faults them back in page by page.

Measured on the 2-core CI machine (a VM whose kernel reclaims idle pages, DAMON), EfficientNet-
Lite2 on the CPU, ms per image in passes of 4 (`encoders.CPU_PASS`): 50–55 by default (≈ 300 k
page faults per 64 images), 40–46 with the settings below (none); in passes of 32, 99 and 73."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
# Blocks up to 32 MiB (glibc's ceiling) come from the heap, not a fresh mapping each time; up to
# 256 MiB of free heap top is kept rather than trimmed; the heap grows 64 MiB at a time (1 GiB and
# 256 MiB measured no faster). The cost: verifying a demo query, 12 % faster and 0.2 GB more
# peak RSS (15.8 → 13.2 s, 1.08 → 1.26 GB).
SETTINGS = {M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 256 * 2**20, M_TOP_PAD: 64 * 2**20}


@functools.cache
def keep_freed_memory() -> bool:
    """Apply `SETTINGS` to this process's glibc allocator, once; False where there is no glibc
    (musl, macOS: nothing is changed)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        log.debug("no glibc mallopt here: allocator left as it is")
        return False
    return all(mallopt(param, value) == 1 for param, value in SETTINGS.items())
