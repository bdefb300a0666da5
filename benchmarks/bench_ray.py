"""Folder restores on Ray: 2 local workers against 1, on a CPU-bound folder (``restore --ray``).

Builds a folder of synthetic clips (moving gradients, PyAV), starts one local Ray instance with 2 CPUs on
127.0.0.1, and restores the folder with 1 worker, then 2 workers (one torch thread each), with the bundled
default model (or ``--model``). Each run's time includes creating its workers (each receives the model
once); Ray's own start-up is timed apart. Prints one JSON object; the figure goes to docs/benchmarks.md.

Usage::

    python benchmarks/bench_ray.py [--files 4] [--frames 12] [--size 96x64] [--model NAME|PATH]
    python benchmarks/bench_ray.py --split --frames 120 [--size 96x64]   # one clip split over the workers

``--split`` restores one clip of ``--frames`` frames with ``restore_video_ray`` (split mode: the driver
decodes and encodes, the workers restore segments) instead of a folder.

Machine load matters on a shared machine: say what else ran when quoting a figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import av
import numpy as np


def make_folder(root: Path, files: int, frames: int, width: int, height: int) -> Path:
    """``files`` H.264 clips of ``frames`` frames each, different content per file."""
    root.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    for f in range(files):
        with av.open(str(root / f"clip{f}.mp4"), "w") as out:
            stream = out.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i in range(frames):
                phase = (i + 7 * f) / 6.0
                rgb = np.stack(
                    [
                        127 + 120 * np.sin(x / 9 + phase),
                        127 + 120 * np.cos(y / 7 - phase),
                        127 + 120 * np.sin((x + y) / 13 + 2 * phase),
                    ],
                    axis=-1,
                ).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", default="96x64")
    parser.add_argument("--model", default=None, help="a model name or weights file (default: bundled)")
    parser.add_argument("--split", action="store_true", help="one clip split over the workers")
    ns = parser.parse_args()
    width, height = (int(v) for v in ns.size.split("x"))

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local instance on 127.0.0.1
    import ray
    import torch

    from fmanetpp_cli.checkpoints import load_model
    from fmanetpp_cli.checkpoints.resolve import resolve_weights
    from fmanetpp_cli.pipeline import RestoreOptions
    from fmanetpp_cli.pipeline.distributed import RayCluster, restore_folder_ray, restore_video_ray

    torch.set_num_threads(1)
    model = load_model(resolve_weights(ns.model, None, offline=True), device="cpu")
    options = RestoreOptions(device="cpu", tile=0)
    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    try:
        folder = make_folder(work / "in", 1 if ns.split else ns.files, ns.frames, width, height)
        started = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        ray_start = time.perf_counter() - started
        runs = {}
        for workers in (1, 2):
            cluster = RayCluster(cpus_per_worker=1, num_workers=workers)
            t0 = time.perf_counter()
            if ns.split:
                out = work / f"out{workers}.mp4"
                frames = restore_video_ray(folder / "clip0.mp4", out, options, model, cluster=cluster).frames
            else:
                report = restore_folder_ray(folder, work / f"out{workers}", options, model, cluster=cluster)
                assert report.exit_code == 0, [i.reason for i in report.items]
                frames = report.frames
            seconds = time.perf_counter() - t0
            fps = round(frames / seconds, 3)
            runs[workers] = {"seconds": round(seconds, 2), "frames": frames, "fps": fps}
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "mode": "split" if ns.split else "folder",
        "files": 1 if ns.split else ns.files,
        "frames_per_file": ns.frames,
        "size": ns.size,
        "model": ns.model or "bundled default",
        "ray_start_seconds": round(ray_start, 2),
        "runs": runs,
        "speedup_2_over_1": round(runs[1]["seconds"] / runs[2]["seconds"], 2),
        "load_average_after": os.getloadavg(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
