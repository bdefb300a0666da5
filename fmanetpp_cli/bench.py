"""How fast restoring runs on this machine: the library behind ``fmanetpp bench``.

:func:`run_bench` writes a synthetic clip of the requested size, restores it end to end with
:func:`fmanetpp_cli.pipeline.restore_video` (the same code path as ``fmanetpp restore``), then times
decoding (with the conversion of every frame to a float tensor) and encoding (of frames at the output
size) on their own. Everything is reported per output frame: the end-to-end time, the time inside the
model (the pipeline's own ``model_seconds``), decode, encode and the rest (tiling, blending, conversions,
verification of the written file); and the process's peak resident memory.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fmanetpp_cli.errors import ConfigError
from fmanetpp_cli.pipeline import RestoreOptions, restore_video
from fmanetpp_cli.video import EncodeOptions, VideoWriter

SYNTHETIC_FPS = 25


@dataclass(frozen=True, slots=True)
class BenchReport:
    """One benchmark run. Times are seconds per output frame unless named ``*_seconds``.

    Attributes:
        model: the name the model was asked for.
        width, height: input frame size.
        frames: frames restored.
        threads: torch intra-op threads.
        device: where the model ran.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        io_threads: whether decoding and encoding ran on background threads.
        seconds_per_frame: end-to-end restore wall time per frame (start-up included).
        model_seconds_per_frame: time inside the model's forward passes per frame.
        decode_seconds_per_frame: demuxing, decoding and colour conversion to RGB (decode thread).
        encode_seconds_per_frame: conversion, encoding and muxing (encode thread), plus the final flush
            of the encoder, the rest of the audio and the read-back check of the file.
        wait_seconds_per_frame: after start-up, the model's thread waiting for a decoded frame, for room
            in the encode queue, or for the encoder to finish; without threads, all of decode and encode.
        other_seconds_per_frame: the rest of the model's thread after start-up (tensor conversion,
            tiling, scene cuts, bookkeeping); never below 0.
        overhead: (end to end - start-up - model) / model, for the whole clip: what the pipeline adds.
        import_seconds: process start to the benchmark (interpreter, torch, the CLI), when known.
        load_seconds: loading the weights (0 when the caller did not say).
        startup_seconds: the restore's start-up: probing the file, the memory probe pass that sizes the
            tiles, opening the output, decoding the first frame.
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
    io_threads: bool
    seconds_per_frame: float
    model_seconds_per_frame: float
    decode_seconds_per_frame: float
    encode_seconds_per_frame: float
    wait_seconds_per_frame: float
    other_seconds_per_frame: float
    overhead: float
    import_seconds: float | None
    load_seconds: float
    startup_seconds: float
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


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``), None where that cannot be read."""
    try:
        stat = Path("/proc/self/stat").read_text()
        started = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


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
    import_seconds: float | None = None,
    load_seconds: float = 0.0,
) -> BenchReport:
    """Restore a synthetic ``width x height`` clip of ``frames`` frames and time its parts.

    Args:
        model: the loaded network.
        name: its name, for the report.
        width, height: input frame size.
        frames: clip length (the 1-second default is 25 frames).
        options: restore options (device, precision, chunk, tiles); ``overwrite`` is forced on.
        workdir: folder for the temporary clips (default: a fresh temporary folder, removed after).
        import_seconds: start-up before the call (interpreter and imports), for the report.
        load_seconds: time the caller took to load the weights, for the report.

    Raises:
        ConfigError: a size below 2x2 or fewer than one frame, and whatever ``restore_video`` raises.
    """
    if width < 2 or height < 2 or frames < 1:
        raise ConfigError(f"bench needs a size of at least 2x2 and one frame, got {width}x{height}, {frames}")
    opts = RestoreOptions(**{**_fields(options or RestoreOptions()), "overwrite": True})
    with tempfile.TemporaryDirectory(dir=workdir, prefix="fmanetpp-bench-") as tmp:
        src, dst = Path(tmp) / "in.mp4", Path(tmp) / "out.mp4"
        write_synthetic_clip(src, width, height, frames)
        report = restore_video(src, dst, opts, model)
    n, t = report.frames, report.times
    after = report.seconds - t.startup - report.model_seconds  # what the pipeline adds to the model
    wait = t.decode_wait + t.encode_wait + t.finish
    return BenchReport(
        model=name,
        width=width,
        height=height,
        frames=n,
        threads=torch.get_num_threads(),
        device=str(report.device),
        precision=report.precision,
        io_threads=opts.io_threads,
        seconds_per_frame=report.seconds / n,
        model_seconds_per_frame=report.model_seconds / n,
        decode_seconds_per_frame=t.decode / n,
        encode_seconds_per_frame=(t.encode + t.finish) / n,
        wait_seconds_per_frame=wait / n,
        other_seconds_per_frame=max(0.0, after - wait) / n,
        overhead=after / report.model_seconds if report.model_seconds > 0 else 0.0,
        import_seconds=import_seconds,
        load_seconds=load_seconds,
        startup_seconds=t.startup,
        peak_rss_mib=peak_rss_mib(),
        machine=f"{platform.processor() or platform.machine()}, {_cores()} cores, torch {torch.__version__}",
    )


def _fields(options: RestoreOptions) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(options, f.name) for f in fields(options)}


def _cores() -> int:
    from fmanetpp_cli.runtime import usable_cores

    return usable_cores()
