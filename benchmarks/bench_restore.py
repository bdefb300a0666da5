"""Benchmarks of `fmanetpp restore` (the streaming pipeline), results in docs/benchmarks.md.

Three measurements, each restore running in a fresh child process so that its peak RSS is its own:

* ``memory``: peak resident memory of a restore of a 100-frame and a 1,000-frame clip (same size, same
  model, same chunk). Streaming means the two peaks should be within a few percent.
* ``overhead``: end-to-end wall time against the time spent inside the model's forward passes (the rest is
  decoding, conversion, tiling, encoding and audio copying).
* ``pipeline``: the same on a given clip (default: the first second of the bundled sample), split into
  start-up (import, weight load, first decoded frame) and what follows, with the background I/O threads
  on and off (``--io-threads on,off``), interleaved, ``--repeats`` times.
* ``chunks``: frames per second for several ``--chunk`` values of one model (how the defaults were chosen).
* ``tiles``: for a memory budget, the automatic tile side and the tracked peak of tensor memory of one
  chunk's pass (model, blending canvas and conversions), in process.

Usage::

    python benchmarks/bench_restore.py memory [--model toy] [--size 128x96]
    python benchmarks/bench_restore.py overhead --model fmanetpp-tiny --frames 24
    python benchmarks/bench_restore.py pipeline --model default --threads 1 --io-threads on,off --repeats 2
    python benchmarks/bench_restore.py chunks --model fmanetpp-tiny --frames 24 --values 5,9,17,33
    python benchmarks/bench_restore.py tiles --model fmanetpp-tiny --size 160x160 --chunk 9 --values 64,256

``--model toy`` is a small convolutional x4 sequence model defined here (temporal radius 2): cheap enough
for 1,000 frames on a CPU, with the same memory behaviour per chunk as any other model; presets
(``fmanetpp-tiny``, ``fmanet-small-a``, ...) run with random weights; ``--model default`` is the bundled
default model with its trained weights.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

HERE = Path(__file__).resolve()


class ToyX4(nn.Module):
    """Sequence model: temporal mixing (radius 2), three 3x3 convs, pixel shuffle x4."""

    scale = 4
    temporal_mode = "sequence"
    num_seq = 1
    temporal_radius = 2
    channel_order = "RGB"

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.mix = nn.Conv3d(3, 3, (3, 1, 1), padding=(1, 0, 0))
        self.body = nn.Sequential(
            nn.Conv2d(3, dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(dim, dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(dim, 48, 3, padding=1),
        )

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Shapes: x ``[B, 3, T, H, W]`` -> output ``[B, 3, T, 4H, 4W]``."""
        B, C, T, H, W = x.shape
        h = self.mix(self.mix(x))  # [B, 3, T, H, W]
        flat = h.transpose(1, 2).reshape(B * T, C, H, W)  # [B*T, 3, H, W]
        up = F.pixel_shuffle(self.body(flat), 4)  # [B*T, 3, 4H, 4W]
        base = F.interpolate(flat, scale_factor=4, mode="bilinear", align_corners=False)
        out = (base + 0.1 * up).reshape(B, T, C, 4 * H, 4 * W).transpose(1, 2)  # [B, 3, T, 4H, 4W]
        return {"output": out}


