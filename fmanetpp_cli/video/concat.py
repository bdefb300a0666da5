"""Join video-only segment files by stream copy, with the source's audio and subtitles, atomically.

A resumable restore (``pipeline/resume.py``) encodes its output as segments, each a `VideoWriter` file of
its own in the output's container (fresh encoder, so every segment starts on a key frame) that keeps the
source timestamps. `join_segments` copies their video packets untouched, in file (decode) order, into one
file, muxes the source's audio, subtitles and chapters beside them (`AuxCopier`, cut and shifted as
`VideoWriter` does for a ``start``/``end`` range), reads the file back (``verify.py``) and only then
renames it into place. The temporary file lives in the segments' folder, so a process killed mid-join
leaves nothing beside the output, and the finished segments stay for ``--resume``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from fmanetpp_cli.errors import VideoWriteError
from fmanetpp_cli.video._aux import AuxCopier
from fmanetpp_cli.video.info import VideoInfo
from fmanetpp_cli.video.options import EncodeOptions, container_for
from fmanetpp_cli.video.verify import check_written, read_back, write_failure
from fmanetpp_cli.video.writer import WriteResult, _clean_metadata, check_output


def _packets(path: Path, output: Path, limit: int | None = None) -> tuple[Any, Any, list[Any]]:
    """(container, video stream, its first ``limit`` packets with data) of one segment, left open."""
    try:
        seg = av.open(str(path), mode="r")
        stream = seg.streams.video[0]
        packets: list[Any] = []
        for p in seg.demux(stream):
            if p.size > 0 and p.pts is not None:
                packets.append(p)
                if limit is not None and len(packets) >= limit:
                    break
        return seg, stream, packets
    except (av.error.FFmpegError, OSError, IndexError) as e:
        raise VideoWriteError(
            f"{output}: its finished segment {path} cannot be read ({e}); run again to start afresh"
        ) from e


def _copy_stream(container: Any, template: Any, fmt: str, options: EncodeOptions, fps: Fraction) -> Any:
    """An output stream that takes ``template``'s packets unchanged.

    MP4/MOV get a copy of the template. Matroska/WebM take a track's default frame duration from the
    stream's frame rate, which only ``add_stream`` sets: there the stream is made with the encoder, opened,
    and given the template's parameters and header (``extradata``), so its packets decode unchanged.
    """
    if fmt not in ("matroska", "webm"):
        stream = container.add_stream_from_template(template)
        stream.time_base = template.time_base
        return stream
    src = template.codec_context
    stream = container.add_stream(options.codec, rate=fps)
    ctx = stream.codec_context
    for name in ("width", "height", "pix_fmt", "color_range", "color_primaries", "color_trc", "colorspace"):
        setattr(ctx, name, getattr(src, name))
    if src.sample_aspect_ratio is not None:
        ctx.sample_aspect_ratio = src.sample_aspect_ratio
    ctx.time_base = template.time_base
    stream.time_base = template.time_base
    ctx.options = options.codec_options()  # the segments' settings: the same header, profile and delay
    ctx.open()
    ctx.extradata = src.extradata
    return stream


def _reorder_depth(path: Path, output: Path) -> int:
    """How many places a packet of the segment sits after its frame's place in presentation order, at
    most (the B-frame delay, in frames)."""
    seg, _, packets = _packets(path, output)
    seg.close()
    rank = {pts: r for r, pts in enumerate(sorted(p.pts for p in packets))}
    return max((j - rank[p.pts] for j, p in enumerate(packets)), default=0)


class _Join:
    """The state of one join: the output container, its video stream and what went into it."""

    def __init__(
        self, tmp: Path, output: Path, source: Path, info: VideoInfo, options: EncodeOptions, template: Any
    ) -> None:
        self.tmp, self.output = tmp, output
        self.fmt = container_for(output)
        self.warnings: list[str] = []
        self.written: list[int] = []  # video pts muxed
        self.last_duration = 0
        self.time_base = Fraction(template.time_base)
        try:
            tmp.touch(exist_ok=False)
            self.container: Any = av.open(str(tmp), mode="w", format=self.fmt)
        except (av.error.FFmpegError, OSError) as e:
            raise VideoWriteError(f"{output.parent}: cannot create the output file there ({e})") from e
        # The video stream first, as VideoWriter orders them.
        try:
            self.stream = _copy_stream(self.container, template, self.fmt, options, info.fps)
        except (av.error.FFmpegError, ValueError) as e:
            raise VideoWriteError(f"{output}: cannot set up its video stream for the join ({e})") from e
        if options.copy_metadata:
            self.stream.metadata.update(_clean_metadata(info.stream_metadata))
            self.container.metadata.update(_clean_metadata(info.metadata))
        self.aux = AuxCopier(
            source=source, info=info, container=self.container, fmt=self.fmt, options=options,
            warn=self.warnings.append, output=output,
        )  # fmt: skip

    def mux(self, packet: Any, dts: int, offset: int, name: str) -> None:
        source_pts, duration = packet.pts, packet.duration
        packet.stream = self.stream
        packet.duration = duration  # assigning the stream drops it
        packet.pts = source_pts - offset
        packet.dts = dts - offset
        self.written.append(packet.pts)
        self.last_duration = duration or self.last_duration
        try:
            self.container.mux(packet)
        except (av.error.FFmpegError, ValueError, OSError) as e:
            raise write_failure(self.output, f"joining segment {name}", e) from e
        self.aux.pump(float(source_pts * self.time_base))

    def close(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.close()
            self.container = None
        with contextlib.suppress(Exception):
            self.aux.close()


def join_segments(
    segments: Sequence[Path],
    output: Path,
    *,
    source: Path,
    info: VideoInfo,
    options: EncodeOptions,
    overwrite: bool = False,
    start: float | None = None,
    end: float | None = None,
    warnings: Sequence[str] = (),
    frames: int | None = None,
) -> WriteResult:
    """Write ``output`` from the video packets of ``segments`` and the other streams of ``source``.

    Args:
        segments: the segment files, in order, all in one folder beside ``output`` (the temporary file is
            made there, then renamed to ``output``).
        output: the file to create.
        source: the input video (audio, subtitles, chapters, metadata).
        info: ``probe(source)``.
        options: the encoder settings the segments were written with (stream copying options, metadata).
        overwrite: replace an existing ``output``.
        start: the time range's start, as given to `VideoWriter`: the output is shifted to start at 0.
        end: the time range's end.
        warnings: the segments' warnings, repeated in the result.
        frames: the number of frames the segments must hold together (None: not checked). A segment that
            lost frames (a power cut before the disk had its data) fails here, before anything is renamed.

    Raises:
        VideoWriteError: no segment, a segment cannot be read, the muxer fails, or the file read back does
            not hold what was written. The temporary file is removed.
    """
    check_output(output, source, overwrite=overwrite)
    if not segments:
        raise VideoWriteError(f"{output}: no frame was written")
    tmp = segments[0].parent / f".{output.name}.{secrets.token_hex(4)}.part"
    end_time = None if end is None else info.start_time + end
    join: _Join | None = None
    opened: list[Any] = []  # the segments stay open until the output is closed (packets refer to them)
    try:
        offset: int | None = None
        # Decode times are made afresh for the whole file, as one encoder would: the packet in decode
        # place j gets the presentation time of frame j - depth. They rise, never pass their packet's pts,
        # and MP4 samples last exactly as long as their frames, whatever delay each segment started with.
        depth = max(_reorder_depth(path, output) for path in segments)
        earlier: list[int] = []  # the last ``depth`` presentation times of the segments before
        for path in segments:
            seg, template, packets = _packets(path, output)
            opened.append(seg)
            if join is None:
                join = _Join(tmp, output, source, info, options, template)
            if Fraction(template.time_base) != join.time_base or not packets:
                raise VideoWriteError(f"{output}: its finished segment {path} does not fit the others")
            times = sorted(p.pts for p in packets)
            if offset is None:
                offset = times[0] if start is not None else 0
                join.aux.set_range(float(times[0] * join.time_base) if start is not None else None, end_time)
            known = earlier + times
            step = times[1] - times[0] if len(times) > 1 else 1
            for j, packet in enumerate(packets):
                at = len(earlier) + j - depth
                dts = known[at] if at >= 0 else times[0] + at * step
                join.mux(packet, dts, offset, path.name)  # Matroska demuxes some dts as None
            earlier = known[len(known) - depth :] if depth else []
        assert join is not None
        if frames is not None and len(join.written) != frames:
            folder = segments[0].parent
            raise VideoWriteError(
                f"{output}: the finished segments in {folder} hold {len(join.written)} frames, not {frames}; "
                "run again to start afresh"
            )
        join.aux.finish()
        try:
            join.container.close()
        except (av.error.FFmpegError, OSError) as e:
            raise write_failure(output, "finishing the file", e) from e
        join.container = None
        join.aux.close()
        aux, written = join.aux, sorted(join.written)
        back = read_back(tmp, join.fmt, name=output, default_time_base=join.time_base)
        shift = check_written(
            output, back, written, join.time_base, aux.audio_packets, aux.audio_copied + aux.audio_transcoded
        )
        cc = join.stream.codec_context
        result = WriteResult(
            path=output, frames=len(written), codec=options.codec, pix_fmt=back.pix_fmt,
            width=cc.width, height=cc.height,
            duration=float((written[-1] + join.last_duration - written[0]) * join.time_base),
            audio_copied=aux.audio_copied, audio_transcoded=aux.audio_transcoded,
            subtitles_copied=aux.subtitles_copied, chapters=aux.chapters_written,
            size_bytes=tmp.stat().st_size, warnings=[*warnings, *join.warnings], start_shift=shift,
        )  # fmt: skip
        try:
            os.replace(tmp, output)
        except OSError as e:
            raise write_failure(output, "moving the finished file into place", e) from e
    except BaseException:
        if join is not None:
            join.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        for seg in opened:
            seg.close()
    return result
