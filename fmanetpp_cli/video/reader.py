"""Stream decoded frames out of a video file as numpy RGB arrays, each with its own timestamp.

Decoding runs in-process with PyAV and FFmpeg's own frame/slice threads; nothing is written to disk and
only the frame being handed out (plus FFmpeg's small decode queue) is held in memory, whatever the
length of the video.

Completeness check. When decoding reaches the end of the file, the reader checks that it got everything
the container promised and raises `VideoDecodeError` otherwise, which is how a truncated file is caught:

- mp4/mov/avi declare the frame count from a per-sample index, so it is exact. We still allow a shortfall
  of ``1 + declared // 1000`` frames, because edit lists and decoder-discarded leading frames (open-GOP
  B-frames before the first key frame) can legitimately remove a frame or two.
- Other containers (Matroska, WebM, MPEG-TS) declare no count, and their header duration covers the
  longest stream (audio often outlasts video), so a frame estimate from it would be wrong. Instead the
  reader demuxes every stream and checks that the last packet of any stream ends where the header says
  the file ends, within two frames plus 1 % of the length. A cut file stops every stream early; a file
  whose audio outlasts its video does not.
- Time ranges that reach the end of the file get the same end check; a range that ends inside the file
  is complete as soon as a frame at or after its end is seen.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import Any

import av
import numpy as np

from fmanetpp_cli.errors import ConfigError, VideoDecodeError
from fmanetpp_cli.video._convert import frame_to_array
from fmanetpp_cli.video.info import PathLike, VideoInfo, open_input, probe

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame.

    Attributes:
        image: ``[H, W, 3]`` RGB, ``uint8`` for 8-bit sources, ``uint16`` on the full 16-bit scale
            (0..65535) for deeper ones. Full range: limited-range sources are expanded.
        pts: presentation timestamp in the video stream's ``time_base`` (as stored in the file).
        time: ``pts * time_base`` in seconds.
        index: 0-based position among the frames this reader yielded.
    """

    image: np.ndarray
    pts: int
    time: float
    index: int