def make_clip(path: Path, frames: int, width: int, height: int, fps: int = 25) -> Path:
    """H.264 clip of a moving gradient with a stereo AAC track (the audio is copied by the restore)."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        aus = c.add_stream("aac", rate=48000, layout="stereo")
        y, x = np.mgrid[0:height, 0:width]
        for i in range(frames):
            img = np.stack([(x * 3 + i * 4) % 256, (y * 3) % 256, (x + y + i * 2) % 256], -1).astype(np.uint8)
            c.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        c.mux(vs.encode(None))
        samples = int(frames / fps * 48000)
        t = np.arange(samples) / 48000
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, samples, 1024):
            block = np.ascontiguousarray(np.stack([tone[start : start + 1024]] * 2))
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
            c.mux(aus.encode(frame))
        c.mux(aus.encode(None))
    return path


def build_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "toy":
        return ToyX4().eval()
    if name == "default":
        from fmanetpp_cli.checkpoints import load_model
        from fmanetpp_cli.checkpoints.resolve import resolve_weights

        return load_model(resolve_weights(None, None, offline=True), device="cpu")
    from fmanetpp_cli.models import create_model

    return create_model(name).eval()


def child(args: argparse.Namespace) -> None:
    """Run one restore and print its measurements as JSON (runs in its own process)."""
    entered = time.time()
    from fmanetpp_cli.pipeline import RestoreOptions, restore_video
    from fmanetpp_cli.runtime import tune_allocator

    tune_allocator()  # as `fmanetpp restore` does
    torch.set_num_threads(args.threads)
    imported = time.time()
    model = build_model(args.model)
    loaded = time.time()
    opts = RestoreOptions(
        chunk=args.chunk,
        tile=None if args.tile < 0 else args.tile,
        device="cpu",
        overwrite=True,
        end=args.end,
        io_threads=args.io_threads == "on",
        queue_depth=args.queue_depth,
    )
    started = time.perf_counter()
    report = restore_video(args.clip, args.out, opts, model)
    wall = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = {k: round(v, 3) for k, v in asdict(report.times).items()}
    after = wall - report.times.startup - report.model_seconds
    print(
        json.dumps(
            {
                "frames": report.frames,
                "chunk": report.chunk,
                "seconds": round(wall, 3),
                "model_seconds": round(report.model_seconds, 3),
                "peak_rss_mb": round(peak_kb / 1024, 1),
                "audio_copied": report.write.audio_copied,
                "io_threads": opts.io_threads,
                "import_seconds": round(imported - (args.spawned or entered), 3),
                "load_seconds": round(loaded - imported, 3),
                "times": times,
                "after_startup_minus_model": round(after, 3),
                "overhead_share": round(after / report.model_seconds, 4) if report.model_seconds else None,
            }
        )
    )


def tiles(args: argparse.Namespace, width: int, height: int) -> None:
    """Automatic tile side per budget (MB in ``--values``) and the measured peak of one chunk's pass."""
    from fmanetpp_cli.pipeline import RestoreOptions
    from fmanetpp_cli.pipeline.engine import ChunkRestorer, measure_bytes_per_pixel
    from fmanetpp_cli.pipeline.plan import model_traits, plan_restore
    from fmanetpp_cli.pipeline.tiling import measure_peak_bytes

    torch.set_num_threads(args.threads)
    model = build_model(args.model).eval()
    chunk = args.chunk or 9
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (height, width, 3)).astype(np.uint8) for _ in range(chunk)]
    cpu = torch.device("cpu")
    offset = model.num_seq // 2 if model.temporal_mode == "window" else 0
    per_pixel = measure_bytes_per_pixel(model, chunk, cpu)
    for mb in (int(v) for v in args.values.split(",")):
        # The plan gives one pass half the budget (the rest holds the chunk's outputs).
        plan = plan_restore(
            model_traits(model),
            height=height,
            width=width,
            options=RestoreOptions(chunk=chunk, device="cpu"),
            device=cpu,
            memory_budget=2 * (mb << 20),
            bytes_per_pixel=lambda _chunk: per_pixel,
        )
        restorer = ChunkRestorer(model, plan)
        started = time.perf_counter()
        peak = measure_peak_bytes(functools.partial(restorer.restore, frames, offset, chunk - 2 * offset))
        print(
            f"{args.model} {width}x{height} chunk {chunk}: budget {mb} MB -> tile {plan.tile}, "
            f"measured peak {peak / 2**20:.1f} MB ({per_pixel:.0f} B/px estimated, "
            f"{time.perf_counter() - started:.1f} s)",
            flush=True,
        )


