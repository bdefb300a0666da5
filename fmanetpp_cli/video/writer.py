"""Encode restored frames into a new file, carrying over everything else of the source, atomically.

`VideoWriter` re-encodes the video (frames handed in as numpy RGB with their source pts) and copies the
rest of the source: every audio stream packet for packet (transcoded, with a warning, only when the
output container cannot hold the codec), subtitle streams, chapters, container and stream metadata, and
the rotation (applied to the pixels so the file displays as the source does). Audio and subtitle packets
are read from a second demuxer on the source and muxed as the video advances, so memory stays bounded
whatever the length of the video.

The file is written to a hidden temporary name beside the output (``.<name>.<random>.part``) and only
`commit` renames it into place, after re-probing it: the number of video packets and their timestamps,
the number of audio streams and of packets in each, must match what was written. Any failure removes the
temporary file; the source is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np

from fmanetpp_cli.errors import ConfigError, OutputExistsError, VideoWriteError
from fmanetpp_cli.video._aux import AuxCopier
from fmanetpp_cli.video._convert import array_to_frame
from fmanetpp_cli.video.info import PathLike, VideoInfo, bit_depth_of, probe
from fmanetpp_cli.video.options import (
    EncodeOptions,
    choose_pix_fmt,
    container_for,
    full_chroma_for_odd_size,
    x265_hdr_params,
)
from fmanetpp_cli.video.verify import check_written, read_back, write_failure

_logger = logging.getLogger(__name__)


@dataclass(slots=True)
class WriteResult:
    """What `VideoWriter.commit` produced.

    Attributes:
        path: the final output file.
        frames: video frames written (and verified in the file).
        codec: video encoder used.
        pix_fmt: pixel format encoded.
        width: encoded width (after rotation was applied to the pixels).
        height: encoded height.
        duration: video duration in seconds, from the first frame's pts to the end of the last frame.
        audio_copied: audio streams copied packet for packet.
        audio_transcoded: audio streams re-encoded because the container cannot hold their codec.
        subtitles_copied: subtitle streams carried over.
        chapters: chapters written.
        size_bytes: size of the output file.
        warnings: one line per thing that could not be carried over as is.
        start_shift: seconds the muxer moved every stream by (Matroska/WebM cannot store negative
            times, so AAC/Opus priming shifts the whole file a little; sync is unchanged).
    """

    path: Path
    frames: int
    codec: str
    pix_fmt: str
    width: int
    height: int
    duration: float
    audio_copied: int = 0
    audio_transcoded: int = 0
    subtitles_copied: int = 0
    chapters: int = 0
    size_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    start_shift: float = 0.0


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(output: PathLike, source: PathLike | None = None, *, overwrite: bool = False) -> None:
    """The checks `VideoWriter` makes on its output path before encoding anything (cheap, no file made).

    Raises:
        OutputExistsError: ``output`` is the source, a folder, or exists and ``overwrite`` is False.
        VideoWriteError: the output folder is missing or not writable.
    """
    out = Path(output)
    if source is not None and _same_file(out, Path(source)):
        raise OutputExistsError(
            f"{out}: the output is the input file; choose another output path", overwritable=False
        )
    if out.is_dir():
        raise OutputExistsError(f"{out}: is a folder; give a file name for the output", overwritable=False)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out}: output already exists")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise VideoWriteError(f"{folder}: output folder does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise VideoWriteError(f"{folder}: output folder is not writable")


class VideoWriter:
    """Write restored frames to ``output``, copying audio, subtitles, metadata from ``source``.

    Typical use (the pipeline)::

        info = probe(src)
        with VideoWriter(out, source=src, info=info, options=EncodeOptions(codec="libx264"),
                         overwrite=False, width=4 * info.width, height=4 * info.height) as writer:
            for frame in reader:
                writer.write(restore(frame.image), frame.pts)
            result = writer.commit()

    Args:
        output: the file to create; its extension picks the container (.mp4, .m4v, .mov, .mkv, .webm).
        source: the input video (audio, subtitles, chapters and metadata come from it). None writes
            the video alone.
        info: `probe(source)`; probed here when None and a source is given. Gives the time base, frame
            rate, colour properties, bit depth and rotation of the output.
        options: encoder settings.
        overwrite: replace an existing ``output`` (never the source).
        width: width of the frames that will be written (before rotation); default ``info.width``.
        height: height of the frames that will be written; default ``info.height``.
        start: the start of the time range the frames come from, in seconds from the start of the source
            video stream, as given to `VideoReader` (None: the whole file). With a range, the output is
            shifted to start at 0 and audio/subtitles/chapters are cut to the range.
        end: the end of that time range in seconds (None: to the end of the source).
        label: the file named in error messages, when ``output`` is one part of it (a resumable
            restore's segment, ``pipeline/resume.py``); default ``output``.

    Raises:
        ConfigError: unsupported output extension.
        OutputExistsError: ``output`` exists and ``overwrite`` is False, or ``output`` is the source.
        VideoWriteError: the output folder is missing or not writable, or the encoder cannot start.
    """

    def __init__(
        self,
        output: PathLike,
        *,
        source: PathLike | None = None,
        info: VideoInfo | None = None,
        options: EncodeOptions | None = None,
        overwrite: bool = False,
        width: int | None = None,
        height: int | None = None,
        start: float | None = None,
        end: float | None = None,
        label: PathLike | None = None,
    ) -> None:
        self.output = Path(output)
        self.label = Path(label) if label is not None else self.output
        self.options = options if options is not None else EncodeOptions()
        self.format = container_for(self.output)
        if info is None and source is not None:
            info = probe(source)
        self.info = info
        self.source = Path(source) if source is not None else None
        source_path = self.source or (info.path if info is not None else None)
        try:
            check_output(self.output, source_path, overwrite=overwrite)
        except VideoWriteError as e:
            if self.label == self.output:
                raise
            # A segment of a resumable output: the user's file is the one to name.
            raise VideoWriteError(f"{self.label}: {e}") from e
        self.width = int(width if width is not None else (info.width if info else 0))
        self.height = int(height if height is not None else (info.height if info else 0))
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(f"{self.label}: frame size {self.width}x{self.height} is not valid")
        self.time_base = info.time_base if info is not None else Fraction(1, 1000)
        self.fps = info.fps if info is not None else Fraction(25)
        self.rotation = info.rotation if info is not None else 0
        self.start = start
        self.end = end
        self.warnings: list[str] = []
        self.frames_written = 0
        self._written_pts: list[int] = []
        # One frame is held back until the next one arrives, because its duration is the gap to the
        # next pts. It is held already converted, so callers may reuse their array.
        self._pending: tuple[av.VideoFrame, int] | None = None
        self._last_duration: int | None = None
        self._durations: dict[int, int] = {}  # output pts -> duration, until its packet is muxed
        self._first_pts: int | None = None
        self._offset_pts = 0  # subtracted from every video pts (non-zero only with a time range)
        self._done = False
        self._result: WriteResult | None = None
        self.tmp_path = self.output.parent / f".{self.output.name}.{secrets.token_hex(4)}.part"
        self._container: Any = None
        self._aux: AuxCopier | None = None
        try:
            self._open()
        except BaseException:
            self.abort()
            raise

    # -- setup -----------------------------------------------------------------------------------
    def _open(self) -> None:
        opts = self.options
        info = self.info
        try:
            # Create the temporary file now: it proves the folder is writable (os.access cannot see
            # read-only mounts or quotas) and reserves the name.
            self.tmp_path.touch(exist_ok=False)
            self._container = av.open(str(self.tmp_path), mode="w", format=self.format)
        except (av.error.FFmpegError, OSError) as e:
            raise VideoWriteError(f"{self.label}: cannot create the output file ({e})") from e
        out = self._container
        source_fmt = info.pix_fmt if info is not None else "yuv420p"
        self.pix_fmt = choose_pix_fmt(opts.codec, source_fmt, opts.pix_fmt)
        if info is not None and bit_depth_of(self.pix_fmt) < info.bit_depth:
            self._warn(
                f"{info.bit_depth}-bit source encoded as {self.pix_fmt} "
                f"({opts.codec} offers no deeper format)"
            )
        enc_w, enc_h = (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)
        if (enc_w % 2 or enc_h % 2) and opts.pix_fmt is None:
            self.pix_fmt = full_chroma_for_odd_size(opts.codec, self.pix_fmt, enc_w, enc_h)
        try:
            stream = out.add_stream(opts.codec, rate=self.fps)
        except (ValueError, av.error.FFmpegError) as e:
            raise ConfigError(
                f"{self.label}: the {self.format} container cannot hold {opts.codec} video"
            ) from e
        ctx = stream.codec_context
        ctx.width = enc_w
        ctx.height = enc_h
        ctx.pix_fmt = self.pix_fmt
        ctx.time_base = self.time_base
        stream.time_base = self.time_base
        ctx.thread_count = opts.threads
        ctx.thread_type = "AUTO" if opts.codec not in ("libx264", "libx265") else ctx.thread_type
        if info is not None:
            ctx.color_range = info.color_range if not info.pix_fmt.startswith("yuvj") else 2
            ctx.color_primaries = info.color_primaries
            ctx.color_trc = info.color_trc
            ctx.colorspace = info.colorspace
            if info.sample_aspect_ratio is not None:
                # Anamorphic pixels stay anamorphic: the restored frame is scaled alike on both axes.
                ctx.sample_aspect_ratio = info.sample_aspect_ratio
        ctx.options = self._encoder_options()
        try:
            # Open now, so a missing GPU (NVENC) or a size the encoder refuses fails before any work.
            ctx.open()
        except (av.error.FFmpegError, ValueError) as e:
            hint = " (NVENC needs an NVIDIA GPU and driver)" if opts.codec.endswith("_nvenc") else ""
            raise VideoWriteError(
                f"{self.label}: the {opts.codec} encoder cannot start at {enc_w}x{enc_h} {self.pix_fmt}"
                f"{hint} ({e})"
            ) from e
        if info is not None and opts.copy_metadata:
            stream.metadata.update(_clean_metadata(info.stream_metadata))
        self._stream = stream
        self._enc_size = (enc_w, enc_h)
        if self.source is not None and info is not None:
            self._aux = AuxCopier(
                source=self.source,
                info=info,
                container=out,
                fmt=self.format,
                options=opts,
                warn=self._warn,
                output=self.label,
            )
        if info is not None and opts.copy_metadata:
            out.metadata.update(_clean_metadata(info.metadata))

    def _encoder_options(self) -> dict[str, str]:
        """The options' encoder settings plus the source's HDR10 metadata where the encoder takes it."""
        settings = self.options.codec_options()
        hdr = self.info.hdr if self.info is not None else None
        if hdr is None:
            return settings
        if self.options.codec == "libx265":
            extra = x265_hdr_params(hdr)
            if extra:
                settings["x265-params"] = ":".join(p for p in (settings.get("x265-params"), extra) if p)
        else:
            self._warn(
                f"HDR10 mastering-display/content-light metadata not written: {self.options.codec} "
                "cannot carry it here (use libx265)"
            )
        return settings

    def _warn(self, message: str) -> None:
        _logger.warning("%s", message)
        self.warnings.append(message)

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.commit()

    # -- writing ---------------------------------------------------------------------------------
    def write(self, image: np.ndarray, pts: int) -> None:
        """Queue one frame for encoding.

        Args:
            image: ``[H, W, 3]`` RGB, ``uint8`` (8-bit) or ``uint16`` (full 16-bit scale), of the size
                given to the constructor (before rotation).
            pts: its presentation time in the source's ``time_base`` (the reader's ``Frame.pts``).
                Must increase from frame to frame.

        Raises:
            VideoWriteError: wrong shape or dtype, a pts that does not increase, or an encoder failure.
        """
        if self._done:
            raise VideoWriteError(f"{self.label}: write() after commit() or abort()")
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != (self.height, self.width):
            raise VideoWriteError(
                f"{self.label}: frame of shape {tuple(image.shape)} does not match "
                f"[{self.height}, {self.width}, 3]"
            )
        if image.dtype not in (np.uint8, np.uint16):
            raise VideoWriteError(f"{self.label}: frames must be uint8 or uint16, got {image.dtype}")
        pts = int(pts)
        if self._first_pts is None:
            self._first_pts = pts
            if self.start is not None and self.info is not None:
                # With a time range the output starts at 0: shift every stream by the first frame's time.
                self._offset_pts = pts
                if self._aux is not None:
                    self._aux.set_range(float(pts * self.time_base), self.end_time)
            elif self._aux is not None:
                self._aux.set_range(None, self.end_time)
        if self._pending is not None:
            prev_pts = self._pending[1]
            if pts <= prev_pts:
                raise VideoWriteError(
                    f"{self.label}: frame {self.frames_written + 1} has pts {pts}, not after {prev_pts}"
                )
            self._encode(self._pending[0], prev_pts, pts - prev_pts)
        self._pending = (self._to_frame(image), pts)

    @property
    def end_time(self) -> float | None:
        """End of the source time range in absolute stream seconds (None: no end)."""
        if self.end is None or self.info is None:
            return None
        return self.info.start_time + self.end

    def _to_frame(self, image: np.ndarray) -> av.VideoFrame:
        """RGB array -> frame in the encoder's pixel format, turned upright when the source is rotated."""
        if self.rotation:
            # np.rot90 turns counter-clockwise for positive k; a player would turn the source clockwise.
            image = np.ascontiguousarray(np.rot90(image, k=-self.rotation // 90))  # [W, H, 3] or [H, W, 3]
        ctx = self._stream.codec_context
        try:
            return array_to_frame(image, self.pix_fmt, int(ctx.colorspace), int(ctx.color_range))
        except (av.error.FFmpegError, ValueError) as e:
            raise VideoWriteError(f"{self.label}: cannot convert frame {self.frames_written} ({e})") from e

    def _encode(self, frame: av.VideoFrame, pts: int, duration: int) -> None:
        frame.pts = pts - self._offset_pts
        frame.time_base = self.time_base
        frame.duration = duration
        self._last_duration = duration
        self._durations[frame.pts] = duration
        try:
            self._mux_video(self._stream.encode(frame))
        except (av.error.FFmpegError, ValueError) as e:
            raise write_failure(self.label, f"encoding frame {self.frames_written}", e) from e
        self._written_pts.append(frame.pts)
        self.frames_written += 1
        if self._aux is not None:
            self._aux.pump(float(pts * self.time_base))

    def _mux_video(self, packets: list[Any]) -> None:
        """Mux encoded packets, each with the duration of its own frame.

        Encoders with a look-ahead (libx264, libx265) do not pass frame durations through, and the
        mp4/mov muxers take the last sample's length from its packet, so without this the output's
        duration would drift from the source's.
        """
        for packet in packets:
            if packet.pts is not None and packet.pts in self._durations:
                packet.duration = self._durations.pop(packet.pts)
            self._container.mux(packet)

    def _last_frame_duration(self, last_pts: int) -> int:
        """Duration of the final frame: up to the end of the source stream, else the previous gap.

        With a range that ends inside the source, the last frame keeps its natural length (the gap
        before it, or 1/fps) rather than being clipped to the range end.
        """
        nominal = max(1, round(1 / (self.fps * self.time_base))) if self.fps > 0 else 1
        guess = self._last_duration or nominal
        info = self.info
        if info is None or info.duration is None:
            return guess
        stream_end = info.start_time + info.duration
        if self.end_time is not None and self.end_time < stream_end:
            return guess
        to_end = round(Fraction(stream_end) / self.time_base) - last_pts
        # Trust the source's end only when it is plausible for one frame (audio can outlast video).
        return to_end if 0 < to_end <= 2 * max(guess, nominal) else guess

    # -- finishing -------------------------------------------------------------------------------
    def commit(self, next_pts: int | None = None) -> WriteResult:
        """Flush the encoder, copy the remaining audio/subtitles, verify the file and move it into place.

        Args:
            next_pts: the pts of the frame that follows the last one written, when the file is one
                segment of a longer video (``pipeline/resume.py``): the last frame lasts up to it.

        Returns:
            The `WriteResult` (also kept as ``self.result``).

        Raises:
            VideoWriteError: nothing was written, the encoder or muxer failed, or the written file does
                not hold the frames and timestamps that were written. The temporary file is removed.
        """
        if self._done:
            if self._result is None:
                raise VideoWriteError(f"{self.label}: the writer was aborted")
            return self._result
        try:
            if self._pending is None:
                raise VideoWriteError(f"{self.label}: no frame was written")
            frame, pts = self._pending
            self._pending = None
            last = self._last_frame_duration(pts) if next_pts is None else max(1, int(next_pts) - pts)
            self._encode(frame, pts, last)
            try:
                self._mux_video(self._stream.encode(None))
            except (av.error.FFmpegError, ValueError) as e:
                raise write_failure(self.label, "flushing the encoder", e) from e
            if self._aux is not None:
                self._aux.finish()
            try:
                self._container.close()
            except (av.error.FFmpegError, OSError) as e:
                raise write_failure(self.label, "finishing the file", e) from e
            self._container = None
            self._close_aux()
            result = self._verify()
            try:
                os.replace(self.tmp_path, self.output)
            except OSError as e:  # the folder was removed or made read-only while the video was written
                raise write_failure(self.label, "moving the finished file into place", e) from e
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._result = result
        return result

    @property
    def result(self) -> WriteResult | None:
        """The result of a successful `commit`, else None."""
        return self._result

    def _verify(self) -> WriteResult:
        """Re-open the temporary file: the video packets' count and timestamps, the audio streams and
        their packet counts (``verify.py``)."""
        back = read_back(self.tmp_path, self.format, name=self.label, default_time_base=self.time_base)
        aux = self._aux
        start_shift = check_written(
            self.label,
            back,
            self._written_pts,
            self.time_base,
            aux.audio_packets if aux is not None else {},
            aux.audio_copied + aux.audio_transcoded if aux is not None else 0,
        )
        got_pix_fmt = back.pix_fmt or self.pix_fmt
        last = self._written_pts[-1] + (self._last_duration or 0)
        duration = float((last - self._written_pts[0]) * self.time_base)
        w, h = self._enc_size
        return WriteResult(
            path=self.output,
            frames=self.frames_written,
            codec=self.options.codec,
            pix_fmt=got_pix_fmt,
            width=w,
            height=h,
            duration=duration,
            audio_copied=aux.audio_copied if aux else 0,
            audio_transcoded=aux.audio_transcoded if aux else 0,
            subtitles_copied=aux.subtitles_copied if aux else 0,
            chapters=aux.chapters_written if aux else 0,
            size_bytes=self.tmp_path.stat().st_size,
            start_shift=start_shift,
            warnings=list(self.warnings),
        )

    def _close_aux(self) -> None:
        if self._aux is not None:
            self._aux.close()

    def abort(self) -> None:
        """Stop without producing an output: close everything and delete the temporary file."""
        self._done = True
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        with contextlib.suppress(Exception):
            self._close_aux()
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()


# Keys that describe the old encode or that muxers write themselves; copying them would be a lie.
_STALE_KEYS = re.compile(
    r"^(encoder|major_brand|minor_version|compatible_brands|vendor_id|duration|number_of_frames|"
    r"number_of_bytes|bps|_statistics_.*)(-eng)?$",
    re.IGNORECASE,
)


def _clean_metadata(meta: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in meta.items() if not _STALE_KEYS.match(k)}
