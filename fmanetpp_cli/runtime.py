"""Process-wide tuning for long CPU passes over large tensors.

PyTorch's CPU allocator hands every tensor to the C library's ``malloc``. glibc serves a request above its
mmap threshold (dynamic, at most 32 MiB by default) with fresh pages from ``mmap`` and returns them with
``munmap`` on free, so each large intermediate of a full-frame pass is page-faulted and zeroed anew at every
layer. On the 2-core development machine a 25-frame 320x180 pass of ``fmanetpp-small`` took 23.7 s of
wall time, most of it in the kernel; with the thresholds below the same pass took 9.6 s
(docs/benchmarks.md). The cost: freed memory stays in the process for reuse, so the resident size stays
at its high-water mark instead of shrinking between passes.

Only glibc on Linux is tuned (``mallopt``); elsewhere :func:`tune_allocator` does nothing. Set the
environment variable ``FMANETPP_MALLOC_TUNING=0`` to switch it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV_SWITCH = "FMANETPP_MALLOC_TUNING"

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30
"""Requests below 1 GiB come from the heap (and go back to it on free), not from fresh mmap'd pages."""
TRIM_THRESHOLD = (1 << 31) - 1
"""Free memory at the heap's top is kept up to this size instead of being given back to the system."""

_applied = False


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl does not)
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); True when they are in force.

    Returns False (and changes nothing) off glibc or when ``FMANETPP_MALLOC_TUNING=0``.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get(ENV_SWITCH, "1").strip() in ("0", "false", "no", "off"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    ok = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    _applied = ok
    return ok
