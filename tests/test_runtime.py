"""The allocator tuning of long CPU passes (fmanetpp_cli.runtime)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fmanetpp_cli import runtime

# Allocate 64 MiB with malloc and report how many mmap'd blocks glibc holds while it is alive: above the
# default threshold (at most 32 MiB) the block is mmap'd; after tuning it comes from the heap.
PROBE = """
import ctypes, sys
from fmanetpp_cli import runtime
applied = runtime.tune_allocator()
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
before = libc.mallinfo2().hblks
p = libc.malloc(64 << 20)
during = libc.mallinfo2().hblks
libc.free(p)
print(applied, during - before)
"""

needs_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or runtime._glibc() is None, reason="glibc-only tuning"
)


def _probe(switch: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != runtime.ENV_SWITCH}
    if switch is not None:
        env[runtime.ENV_SWITCH] = switch
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@needs_glibc
def test_tuned_process_serves_large_blocks_from_the_heap() -> None:
    assert _probe(None) == ("True", 0)


@needs_glibc
def test_switched_off_process_keeps_glibc_defaults() -> None:
    assert _probe("0") == ("False", 1)


def test_non_glibc_platform_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_applied", False)
    monkeypatch.setattr(runtime.sys, "platform", "darwin")
    monkeypatch.delenv(runtime.ENV_SWITCH, raising=False)
    assert runtime._glibc() is None
    assert runtime.tune_allocator() is False
