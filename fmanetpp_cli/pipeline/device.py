"""Device and precision selection, and the default memory budget of one model pass."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from fmanetpp_cli.errors import ConfigError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Share of the free memory one model pass may take by default: the rest holds the chunk buffer, the
# decoder, the encoder and whatever else runs on the machine.
BUDGET_SHARE = 0.5
# Ceiling of the default CPU budget. Large frames need room for the chunk's float outputs (one 1080p frame
# at x4 is 400 MB) or the default chunk shrinks and context frames get recomputed more often; beyond 16 GB
# the gain is small and the risk of pushing a shared machine into swap is not.
CPU_BUDGET_CAP = 16 << 30


def select_device(spec: str = "auto") -> torch.device:
    """Turn ``auto | cpu | cuda | cuda:N`` into a device that exists.

    Raises:
        ConfigError: CUDA was asked for but is not available, or the index is out of range.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine (use cpu or auto)")
        index = int(spec.split(":", 1)[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device("cuda", index)
    raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device``.

    Raises:
        ConfigError: unknown precision, or fp16 off CUDA (CPU kernels for fp16 are slow or missing).
    """
    if precision not in _DTYPES:
        raise ConfigError(f"--precision must be one of {', '.join(_DTYPES)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
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
