"""Device and precision selection, and the default memory budget of one model pass."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import torch

from fmanetpp_cli.errors import ConfigError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = tuple(_DTYPES)
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

# Share of the free memory one model pass may take by default: the rest holds the chunk buffer, the
# decoder, the encoder and whatever else runs on the machine.
BUDGET_SHARE = 0.5
# Ceiling of the default CPU budget. Large frames need room for the chunk's float outputs (one 1080p frame
# at x4 is 400 MB) or the default chunk shrinks and context frames get recomputed more often; beyond 16 GB
# the gain is small and the risk of pushing a shared machine into swap is not.
CPU_BUDGET_CAP = 16 << 30


def check_device_spec(spec: str) -> None:
    """Refuse a device spec that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (the edge check).

    Raises:
        ConfigError: any other spelling.
    """
    if not _DEVICE_RE.match(spec):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")


def check_precision_spec(precision: str, device_spec: str) -> None:
    """Refuse an unknown precision, and fp16 when the device spec says CPU (the edge check).

    Raises:
        ConfigError: unknown precision, or fp16 with ``device_spec == "cpu"``.
    """
    if precision not in _DTYPES:
        raise ConfigError(f"--precision must be one of {', '.join(_DTYPES)}, got {precision!r}")
    _check_fp16(precision, device_spec)


def _check_fp16(precision: str, device_type: str) -> None:
    if precision == "fp16" and device_type == "cpu":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")


def select_device(spec: str = "auto", *, auto_index: int | None = None) -> torch.device:
    """Turn a checked spec (``check_device_spec``: ``auto | cpu | cuda | cuda:N``) into a device that exists.

    Args:
        spec: the device spec.
        auto_index: the CUDA device ``auto`` picks (training under torchrun: the local rank); None = the
            current CUDA device.

    Raises:
        ConfigError: CUDA was asked for but is not available, or the index is out of range.
    """
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda") if auto_index is None else torch.device("cuda", auto_index)
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: CUDA is not available on this machine (use cpu or auto)")
    index = int(spec.split(":", 1)[1]) if ":" in spec else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    return torch.device("cuda", index)


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype for a checked ``precision`` (``check_precision_spec``) on the chosen ``device``.

    Raises:
        ConfigError: fp16 off CUDA (``auto`` chose the CPU; CPU kernels for fp16 are slow or missing).
    """
    _check_fp16(precision, device.type)
    return _DTYPES[precision]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Mixed precision for reduced dtypes (weights stay fp32; reductions stay accurate); no-op for fp32."""
    if dtype == torch.float32:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def _available_ram() -> int:
    """Bytes of RAM available now (Linux ``MemAvailable``, else total physical memory)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_memory_budget(device: torch.device) -> int:
    """Bytes one model pass may use when ``--memory-budget`` is not given."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * BUDGET_SHARE)
    return int(min(_available_ram() * BUDGET_SHARE, CPU_BUDGET_CAP))
