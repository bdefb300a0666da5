"""Video input/output with PyAV: probe, stream frames out, encode frames in, carry everything else over.

Nothing here extracts frames to disk or pipes video through an ffmpeg process; memory is one frame (plus
FFmpeg's codec queues), whatever the length of the video.

API (the pipeline relies on exactly this):

``probe(path) -> VideoInfo``
    Describes the first video stream: ``width``/``height`` (decoded frame size), ``display_width``/
    ``display_height`` and ``rotation`` (clockwise degrees a player applies), ``fps`` (Fraction),
    ``time_base`` (Fraction), ``frame_count`` (declared, or None), ``duration``/``start_time`` (s),
    ``codec``, ``pix_fmt``, ``bit_depth``, ``color_range``/``color_primaries``/``color_trc``/
    ``colorspace`` (FFmpeg enum ints), ``sample_aspect_ratio`` (Fraction or None), ``audio``/
    ``subtitles`` (tuples of `StreamSummary`), ``metadata``, ``stream_metadata``, ``chapters``,
    ``file_end``, ``hdr`` (`HdrMetadata` or None); ``expected_frames`` (declared count, else
    duration x fps: for progress bars) and ``high_bit_depth``. Raises `VideoOpenError` (missing,
    empty, not a video container, damaged) or `UnsupportedVideoError` (no video stream,
    undecodable), both naming the path.

``VideoReader(path, *, start=None, end=None, info=None, threads=0)``
    Context manager; iterating yields `Frame(image, pts, time, index)` with ``image`` a numpy
    ``[H, W, 3]`` RGB array, ``uint8`` for 8-bit sources and ``uint16`` (full 0..65535 scale) for
    deeper ones (``info.high_bit_depth``), always full range; ``pts`` in ``info.time_base``. ``start``
    and ``end`` are seconds from the start of the video stream; frames with ``start <= t < end`` come
    out (accurate seek). At the end of the file it raises `VideoDecodeError` when the file held less
    than it declares: a truncated file (rules and tolerances in ``reader.py``'s docstring). Frames
    are in the coded orientation; the writer applies the rotation.

``EncodeOptions(codec="libx264", crf=None, preset=None, pix_fmt=None, copy_audio=True,
copy_subtitles=True, copy_metadata=True, threads=0)``
    Frozen (``video/options.py``); bad values raise `ConfigError`. ``crf=None`` means x264 18, x265 20,
    NVENC 19. ``pix_fmt=None`` keeps the source's chroma and bit depth where the codec allows (10-bit
    stays 10-bit with libx264/libx265/ffv1; NVENC gets ``p010le``; odd sizes get 4:4:4).
    ``codec_options()`` gives the FFmpeg encoder options they stand for.

``VideoWriter(output, *, source=None, info=None, options=None, overwrite=False, width=None,
height=None, start=None, end=None)``
    Opens a hidden temp file beside ``output`` (container from the extension: .mp4 .m4v .mov .mkv
    .webm). ``width``/``height`` are those of the frames you will write (default: the source's),
    before rotation. Pass the same ``start``/``end`` as to the reader when restoring a range:
    audio/subtitles/chapters are cut to match and, when ``start`` is given, every stream is shifted so
    the output starts at 0 (without ``start``, source timestamps are kept as they are).
    ``.write(image, pts)``: ``image`` ``[height, width, 3]`` uint8/uint16 RGB, ``pts`` the reader's
    ``Frame.pts`` (strictly increasing; each output frame keeps its input timestamp, so variable frame
    rate stays variable). ``.commit() -> WriteResult``: flushes, copies the remaining audio, verifies
    the file (frame count and timestamps) and renames it into place. ``.abort()`` deletes the temp
    file. As a context manager it aborts on an exception and commits on a clean exit if not done yet.
    Raises `OutputExistsError` (exists without ``overwrite``, or output is the input), `VideoWriteError`
    (folder missing/unwritable, encoder cannot start, e.g. NVENC without a GPU, encoder failure,
    failed verification), `ConfigError` (extension, codec the container cannot hold).
    ``WriteResult.warnings`` lists what could not be carried over as is (also logged).

What is carried from the source: every audio stream packet for packet (transcoded with a warning only
when the container cannot hold it: AAC for mp4/mov, FLAC for mkv, Opus for webm), subtitle streams
(text subtitles converted to mov_text / SubRip / WebVTT when needed, bitmap ones dropped with a
warning), Matroska attachments, chapters, container and stream metadata (language, title, handler,
disposition), colour range/primaries/transfer/matrix, sample aspect ratio, HDR10 mastering-display and
content-light metadata (with libx265, written as SEI; other encoders warn), and rotation (applied to
the pixels, since PyAV cannot write a display matrix). Not carried: HDR10+/Dolby Vision dynamic
metadata, interlacing flags, data/timecode tracks.
"""

from __future__ import annotations

from fmanetpp_cli.video.info import ChapterInfo, HdrMetadata, StreamSummary, VideoInfo, probe
from fmanetpp_cli.video.options import CONTAINERS, EncodeOptions, choose_pix_fmt, container_for
from fmanetpp_cli.video.reader import Frame, VideoReader
from fmanetpp_cli.video.writer import VideoWriter, WriteResult, check_output

__all__ = [
    "CONTAINERS",
    "ChapterInfo",
    "EncodeOptions",
    "Frame",
    "HdrMetadata",
    "StreamSummary",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "WriteResult",
    "check_output",
    "choose_pix_fmt",
    "container_for",
    "probe",
]
