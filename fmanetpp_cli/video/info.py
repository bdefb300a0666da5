"""Probe a video file: everything the reader, the writer and the pipeline need to know up front.

`probe(path)` opens the container with PyAV, picks the first video stream and summarises it in a frozen
`VideoInfo`. It decodes at most one frame (to read the display matrix, which PyAV exposes on frames, not
on streams), so it is cheap even for long files.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from fmanetpp_cli.errors import UnsupportedVideoError, VideoOpenError

_logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# Container formats whose declared frame count comes from a per-sample index (mp4/mov `stsz`/`stts`, avi
# `idx1`): the count is exact, so a shortfall when decoding means the file is damaged.
_INDEXED_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "avi")


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """One non-video stream (audio or subtitle) of the source.

    Attributes:
        index: stream index in the container.
        kind: ``"audio"`` or ``"subtitle"``.
        codec: codec name (``"aac"``, ``"subrip"``, ...).
        language: ISO 639 code from the stream metadata, or None.
        title: stream title from the metadata, or None.
        channels: audio channel count (None for subtitles).
        layout: audio channel layout name, e.g. ``"5.1"`` (None for subtitles).
        sample_rate: audio sample rate in Hz (None for subtitles).
        metadata: the full stream metadata.
    """

    index: int
    kind: str
    codec: str
    language: str | None = None
    title: str | None = None
    channels: int | None = None
    layout: str | None = None
    sample_rate: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChapterInfo:
    """One chapter: start and end in seconds, and its title (None when it has none)."""

    start: float
    end: float
    title: str | None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HdrMetadata:
    """HDR10 static metadata found on the first frame (SMPTE ST 2086 and CTA-861.3).

    Attributes:
        primaries: mastering display primaries as CIE 1931 (x, y) for red, green, blue; None if absent.
        white_point: mastering display white point (x, y); None if absent.
        min_luminance: mastering display minimum luminance in cd/m2; None if absent.
        max_luminance: mastering display maximum luminance in cd/m2; None if absent.
        max_cll: maximum content light level in cd/m2; None if absent.
        max_fall: maximum frame-average light level in cd/m2; None if absent.
    """

    primaries: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] | None = None
    white_point: tuple[float, float] | None = None
    min_luminance: float | None = None
    max_luminance: float | None = None
    max_cll: int | None = None
    max_fall: int | None = None


@dataclass(frozen=True, slots=True)
class VideoInfo:
    """What `probe` learns about a file and its first video stream.

    Sizes are those of the decoded frames (``width`` x ``height``, what the reader yields); the display
    size is after applying ``rotation``. Times are in seconds, ``pts`` values in ``time_base`` units.

    Attributes:
        path: the probed file.
        container: FFmpeg demuxer name (``"mov,mp4,m4a,3gp,3g2,mj2"``, ``"matroska,webm"``, ...).
        video_index: index of the video stream in the container.
        width: coded frame width in pixels.
        height: coded frame height in pixels.
        display_width: width as shown by a player (swapped with height for 90/270 degree rotation).
        display_height: height as shown by a player.
        rotation: clockwise rotation a player applies to show the frame upright, one of 0, 90, 180, 270.
        fps: average frame rate as an exact fraction (guessed rate when the container gives none).
        time_base: the video stream's time base.
        frame_count: frames the container declares, or None when it declares none (e.g. Matroska).
        frame_count_exact: True when ``frame_count`` comes from a per-sample index (mp4/mov/avi).
        duration: video stream duration in seconds (container duration as fallback), or None.
        start_time: first presentation time of the video stream in seconds (often 0).
        codec: video codec name.
        pix_fmt: decoded pixel format (``"yuv420p"``, ``"yuv420p10le"``, ...).
        bit_depth: bits per colour sample of the decoded format (8, 10, 12, 16).
        color_range: AVColorRange value (0 unspecified, 1 limited/tv, 2 full/pc).
        color_primaries: AVColorPrimaries value (1 BT.709, 9 BT.2020, 2 unspecified, ...).
        color_trc: AVColorTransferCharacteristic value (1 BT.709, 16 PQ, 18 HLG, 2 unspecified, ...).
        colorspace: AVColorSpace (matrix coefficients) value (1 BT.709, 5/6 BT.601, 9 BT.2020 NCL, ...).
        audio: summaries of the audio streams, in container order.
        subtitles: summaries of the subtitle streams, in container order.
        metadata: container metadata (title, creation_time, ...).
        stream_metadata: metadata of the video stream (language, title, handler_name, ...).
        chapters: the chapters, in order.
        sample_aspect_ratio: pixel aspect ratio (e.g. 8/9 or 32/27 for anamorphic DVD video); None when
            square or unknown. ``display_width`` does not include it.
        file_end: where the file's longest stream ends, in seconds (container start + duration), or None.
        hdr: HDR10 mastering-display / content-light metadata of the first frame, or None.
    """

    path: Path
    container: str
    video_index: int
    width: int
    height: int
    display_width: int
    display_height: int
    rotation: int
    fps: Fraction
    time_base: Fraction
    frame_count: int | None
    frame_count_exact: bool
    duration: float | None
    start_time: float
    codec: str
    pix_fmt: str
    bit_depth: int
    color_range: int
    color_primaries: int
    color_trc: int
    colorspace: int
    audio: tuple[StreamSummary, ...] = ()
    subtitles: tuple[StreamSummary, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)
    stream_metadata: dict[str, str] = field(default_factory=dict)
    chapters: tuple[ChapterInfo, ...] = ()
    sample_aspect_ratio: Fraction | None = None
    file_end: float | None = None
    hdr: HdrMetadata | None = None

    @property
    def high_bit_depth(self) -> bool:
        """True when frames come out as uint16 (sources deeper than 8 bits)."""
        return self.bit_depth > 8

    @property
    def expected_frames(self) -> int | None:
        """Declared frame count, else an estimate from duration x fps, else None."""
        if self.frame_count is not None:
            return self.frame_count
        if self.duration is not None and self.fps > 0:
            return round(self.duration * self.fps)
        return None


def bit_depth_of(pix_fmt: str) -> int:
    """Bits per colour sample of an FFmpeg pixel format name (8 when unknown)."""
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, TypeError):
        return 8
    depths = [c.bits for c in fmt.components if not getattr(c, "is_alpha", False)]
    return max(depths) if depths else 8


def _rotation_from_frame(frame: av.VideoFrame) -> int:
    """Clockwise display rotation in {0, 90, 180, 270} from a frame's display matrix."""
    # FFmpeg reports the angle the matrix rotates the frame counter-clockwise, in [-180, 180]; a
    # player shows the frame rotated by the opposite angle, i.e. that many degrees clockwise.
    ccw = frame.rotation
    return int(round(-ccw / 90.0)) % 4 * 90


