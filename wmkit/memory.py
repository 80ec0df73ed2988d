"""Keep freed memory for reuse: what the command line does for its long runs.

A reading of a 512 px image makes feature maps of 32 MiB and more (``HiddenExtractor``: 32
channels x 512 x 512 floats). glibc serves every request of that size with a fresh ``mmap``
and hands it back to the system on ``free``, so each new tensor starts as untouched pages and
pays a page fault per 4 KiB the first time it is written: measured on this project's 2-core
machine, allocating and filling one such map took 12 ms, GELU into a fresh tensor 17 ms and
into a reused one 6 ms, and reading a 512 px photo with ``hidden`` went from 0.20 s to 0.12 s
once freed memory was kept (README, "Throughput").

This is a process-wide setting, so the library never makes it on import: ``wmkit`` commands
(and the worker processes they start) call :func:`reuse_freed_memory` first; a program using
wmkit as a library may call it too. The results are unchanged: only where the bytes live.
"""
from __future__ import annotations

import ctypes
import sys

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

# What stays mapped once freed. Above what one 512 px reading at 2x its size needs (about
# 0.5 GiB), so a run of readings settles at one peak and stays there, which
# benchmarks/verify_volume.py checks; returned to the system beyond it.
KEEP_BYTES = 1 << 30

_applied = False


def reuse_freed_memory(keep_bytes: int = KEEP_BYTES) -> bool:
    """Serve large allocations from the heap and keep up to ``keep_bytes`` of freed memory there
    (glibc's ``mallopt``); True where it took effect. Elsewhere (macOS, musl) nothing changes
    and False is returned: a slower run, not a wrong one."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mmap off: a large block freed into the heap is reused by the next request of its size
    # (the mmap threshold itself cannot be raised past 32 MiB, the size of the maps above)
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, min(int(keep_bytes), 2**31 - 1)))
    return _applied
