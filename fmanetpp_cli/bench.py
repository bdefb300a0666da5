"""How fast restoring runs on this machine: the library behind ``fmanetpp bench``.

:func:`run_bench` writes a synthetic clip of the requested size, restores it end to end with
:func:`fmanetpp_cli.pipeline.restore_video` (the same code path as ``fmanetpp restore``), then times
decoding (with the conversion of every frame to a float tensor) and encoding (of frames at the output
size) on their own. Everything is reported per output frame: the end-to-end time, the time inside the
model (the pipeline's own ``model_seconds``), decode, encode and the rest (tiling, blending, conversions,
verification of the written file); and the process's peak resident memory.
"""

from __future__ import annotations

import platform
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fmanetpp_cli.errors import ConfigError
from fmanetpp_cli.pipeline import RestoreOptions, restore_video
from fmanetpp_cli.video import EncodeOptions, VideoReader, VideoWriter

SYNTHETIC_FPS = 25


@dataclass(frozen=True, slots=True)
class BenchReport:
    """One benchmark run. Times are seconds per output frame; ``other`` is what end-to-end time leaves
    after model, decode and encode (never below 0).

    Attributes:
        model: the name the model was asked for.
        width, height: input frame size.
        frames: frames restored.
        threads: torch intra-op threads.
        device: where the model ran.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        seconds_per_frame: end-to-end restore wall time per frame.
        model_seconds_per_frame: time inside the model's forward passes per frame.
        decode_seconds_per_frame: decoding plus conversion to a float tensor, per frame.
        encode_seconds_per_frame: encoding one output-size frame.
        other_seconds_per_frame: the rest.
        peak_rss_mib: the process's peak resident set size (interpreter, torch and weights included).
        machine: processor, core count and torch version.
    """

    model: str
    width: int
    height: int
    frames: int
    threads: int
    device: str
    precision: str
    seconds_per_frame: float
    model_seconds_per_frame: float
    decode_seconds_per_frame: float
    encode_seconds_per_frame: float
    other_seconds_per_frame: float
    peak_rss_mib: float
    machine: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(W, H)``.

    Raises:
        ConfigError: not two positive integers joined by ``x``.
    """
    parts = text.lower().split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--size must look like 320x180 (width x height), got {text!r}") from None
    if w < 2 or h < 2:
        raise ConfigError(f"--size must be at least 2x2, got {text!r}")
    return w, h


def _frame(width: int, height: int, index: int) -> np.ndarray:
    """A moving, textured test frame (diagonal stripes drifting by 1.5 px a frame, and a noise field).

    Shapes:
        return: ``[H, W, 3]`` uint8.
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = (xs + 0.5 * ys - 1.5 * index) / 7.0
    base = 0.5 + 0.35 * np.sin(phase)[..., None] * np.array([1.0, 0.8, 0.6], dtype=np.float32)
    noise = np.random.default_rng(index).random((height, width, 1), dtype=np.float32)
    return np.clip(255 * (0.85 * base + 0.15 * noise), 0, 255).astype(np.uint8)


def write_synthetic_clip(path: Path, width: int, height: int, frames: int) -> None:
    """Encode ``frames`` test frames of ``width x height`` at 25 fps into ``path`` (H.264, no audio)."""
    with VideoWriter(path, width=width, height=height, options=EncodeOptions(), overwrite=True) as writer:
        for i in range(frames):
            writer.write(_frame(width, height, i), i * 1000 // SYNTHETIC_FPS)  # pts in ms (time base 1/1000)
        writer.commit()


def time_decode(path: Path) -> tuple[float, int]:
    """Seconds to decode ``path`` and turn every frame into a ``[3, H, W]`` float tensor; frames decoded."""
    t0 = time.perf_counter()
    n = 0
    with VideoReader(path) as reader:
        for frame in reader:
            torch.from_numpy(frame.image).permute(2, 0, 1).float().div_(255)
            n += 1
    return time.perf_counter() - t0, n


def time_encode(path: Path, width: int, height: int, frames: int, scale: int) -> float:
    """Seconds to encode ``frames`` frames of the output size (``scale`` times the input) into ``path``."""
    images = [np.repeat(np.repeat(_frame(width, height, i), scale, 0), scale, 1) for i in range(frames)]
    t0 = time.perf_counter()
    with VideoWriter(
        path, width=width * scale, height=height * scale, options=EncodeOptions(), overwrite=True
    ) as writer:
        for i, image in enumerate(images):
            writer.write(image, i * 1000 // SYNTHETIC_FPS)
        writer.commit()
    return time.perf_counter() - t0


def peak_rss_mib() -> float:
    """The process's peak resident set size in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def run_bench(
    model: nn.Module,
    name: str,
    *,
    width: int = 320,
    height: int = 180,
    frames: int = 25,
    options: RestoreOptions | None = None,
    workdir: Path | None = None,
) -> BenchReport:
    """Restore a synthetic ``width x height`` clip of ``frames`` frames and time its parts.

    Args:
        model: the loaded network.
        name: its name, for the report.
        width, height: input frame size.
        frames: clip length (the 1-second default is 25 frames).
        options: restore options (device, precision, chunk, tiles); ``overwrite`` is forced on.
        workdir: folder for the temporary clips (default: a fresh temporary folder, removed after).

    Raises:
        ConfigError: a size below 2x2 or fewer than one frame, and whatever ``restore_video`` raises.
    """
    if width < 2 or height < 2 or frames < 1:
        raise ConfigError(f"bench needs a size of at least 2x2 and one frame, got {width}x{height}, {frames}")
    opts = RestoreOptions(**{**_fields(options or RestoreOptions()), "overwrite": True})
    with tempfile.TemporaryDirectory(dir=workdir, prefix="fmanetpp-bench-") as tmp:
        src, dst, enc = Path(tmp) / "in.mp4", Path(tmp) / "out.mp4", Path(tmp) / "enc.mp4"
        write_synthetic_clip(src, width, height, frames)
        report = restore_video(src, dst, opts, model)
        decode, decoded = time_decode(src)
        encode = time_encode(enc, width, height, decoded, int(getattr(model, "scale", 4)))
    n = report.frames
    other = max(0.0, report.seconds - report.model_seconds - decode - encode)
    return BenchReport(
        model=name,
        width=width,
        height=height,
        frames=n,
        threads=torch.get_num_threads(),
        device=str(report.device),
        precision=report.precision,
        seconds_per_frame=report.seconds / n,
        model_seconds_per_frame=report.model_seconds / n,
        decode_seconds_per_frame=decode / decoded,
        encode_seconds_per_frame=encode / decoded,
        other_seconds_per_frame=other / n,
        peak_rss_mib=peak_rss_mib(),
        machine=f"{platform.processor() or platform.machine()}, {_cores()} cores, torch {torch.__version__}",
    )


def _fields(options: RestoreOptions) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(options, f.name) for f in fields(options)}


def _cores() -> int:
    from fmanetpp_cli.runtime import usable_cores

    return usable_cores()
