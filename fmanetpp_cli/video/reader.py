"""Stream decoded frames out of a video file as numpy RGB arrays, each with its own timestamp.

Decoding runs in-process with PyAV and FFmpeg's own frame/slice threads; nothing is written to disk and
only the frame being handed out (plus FFmpeg's small decode queue) is held in memory, whatever the
length of the video.

Frame-count check. At the end of iteration the reader compares what it decoded with what the container
promised and raises `VideoDecodeError` on a shortfall, which is how a truncated file is caught:

- mp4/mov/avi declare the count from a per-sample index, so it is exact; we still allow a shortfall of
  ``1 + declared // 1000`` frames, because edit lists and decoder-discarded leading frames (open-GOP
  B-frames before the first key frame) can legitimately remove a frame or two;
- other containers (Matroska, WebM, MPEG-TS) declare no count; we estimate it from the header duration x
  average frame rate and allow ``2 + 2 %`` of it, since a header duration is rounded (Matroska: 1 ms),
  covers the longest stream (audio may outlast video), and variable frame rate makes fps x duration
  only approximate.
- With a time range, the expected count is unknown; we check instead that the last decoded frame
  reaches the end of the range (or of the stream) within the same tolerance, in time.
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
        VideoDecodeError: while iterating, when decoding fails or yields fewer frames than declared.
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
        self._container: Any = None
        self._iterating = False

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
        high = info.high_bit_depth
        last_pts: int | None = None
        prev_pts: int | None = None
        try:
            for frame in self._container.decode(stream):
                pts = frame.pts
                if pts is None:
                    # Some raw streams carry no pts; number frames by the nominal rate instead.
                    step = round(self.frame_duration / info.time_base)
                    pts = 0 if prev_pts is None else prev_pts + max(1, step)
                prev_pts = pts
                if start_pts is not None and pts < start_pts:
                    continue
                if end_pts is not None and pts >= end_pts:
                    break
                image = frame_to_array(frame, high)
                last_pts = pts
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
        self._check_complete(last_pts)

    def _check_complete(self, last_pts: int | None) -> None:
        """Raise VideoDecodeError when fewer frames came out than the container promised."""
        info = self.info
        if self.frames_read == 0:
            where = "in the requested time range" if (self.start or self.end) else "at all"
            raise VideoDecodeError(f"{self.path}: no video frame could be decoded {where}")
        if self.start is None and self.end is None:
            expected = info.expected_frames
            if expected is None:
                return
            tolerance = 1 + expected // 1000 if info.frame_count_exact else 2 + expected // 50
            if self.frames_read < expected - tolerance:
                raise VideoDecodeError(
                    f"{self.path}: decoded only {self.frames_read} of {expected} frames"
                    f"{'' if info.frame_count_exact else ' (estimated)'}; the file looks truncated or damaged"
                )
            return
        # Time range: the last frame must reach the end of the range, or the end of the stream.
        if info.duration is None or last_pts is None:
            return
        stream_end = info.start_time + info.duration
        target = stream_end if self.end is None else min(info.start_time + self.end, stream_end)
        reached = float(last_pts * info.time_base + self.frame_duration)
        slack = float(2 * self.frame_duration) + 0.02 * (target - info.start_time - (self.start or 0.0))
        if reached < target - slack:
            raise VideoDecodeError(
                f"{self.path}: decoding stopped at {reached:.3f} s, before the expected end "
                f"{target:.3f} s; the file looks truncated or damaged"
            )
