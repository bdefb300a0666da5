"""Carry a source's non-video streams (audio, subtitles, attachments) and chapters into an output file.

`AuxCopier` owns a second demuxer on the source. `VideoWriter` calls `pump(t)` after each video frame it
encodes, so audio and subtitle packets up to time ``t`` are muxed alongside the video (bounded memory,
properly interleaved output), then `finish()` copies the rest.

Audio and subtitle packets are copied untouched (same bytes, same timestamps, only shifted when a time
range is cut). When the output container cannot hold a codec, audio is transcoded (AAC for mp4/mov,
FLAC for Matroska, Opus for WebM) and text subtitles are converted (mov_text for mp4/mov, SubRip for
Matroska, WebVTT for WebM); bitmap subtitles that the container cannot hold are dropped. Every such
change is reported through the ``warn`` callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from fmanetpp_cli.errors import VideoWriteError
from fmanetpp_cli.video.info import VideoInfo, open_input
from fmanetpp_cli.video.verify import write_failure

_logger = logging.getLogger(__name__)

_AUDIO_FALLBACK = {"mp4": "aac", "mov": "aac", "matroska": "flac", "webm": "libopus"}
_TEXT_SUBTITLE_FALLBACK = {"mp4": "mov_text", "mov": "mov_text", "matroska": "subrip", "webm": "webvtt"}
# The smallest ASS header FFmpeg's text subtitle encoders accept (they all convert through ASS).
ASS_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, "
    b"Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, "
    b"Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)
_TEXT_SUBTITLES = ("subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text")


class _Route:
    """Where packets of one source stream go, and how (copy or transcode)."""

    def __init__(self, src: Any, dst: Any, mode: str) -> None:
        self.src = src
        self.dst = dst
        self.mode = mode  # "copy" | "audio" | "subtitle"
        self.resampler: Any = None


def _audio_settings(codec: str, source: Any) -> dict[str, Any]:
    """Sample rate, layout and sample format for re-encoding ``source`` audio with ``codec``.

    Keeps the source's rate and layout where the encoder allows (Opus takes only 48/24/16/12/8 kHz) and
    opens a scratch encoder with them, so an impossible combination raises here.
    """
    if source is None or not source.sample_rate:
        # A damaged header can leave a stream without a decoder (or without a rate): nothing to convert.
        raise ValueError("the source stream has no usable audio decoder")
    enc = av.codec.Codec(codec, "w")
    rate = source.sample_rate
    rates = list(enc.audio_rates or [])
    if rates and rate not in rates:
        higher = [r for r in rates if r >= rate]
        rate = min(higher) if higher else max(rates)
    formats = [f.name for f in (enc.audio_formats or [])]
    fmt = formats[0] if formats else "fltp"
    scratch: Any = av.codec.CodecContext.create(codec, "w")
    scratch.sample_rate = rate
    scratch.layout = source.layout
    scratch.format = fmt
    scratch.time_base = Fraction(1, rate)
    scratch.open()
    return {"rate": rate, "layout": source.layout, "format": fmt}


class AuxCopier:
    """Copy the audio and subtitle streams and the chapters of ``source`` into ``container``.

    Args:
        source: the source file (opened a second time here, for demuxing only).
        info: its `VideoInfo`.
        container: the output container, before its header is written.
        fmt: the output muxer name (``"mp4"``, ``"matroska"``, ...).
        options: the `EncodeOptions` (``copy_audio``, ``copy_subtitles``, ``copy_metadata``).
        warn: called with one line for each stream that could not be copied as is.
        output: the output the user asked for, named when muxing into ``container`` fails.
    """

    def __init__(
        self,
        *,
        source: Path,
        info: VideoInfo,
        container: Any,
        fmt: str,
        options: Any,
        warn: Callable[[str], None],
        output: Path | None = None,
    ) -> None:
        self.output = output
        self.info = info
        self.out = container
        self.fmt = fmt
        self.warn = warn
        self.copy_metadata = bool(options.copy_metadata)
        self.audio_copied = 0
        self.audio_transcoded = 0
        self.subtitles_copied = 0
        self.chapters_written = 0
        # Audio packets muxed, per output stream index: the writer checks the file holds as many.
        self.audio_packets: dict[int, int] = {}
        self._start: float | None = None
        self._end: float | None = None
        self._src = open_input(source)
        self._routes: dict[int, _Route] = {}
        if options.copy_audio:
            for s in self._src.streams.audio:
                self._add_audio(s)
        if options.copy_subtitles:
            for s in self._src.streams.subtitles:
                self._add_subtitle(s)
        if fmt == "matroska" and options.copy_subtitles:
            for s in self._src.streams.attachments:
                self._add_attachment(s)
        for s in self._src.streams.data:
            # Telemetry, timecode and similar tracks: muxers rarely take them (mp4/mkv refuse a generic
            # data track at header time, which would fail the whole file), so they are left out.
            self.warn(f"data stream {s.index}: not copied (data tracks are not carried over)")
        streams = [r.src for r in self._routes.values()]
        self._iter: Iterator[Any] | None = iter(self._src.demux(*streams)) if streams else None
        self._next: Any = None

    # -- stream setup ----------------------------------------------------------------------------
    def _label(self, s: Any) -> str:
        lang = s.metadata.get("language")
        codec = s.codec_context.name if s.codec_context is not None else "unknown codec"
        return f"{s.type} stream {s.index} ({codec}{', ' + lang if lang else ''})"

    def _finish_stream(self, src: Any, dst: Any) -> None:
        if self.copy_metadata:
            dst.metadata.update({k: v for k, v in src.metadata.items() if k.lower() not in ("vendor_id",)})
        dst.disposition = src.disposition.value

    def _copy(self, s: Any) -> bool:
        """Add an output stream that takes ``s``'s packets unchanged; False when the muxer refuses it."""
        try:
            # PyAV asks the muxer (avformat_query_codec) and raises ValueError for a codec it cannot hold.
            dst = self.out.add_stream_from_template(s)
        except (ValueError, av.error.FFmpegError) as e:
            _logger.debug("cannot copy %s: %s", self._label(s), e)
            return False
        dst.time_base = s.time_base
        self._finish_stream(s, dst)
        self._routes[s.index] = _Route(s, dst, "copy")
        return True

    def _add_audio(self, s: Any) -> None:
        if self._copy(s):
            self.audio_copied += 1
            return
        name = s.codec_context.name if s.codec_context is not None else "unknown"
        target = _AUDIO_FALLBACK.get(self.fmt, "aac")
        try:
            settings = _audio_settings(target, s.codec_context)
        except (ValueError, av.error.FFmpegError) as e:
            # Checked on a scratch encoder first: a stream added to the output cannot be taken back.
            self.warn(
                f"{self._label(s)}: the {self.fmt} container cannot hold {name} and {target} "
                f"failed ({e}), dropped"
            )
            return
        dst = self.out.add_stream(target, rate=settings["rate"])
        ctx = dst.codec_context
        ctx.layout = settings["layout"]
        ctx.format = settings["format"]
        ctx.time_base = Fraction(1, settings["rate"])
        ctx.open()
        self._finish_stream(s, dst)
        route = _Route(s, dst, "audio")
        route.resampler = av.AudioResampler(
            format=ctx.format, layout=ctx.layout, rate=ctx.sample_rate, frame_size=ctx.frame_size or None
        )
        self._routes[s.index] = route
        self.audio_transcoded += 1
        self.warn(f"{self._label(s)}: the {self.fmt} container cannot hold {name}, transcoded to {target}")

    def _add_subtitle(self, s: Any) -> None:
        if self._copy(s):
            self.subtitles_copied += 1
            return
        name = s.codec_context.name if s.codec_context is not None else "unknown"
        target = _TEXT_SUBTITLE_FALLBACK.get(self.fmt)
        if name not in _TEXT_SUBTITLES or target is None:
            self.warn(f"{self._label(s)}: the {self.fmt} container cannot hold {name} subtitles, dropped")
            return
        # The source decoder is not open yet, so its own ASS header is not known here.
        header = s.codec_context.subtitle_header or ASS_HEADER
        try:
            scratch: Any = av.codec.CodecContext.create(target, "w")  # a stream added cannot be taken back
            scratch.subtitle_header = header
            scratch.time_base = Fraction(1, 1000)
            scratch.open()
        except (ValueError, av.error.FFmpegError) as e:
            self.warn(f"{self._label(s)}: cannot convert to {target} for {self.fmt} ({e}), dropped")
            return
        dst = self.out.add_stream(target)
        dst.codec_context.subtitle_header = header
        dst.codec_context.time_base = Fraction(1, 1000)
        dst.time_base = Fraction(1, 1000)
        dst.codec_context.open()
        self._finish_stream(s, dst)
        self._routes[s.index] = _Route(s, dst, "subtitle")
        self.subtitles_copied += 1
        self.warn(f"{self._label(s)}: the {self.fmt} container cannot hold {name}, converted to {target}")

    def _add_attachment(self, s: Any) -> None:
        try:
            dst = self.out.add_stream_from_template(s)
            dst.metadata.update(dict(s.metadata))
        except (ValueError, av.error.FFmpegError) as e:
            self.warn(f"attachment stream {s.index}: not copied ({e})")

    # -- range and chapters ----------------------------------------------------------------------
    def set_range(self, start: float | None, end: float | None) -> None:
        """Keep only packets with ``start <= t < end`` (absolute source seconds) and shift them by ``start``.

        Called once, before the first packet is muxed.
        """
        self._start = start
        self._end = end
        if start is not None and start > 0 and self._iter is not None:
            # Seek a second early: the demuxer seeks on the video's key frames, and audio packets for
            # `start` may sit in the file a little before the video packet they play with.
            self._src.seek(int(max(0.0, start - 1.0) * av.time_base), backward=True, any_frame=False)
            self._iter = iter(self._src.demux(*[r.src for r in self._routes.values()]))
        if self.copy_metadata:
            self._set_chapters()

    def _set_chapters(self) -> None:
        chapters: list[dict[str, Any]] = []
        offset = Fraction(self._start) if self._start is not None else Fraction(0)
        end = Fraction(self._end) if self._end is not None else None
        for ch in self._src.chapters():
            tb = Fraction(ch["time_base"] or 1)
            c_start, c_end = ch["start"] * tb, ch["end"] * tb
            if end is not None:
                c_end = min(c_end, end)
            if c_end <= offset or c_start >= c_end:
                continue
            c_start = max(c_start, offset)
            chapters.append(
                {
                    "id": len(chapters) + 1,
                    "start": round((c_start - offset) / tb),
                    "end": round((c_end - offset) / tb),
                    "time_base": tb,
                    "metadata": dict(ch.get("metadata") or {}),
                }
            )
        if chapters:
            self.out.set_chapters(chapters)
        self.chapters_written = len(chapters)

    # -- packet flow -----------------------------------------------------------------------------
    @staticmethod
    def _time(packet: Any) -> float | None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None or packet.time_base is None:
            return None
        return float(ts * packet.time_base)

    def pump(self, until: float | None) -> None:
        """Mux every source packet with time <= ``until`` seconds (None: all that remain)."""
        if self._iter is None:
            return
        try:
            while True:
                if self._next is None:
                    self._next = next(self._iter, None)
                    if self._next is None:
                        self._iter = None
                        return
                packet = self._next
                t = self._time(packet)
                if until is not None and t is not None and t > until:
                    return
                self._next = None
                self._handle(packet, t)
        except av.error.FFmpegError as e:
            raise VideoWriteError(f"{self.info.path}: copying audio/subtitles failed ({e})") from e

    def _handle(self, packet: Any, t: float | None) -> None:
        route = self._routes.get(packet.stream.index)
        if route is None or packet.size == 0:
            return  # flush packets carry no data
        if t is not None:
            before = self._start is not None and t < self._start - 1e-6
            if before and not self._clip_cue_start(packet, route, t):
                return
            if self._end is not None and t >= self._end:
                return
        if route.mode == "copy":
            self._shift(packet, route.src.time_base)
            packet.stream = route.dst
            self._mux(route, [packet])
        elif route.mode == "audio":
            for frame in route.src.codec_context.decode(packet):
                self._transcode_audio(route, frame)
        else:
            self._convert_subtitle(route, packet)

    def _clip_cue_start(self, packet: Any, route: _Route, t: float) -> bool:
        """A subtitle cue that starts before the range but is still on screen at its start is kept,
        moved to the start and shortened. Returns False for packets to drop (audio, finished cues)."""
        if route.src.type != "subtitle" or not packet.duration or self._start is None:
            return False
        tb = Fraction(packet.time_base)
        late = round((Fraction(self._start) - Fraction(t)) / tb)
        if late >= packet.duration:
            return False
        packet.pts = (packet.pts if packet.pts is not None else packet.dts) + late
        packet.dts = packet.pts
        packet.duration = packet.duration - late
        return True

    def _shift(self, packet: Any, tb: Fraction) -> None:
        if not self._start:
            return
        off = round(Fraction(self._start) / Fraction(tb))
        if packet.pts is not None:
            packet.pts -= off
        if packet.dts is not None:
            packet.dts -= off

    def _transcode_audio(self, route: _Route, frame: Any | None) -> None:
        if frame is not None and frame.pts is not None:
            tb = frame.time_base
            rate = Fraction(1, route.dst.codec_context.sample_rate)
            shifted = Fraction(frame.pts) * tb - Fraction(self._start or 0)
            frame.pts = round(shifted / rate)
            frame.time_base = rate
        for f in route.resampler.resample(frame):
            self._mux(route, route.dst.encode(f))
        if frame is None:
            self._mux(route, route.dst.encode(None))

    def _mux(self, route: _Route, packets: list[Any]) -> None:
        """Mux packets into ``route``'s output stream, counting the audio ones that carry data."""
        with_data = sum(p.size > 0 for p in packets)  # counted first: the muxer may take the payloads
        try:
            self.out.mux(packets)
        except (av.error.FFmpegError, OSError) as e:
            raise write_failure(
                self.output or Path(self.out.name), f"writing {route.dst.type} packets", e
            ) from e
        if route.src.type == "audio":
            index = route.dst.index
            self.audio_packets[index] = self.audio_packets.get(index, 0) + with_data

    def _convert_subtitle(self, route: _Route, packet: Any) -> None:
        subs = route.src.codec_context.decode2(packet)
        if subs is None:  # the decoder needs more data, or the packet held no cue
            return
        out_packet = route.dst.codec_context.encode_subtitle(subs)
        start = Fraction(packet.pts if packet.pts is not None else packet.dts) * Fraction(packet.time_base)
        start -= Fraction(self._start or 0)
        ms = Fraction(1, 1000)
        out_packet.pts = round(start / ms)
        out_packet.dts = out_packet.pts
        if packet.duration:
            out_packet.duration = round(Fraction(packet.duration) * Fraction(packet.time_base) / ms)
        out_packet.time_base = ms
        out_packet.stream = route.dst
        self._mux(route, [out_packet])

    def finish(self) -> None:
        """Copy what remains (up to the range end) and flush the audio transcoders."""
        self.pump(None)
        for route in self._routes.values():
            if route.mode == "audio":
                try:
                    for frame in route.src.codec_context.decode(None):
                        self._transcode_audio(route, frame)
                    self._transcode_audio(route, None)
                except av.error.FFmpegError as e:
                    raise VideoWriteError(f"{self.info.path}: transcoding audio failed ({e})") from e

    def close(self) -> None:
        """Close the second demuxer."""
        if self._src is not None:
            self._src.close()
            self._src = None