class VideoReader:
    """Iterate the frames of a video file, optionally within a time range.

    Use it as a context manager::

        with VideoReader("in.mp4", start=1.0, end=3.0) as reader:
            for frame in reader:  # Frame(image [H, W, 3], pts, time, index)
                ...

    Args:
        path: the video file.
        start: first time to return, in seconds from the start of the video stream (None: from the
            beginning). The seek is accurate: the decoder starts at the key frame before ``start`` and
            frames before ``start`` are decoded and dropped.
        end: time to stop before, in seconds from the start of the video stream (None: to the end).
            Frames with ``start <= t < end`` are returned.
        info: the result of `probe` if the caller already has it (saves a second probe).
        threads: decoder threads (0 lets FFmpeg choose).

    Raises:
        VideoOpenError, UnsupportedVideoError: from `probe`.
        ConfigError: a negative ``start`` or ``end <= start``.
        VideoDecodeError: while iterating, when decoding fails, no frame lies in the range, or the file
            holds less than it declares (truncated).
    """

    def __init__(
        self,
        path: PathLike,
        *,
        start: float | None = None,
        end: float | None = None,
        info: VideoInfo | None = None,
        threads: int = 0,
    ) -> None:
        if start is not None and start < 0:
            raise ConfigError(f"start time must be >= 0, got {start}")
        if end is not None and (end <= 0 or (start is not None and end <= start)):
            raise ConfigError(f"end time ({end}) must be after the start time ({start or 0})")
        self.info = info if info is not None else probe(path)
        self.path = self.info.path
        self.start = start
        self.end = end
        self.threads = threads
        self.frames_read = 0
        self.retimed = 0  # frames whose pts did not increase and were moved one frame after the last
        self._container: Any = None
        self._iterating = False
        self._file_reached = 0.0  # end time (s) of the latest packet of any stream seen so far
        self._stopped_at_end = False  # True when iteration stopped at `end`, inside the file

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying container (safe to call twice)."""
        if self._container is not None:
            self._container.close()
            self._container = None

    # -- timing helpers --------------------------------------------------------------------------
    def _pts_of(self, seconds: float) -> int:
        """Stream pts of a time given in seconds from the start of the video stream."""
        tb = self.info.time_base
        start_pts = round(Fraction(self.info.start_time) / tb)
        return start_pts + math.ceil(Fraction(seconds) / tb - Fraction(1, 1000))

    @property
    def frame_duration(self) -> Fraction:
        """Nominal duration of one frame in seconds (1 / fps)."""
        return 1 / self.info.fps if self.info.fps > 0 else Fraction(1, 25)

    # -- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        if self._iterating:
            raise RuntimeError("a VideoReader can be iterated only once")
        self._iterating = True
        info = self.info
        self._container = open_input(self.path)
        stream = self._container.streams[info.video_index]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self.threads
        start_pts = self._pts_of(self.start) if self.start else None
        end_pts = self._pts_of(self.end) if self.end is not None else None
        if start_pts is not None:
            # Backward seek lands on the key frame at or before start; frames before start are dropped.
            self._container.seek(start_pts, stream=stream, backward=True, any_frame=False)
        try:
            for frame, pts in self._decoded(stream, start_pts, end_pts):
                image = frame_to_array(frame, info.high_bit_depth)
                yield Frame(image, pts, float(pts * info.time_base), self.frames_read)
                self.frames_read += 1
        except av.error.FFmpegError as e:
            expected = self.info.expected_frames
            of = f" of {expected}" if expected is not None and not (self.start or self.end) else ""
            raise VideoDecodeError(
                f"{self.path}: decoding failed after {self.frames_read}{of} frames; the file looks "
                f"truncated or damaged ({e})"
            ) from e
        finally:
            self.close()
        self._check_complete()

    def _decoded(self, stream: Any, start_pts: int | None, end_pts: int | None) -> Iterator[tuple[Any, int]]:
        """Decoded frames of ``stream`` in the range, with their pts; records how far the file went.

        Every stream is demuxed (only the video is decoded) so that ``_file_reached`` tells where the
        data in the file really ends.
        """
        step = max(1, round(self.frame_duration / self.info.time_base))
        prev_pts: int | None = None
        for packet in self._container.demux():
            if packet.size and packet.time_base is not None:
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is not None:
                    end = float((ts + (packet.duration or 0)) * packet.time_base)
                    self._file_reached = max(self._file_reached, end)
            if packet.stream.index != stream.index:
                continue
            for frame in stream.decode(packet):
                # Some raw streams carry no pts; number such frames by the nominal rate.
                pts = frame.pts if frame.pts is not None else (0 if prev_pts is None else prev_pts + step)
                if prev_pts is not None and pts <= prev_pts:
                    # A damaged or concatenated file repeats or rewinds a timestamp. Keep the frame (an
                    # encoder needs increasing times) one nominal frame after the previous one.
                    self.retimed += 1
                    if self.retimed == 1:
                        _logger.warning("%s: frame pts %d is not after %d; retimed", self.path, pts, prev_pts)
                    pts = prev_pts + step
                prev_pts = pts
                if start_pts is not None and pts < start_pts:
                    continue
                if end_pts is not None and pts >= end_pts:
                    self._stopped_at_end = True
                    return
                yield frame, pts

    def _check_complete(self) -> None:
        """Raise VideoDecodeError when the file held less than its container promised."""
        info = self.info
        ranged = self.start is not None or self.end is not None
        if self.frames_read == 0:
            if not ranged:
                raise VideoDecodeError(f"{self.path}: no video frame could be decoded at all")
            span = f"{self.start or 0:g} s to {'the end' if self.end is None else f'{self.end:g} s'}"
            length = f" (the video lasts {info.duration:.3f} s)" if info.duration is not None else ""
            raise VideoDecodeError(f"{self.path}: no video frame from {span}{length}")
        if self._stopped_at_end:
            return  # the range ended inside the file, so nothing is missing
        if info.frame_count_exact and not ranged:
            expected = info.frame_count or 0
            if self.frames_read < expected - (1 + expected // 1000):
                raise VideoDecodeError(
                    f"{self.path}: decoded only {self.frames_read} of {expected} frames; "
                    "the file looks truncated or damaged"
                )
            return
        if info.file_end is None:
            return
        seconds = info.file_end - info.start_time
        slack = float(2 * self.frame_duration) + 0.01 * max(seconds, 0.0)
        if self._file_reached < info.file_end - slack:
            raise VideoDecodeError(
                f"{self.path}: the data ends at {self._file_reached:.3f} s but the file declares "
                f"{info.file_end:.3f} s ({self.frames_read} frames decoded); the file looks truncated"
            )