def run_child(
    clip: Path, model: str, chunk: int | None, tile: int, threads: int, *extra: str, out: Path | None = None
) -> dict:
    out = out or clip.with_name(clip.stem + ".out.mp4")
    cmd = [sys.executable, str(HERE), "_child", str(clip), str(out), "--model", model, "--tile", str(tile)]
    cmd += ["--threads", str(threads), *extra] + (["--chunk", str(chunk)] if chunk else [])
    res = subprocess.run([*cmd, "--spawned", repr(time.time())], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def pipeline(args: argparse.Namespace) -> None:
    """Start-up and the time around the model, I/O threads on and off, interleaved."""
    clip = args.clip or HERE.parents[1] / "docs" / "sample" / "bbb_320x180_2s.mp4"
    end = ["--end", str(args.end)] if args.end else []
    depth = ["--queue-depth", str(args.queue_depth)] if args.queue_depth else []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for mode in args.io_threads.split(","):
                out = Path(tmp) / f"out-{mode}.mp4"
                r = run_child(
                    clip, args.model, args.chunk, args.tile, args.threads, "--io-threads", mode, *end, *depth,
                    out=out,
                )  # fmt: skip
                print(f"run {repeat + 1} io-threads {mode}: {json.dumps(r)}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["memory", "overhead", "chunks", "tiles", "pipeline", "_child"])
    p.add_argument("clip", nargs="?", type=Path)
    p.add_argument("out", nargs="?", type=Path)
    p.add_argument("--model", default="toy")
    p.add_argument("--size", default="128x96", help="WxH of the generated clips")
    p.add_argument("--frames", type=int, default=24, help="frames for overhead / chunks")
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--values", default="5,9,17,33", help="chunk values for `chunks`")
    p.add_argument("--tile", type=int, default=None, help="0 = off, -1 = auto; default: off, pipeline: auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--end", type=float, default=None, help="restore up to this time (s); pipeline: 1")
    p.add_argument("--io-threads", default="on", help="on, off, or (pipeline) a list: on,off")
    p.add_argument("--queue-depth", type=int, default=None, help="default: one chunk")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--spawned", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.what == "_child":
        child(args)
        return
    args.tile = (-1 if args.what == "pipeline" else 0) if args.tile is None else args.tile
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.what == "tiles":
        tiles(args, width, height)
        return
    if args.what == "pipeline":
        args.end = 1.0 if args.end is None and args.clip is None else args.end
        pipeline(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.what == "memory":
            rows = []
            for n in (100, 1000):
                clip = make_clip(folder / f"clip{n}.mp4", n, width, height)
                io = ("--io-threads", args.io_threads)
                r = run_child(clip, args.model, args.chunk, args.tile, args.threads, *io)
                rows.append(r)
                print(f"{n:5d} frames {width}x{height}: {json.dumps(r)}", flush=True)
            ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
            print(f"peak RSS 1000 / 100 frames = {ratio:.3f}")
        elif args.what == "overhead":
            clip = make_clip(folder / "clip.mp4", args.frames, width, height)
            r = run_child(clip, args.model, args.chunk, args.tile, args.threads)
            share = r["model_seconds"] / r["seconds"]
            print(f"{args.model} {args.frames} frames {width}x{height}: {json.dumps(r)}")
            print(f"model share of wall time = {share:.1%}; fps = {r['frames'] / r['seconds']:.2f}")
        else:
            clip = make_clip(folder / "clip.mp4", args.frames, width, height)
            for value in (int(v) for v in args.values.split(",")):
                r = run_child(clip, args.model, value, args.tile, args.threads)
                fps = r["frames"] / r["seconds"]
                print(f"{args.model} chunk {value:3d}: {fps:.2f} fps, {json.dumps(r)}", flush=True)


if __name__ == "__main__":
    main()