def _stream_summary(stream: Any) -> StreamSummary:
    meta = dict(stream.metadata)
    ctx = stream.codec_context
    codec = ctx.name if ctx is not None else "unknown"
    if stream.type == "audio":
        layout = ctx.layout.name if ctx is not None else None
        channels = ctx.layout.nb_channels if ctx is not None else None
        return StreamSummary(
            index=stream.index,
            kind="audio",
            codec=codec,
            language=meta.get("language"),
            title=meta.get("title"),
            channels=channels,
            layout=layout,
            sample_rate=ctx.sample_rate if ctx is not None else None,
            metadata=meta,
        )
    return StreamSummary(
        index=stream.index,
        kind=stream.type,
        codec=codec,
        language=meta.get("language"),
        title=meta.get("title"),
        metadata=meta,
    )


def _chapters(container: Any) -> tuple[ChapterInfo, ...]:
    out = []
    for ch in container.chapters():
        tb = ch["time_base"] or Fraction(1, 1)
        meta = dict(ch.get("metadata") or {})
        out.append(ChapterInfo(float(ch["start"] * tb), float(ch["end"] * tb), meta.get("title"), meta))
    return tuple(out)


def open_input(path: PathLike) -> Any:
    """Open ``path`` for reading with PyAV, translating every failure into a `VideoOpenError`.

    Raises:
        VideoOpenError: missing, empty, unreadable, or not a media container.
    """
    p = Path(path)
    if not p.exists():
        raise VideoOpenError(f"{p}: file not found")
    if p.is_dir():
        raise VideoOpenError(f"{p}: is a folder, not a video file")
    if p.stat().st_size == 0:
        raise VideoOpenError(f"{p}: file is empty")
    try:
        return av.open(str(p), mode="r")
    except PermissionError as e:
        raise VideoOpenError(f"{p}: permission denied") from e
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise VideoOpenError(f"{p}: not a readable video, or damaged/truncated ({reason})") from e


