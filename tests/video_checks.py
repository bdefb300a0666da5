"""Checks shared by the video tests: pass a clip through reader and writer, list packets, compare images."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from fmanetpp_cli.video import VideoReader, VideoWriter, WriteResult, probe


def passthrough(src: Path, dst: Path, **writer_kw: object) -> tuple[list[int], WriteResult]:
    """Copy every frame of ``src`` into ``dst`` through the reader and writer; return (pts, result)."""
    info = probe(src)
    start, end = writer_kw.get("start"), writer_kw.get("end")
    pts = []
    with (
        VideoReader(src, info=info, start=start, end=end) as reader,  # type: ignore[arg-type]
        VideoWriter(dst, source=src, info=info, **writer_kw) as writer,  # type: ignore[arg-type]
    ):
        for frame in reader:
            writer.write(frame.image, frame.pts)
            pts.append(frame.pts)
        result = writer.commit()
    return pts, result


def packets(path: Path, kind: str, index: int = 0) -> list[tuple[bytes, float | None, float]]:
    """(payload, pts seconds, duration seconds) of every non-empty packet of one stream."""
    out = []
    with av.open(str(path)) as c:
        s = getattr(c.streams, kind)[index]
        for p in c.demux(s):
            if p.size == 0:
                continue
            tb = p.time_base
            out.append((bytes(p), None if p.pts is None else float(p.pts * tb), float(p.duration * tb)))
    return out


def shown_span(path: Path) -> float:
    """Seconds from the first video frame shown to the end of the last one (packet pts + duration)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        spans = [(p.pts, p.pts + p.duration) for p in c.demux(s) if p.size and p.pts is not None]
        return float((max(e for _, e in spans) - min(b for b, _ in spans)) * s.time_base)


def video_times(path: Path) -> list[float]:
    """Times (s) of every frame the reader yields."""
    with VideoReader(path) as r:
        return [f.time for f in r]


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical arrays)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def leftovers(folder: Path) -> list[str]:
    """Temporary ``.part`` files a writer left behind in ``folder`` (there should be none)."""
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


class StopAfter:
    """``on_progress`` that raises KeyboardInterrupt (a Ctrl-C) once ``frames`` frames are done."""

    def __init__(self, frames: int) -> None:
        self.frames = frames

    def __call__(self, done: int, total: int | None) -> None:
        if done >= self.frames:
            raise KeyboardInterrupt


def content(path: Path) -> tuple[list[tuple[int, bytes]], list[tuple[bytes, float | None, float]]]:
    """Every decoded video frame (pts, RGB bytes) and every audio packet of a file."""
    with av.open(str(path)) as c:
        frames = [(f.pts, f.to_ndarray(format="rgb24").tobytes()) for f in c.decode(video=0)]
    return frames, packets(path, "audio")
