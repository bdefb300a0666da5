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

:func:`set_threads` sets torch's thread count, by default to the fastest that a short probe measures on
the machine as it is loaded now (:func:`probe_threads`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from fmanetpp_cli.errors import ConfigError

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


# --------------------------------------------------------------------------------------------------
# Torch threads
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThreadChoice:
    """The torch thread count in force and how it was chosen.

    Attributes:
        threads: intra-op threads set with ``torch.set_num_threads``.
        probe_seconds: per candidate, the best time of the probe workload (empty when ``threads`` was
            given, not measured).
    """

    threads: int
    probe_seconds: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``probe_seconds`` keys as strings)."""
        return {"threads": self.threads, "probe_seconds": {str(k): v for k, v in self.probe_seconds.items()}}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def thread_candidates(cores: int | None = None) -> list[int]:
    """1, 2, 4, ... up to the usable cores, and the core count itself."""
    cores = usable_cores() if cores is None else max(1, cores)
    out, n = [], 1
    while n < cores:
        out.append(n)
        n *= 2
    return [*out, cores]


def _probe_workload() -> None:
    """Many small parallel operations, as in a restore pass (each pays the threads' synchronisation)."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 24, 48, 48, generator=gen)
    w = torch.rand(24, 24, 3, 3, generator=gen) / 100
    with torch.no_grad():
        for _ in range(12):
            x = F.leaky_relu(F.conv2d(x, w, padding=1), 0.2)


def probe_threads(candidates: list[int] | None = None, repeats: int = 3) -> ThreadChoice:
    """Time a short workload with each candidate thread count (interleaved) and pick the fastest.

    On a 2-core machine shared with other jobs, two threads wait for each other at every parallel
    operation, and one thread has been several times faster (docs/benchmarks.md); on an idle machine
    more threads win. Measuring takes a fraction of a second and follows the machine as it is now. The
    thread count in force before the call is restored.

    Args:
        candidates: thread counts to try (default :func:`thread_candidates`).
        repeats: timed rounds; the best time of each candidate is kept. A candidate more than twice as
            slow as the best leaves the race after a round.

    Returns:
        The fastest candidate and every candidate's best time.
    """
    import torch

    cands = sorted(set(candidates or thread_candidates()))
    before = torch.get_num_threads()
    best: dict[int, float] = {n: float("inf") for n in cands}
    try:
        for n in cands:  # warm-up: thread pool start, kernel selection
            torch.set_num_threads(n)
            _probe_workload()
        racing = list(cands)
        for _ in range(repeats):
            for n in racing:
                torch.set_num_threads(n)
                t0 = time.perf_counter()
                _probe_workload()
                best[n] = min(best[n], time.perf_counter() - t0)
            # a candidate twice as slow as the best is out (a loaded machine makes it very slow)
            racing = [n for n in racing if best[n] <= 2 * min(best.values())]
    finally:
        torch.set_num_threads(before)
    fastest = min(cands, key=lambda n: (best[n], n))
    return ThreadChoice(threads=fastest, probe_seconds=best)


def set_threads(threads: int | None) -> ThreadChoice:
    """Set torch's intra-op thread count: ``threads``, or with None the fastest measured by the probe.

    Raises:
        ConfigError: ``threads`` below 1.
    """
    import torch

    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    choice = ThreadChoice(threads=threads) if threads is not None else probe_threads()
    torch.set_num_threads(choice.threads)
    return choice