def probe(path: PathLike) -> VideoInfo:
    """Describe the first video stream of ``path`` and list its other streams, metadata and chapters.

    Args:
        path: a video file.

    Returns:
        The `VideoInfo` of the file.

    Raises:
        VideoOpenError: the file is missing, empty, unreadable or not a media container.
        UnsupportedVideoError: the container holds no video stream (e.g. audio only), or the video
            stream cannot be decoded by the bundled FFmpeg.
    """
    p = Path(path)
    container = open_input(p)
    try:
        videos = [s for s in container.streams.video if s.codec_context is not None]
        # Cover art in mp4/mkv is a one-picture "video" stream flagged attached_pic; it is not the video.
        videos = [s for s in videos if not s.disposition & av.stream.Disposition.attached_pic]
        if not videos:
            raise UnsupportedVideoError(f"{p}: no video stream (found {_describe_streams(container)})")
        vs = videos[0]
        ctx = vs.codec_context
        if not ctx.width or not ctx.height:
            raise UnsupportedVideoError(f"{p}: video stream {vs.index} has no frame size")
        first = _first_frame(container, vs, p)
        pix_fmt = first.format.name if first is not None else (ctx.pix_fmt or "yuv420p")
        rotation = _rotation_from_frame(first) if first is not None else 0
        width = first.width if first is not None else ctx.width
        height = first.height if first is not None else ctx.height
        tb = Fraction(vs.time_base) if vs.time_base else Fraction(1, 1000)
        fps = vs.average_rate or vs.guessed_rate or vs.base_rate or Fraction(25)
        start_time = float(vs.start_time * tb) if vs.start_time is not None else 0.0
        tagged = _tagged_duration(vs.metadata)
        file_end = None
        if container.duration is not None:
            file_end = ((container.start_time or 0) + container.duration) / av.time_base
        if vs.duration is not None:
            duration: float | None = float(vs.duration * tb)
        elif tagged is not None:
            # FFmpeg's Matroska muxer tags each track with the time its last frame ends (from 0).
            duration = tagged - start_time if tagged > start_time else tagged
        elif container.duration is not None:
            # Matroska has no per-stream duration: use the file's end, counted from this stream's start.
            file_start = (container.start_time or 0) / av.time_base
            duration = max(0.0, file_start + container.duration / av.time_base - start_time)
        else:
            duration = None
        frame_count = vs.frames if vs.frames and vs.frames > 0 else None
        fmt_name = container.format.name
        exact = frame_count is not None and any(n in _INDEXED_FORMATS for n in fmt_name.split(","))
        swap = rotation in (90, 270)
        return VideoInfo(
            path=p,
            container=fmt_name,
            video_index=vs.index,
            width=width,
            height=height,
            display_width=height if swap else width,
            display_height=width if swap else height,
            rotation=rotation,
            fps=Fraction(fps),
            time_base=tb,
            frame_count=frame_count,
            frame_count_exact=exact,
            duration=duration,
            start_time=start_time,
            codec=ctx.name,
            pix_fmt=pix_fmt,
            bit_depth=bit_depth_of(pix_fmt),
            color_range=int(first.color_range) if first is not None else int(ctx.color_range),
            color_primaries=int(ctx.color_primaries),
            color_trc=int(ctx.color_trc),
            colorspace=int(first.colorspace) if first is not None else int(ctx.colorspace),
            audio=tuple(_stream_summary(s) for s in container.streams.audio),
            subtitles=tuple(_stream_summary(s) for s in container.streams.subtitles),
            metadata=dict(container.metadata),
            stream_metadata=dict(vs.metadata),
            chapters=_chapters(container),
            sample_aspect_ratio=_sar(vs),
            file_end=file_end,
            hdr=_hdr_from_frame(first) if first is not None and _may_carry_hdr(ctx.name, pix_fmt) else None,
        )
    finally:
        container.close()


# Still-image codecs: their frames carry no HDR10 metadata, and the ICC profile of a PNG crashes PyAV
# 16.1 (a segfault when the side-data container is garbage-collected; skimage's astronaut.png).
_STILL_CODECS = frozenset({"png", "apng", "mjpeg", "jpegls", "jpeg2000", "tiff", "bmp", "webp", "gif", "qoi"})


def _may_carry_hdr(codec: str, pix_fmt: str) -> bool:
    """Whether a frame's side data is worth reading for HDR10 metadata (video codecs, 10 bits or more)."""
    return codec not in _STILL_CODECS and bit_depth_of(pix_fmt) > 8


def _hdr_from_frame(frame: av.VideoFrame) -> HdrMetadata | None:
    """Read AVMasteringDisplayMetadata / AVContentLightMetadata from a decoded frame's side data."""
    found: dict[str, Any] = {}
    side_data: Any = frame.side_data  # iterates SideData buffers (PyAV's stub says str keys)
    for sd in side_data:
        kind = getattr(sd.type, "name", str(sd.type))
        raw = bytes(sd)
        if kind == "MASTERING_DISPLAY_METADATA" and len(raw) >= 88:
            # 3 primaries x (x, y), white point (x, y), min and max luminance: 10 AVRationals, then
            # has_primaries and has_luminance.
            v = struct.unpack("<22i", raw[:88])
            q = [v[i] / v[i + 1] if v[i + 1] else 0.0 for i in range(0, 20, 2)]  # the 10 rationals
            if v[20]:
                found["primaries"] = ((q[0], q[1]), (q[2], q[3]), (q[4], q[5]))
                found["white_point"] = (q[6], q[7])
            if v[21]:
                found["min_luminance"], found["max_luminance"] = q[8], q[9]
        elif kind == "CONTENT_LIGHT_LEVEL" and len(raw) >= 8:
            found["max_cll"], found["max_fall"] = struct.unpack("<2I", raw[:8])
    return HdrMetadata(**found) if found else None


def _tagged_duration(meta: dict[str, str]) -> float | None:
    """Seconds from a Matroska ``DURATION`` tag such as ``00:01:02.500000000`` (None if absent or odd)."""
    for key, value in meta.items():
        if key.upper().split("-")[0] != "DURATION":
            continue
        parts = value.strip().split(":")
        try:
            seconds = 0.0
            for part in parts:
                seconds = seconds * 60 + float(part)
        except ValueError:
            return None
        return seconds
    return None


def _sar(stream: Any) -> Fraction | None:
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    if not sar or sar == 1:
        return None
    return Fraction(sar)


def _describe_streams(container: Any) -> str:
    kinds = [s.type for s in container.streams]
    return ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds)) or "no streams"


def _first_frame(container: Any, stream: Any, path: Path) -> av.VideoFrame | None:
    """Decode the first frame of ``stream`` (None when the stream yields no frame at all).

    The decode generator is closed here, before the caller closes the container: one left suspended
    and finalised later by the garbage collector crashes PyAV 16 (measured with still images).
    """
    frames = container.decode(stream)
    try:
        return next(frames, None)
    except av.error.FFmpegError as e:
        raise UnsupportedVideoError(f"{path}: cannot decode the video stream ({e})") from e
    finally:
        frames.close()
