"""Read a freshly written file back and compare it with what was muxed into it; word write failures.

`VideoWriter.commit` calls `read_back` on its temporary file before renaming it into place, then
`check_audio_packets` and its own frame checks: a file whose video frames, timestamps, audio streams or
audio packets differ from what went in is refused with a `VideoWriteError`, never committed.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from fmanetpp_cli.errors import VideoWriteError

# errno values that mean "the storage took no more": a full disk, a quota, the process's file-size limit.
NO_ROOM = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def write_failure(output: Path, what: str, error: BaseException) -> VideoWriteError:
    """A `VideoWriteError` for an error raised while writing ``output``, naming it (not its temporary file).

    Args:
        output: the output the user asked for.
        what: the step that failed, e.g. ``"encoding frame 12"``.
        error: the OS or FFmpeg error.
    """
    code = getattr(error, "errno", None)
    reason = getattr(error, "strerror", None) or str(error)
    if code in NO_ROOM:
        reason = f"no room left to write ({reason}: disk full, quota or file-size limit)"
    failure = VideoWriteError(f"{output}: {what} failed, {reason}")
    failure.errno = code  # kept, so a caller can tell a full disk (worth retrying) from bad data
    return failure


@dataclass(frozen=True, slots=True)
class ReadBack:
    """What a written file holds.

    Attributes:
        time_base: the video stream's time base in the file.
        video_pts: presentation times of the video packets that carry data, sorted, in ``time_base``.
        pix_fmt: the pixel format the file declares (empty when the demuxer does not say).
        audio_packets: audio packets with data, per output stream index.
    """

    time_base: Fraction
    video_pts: list[int]
    pix_fmt: str
    audio_packets: dict[int, int]


def read_back(path: Path, fmt: str, *, name: Path, default_time_base: Fraction) -> ReadBack:
    """Demux every packet of ``path`` (no decoding) and count what it holds.

    Args:
        path: the file to read (the writer's temporary file).
        fmt: its muxer / demuxer name.
        name: the path to name in errors (the final output).
        default_time_base: used when the stream does not declare one.

    Raises:
        VideoWriteError: the file cannot be opened or demuxed, or holds no video stream.
    """
    try:
        container = av.open(str(path), mode="r", format=fmt)
    except (av.error.FFmpegError, OSError) as e:
        raise VideoWriteError(f"{name}: the written file cannot be read back ({e})") from e
    try:
        vs = container.streams.video[0]
        audio = {s.index: 0 for s in container.streams.audio}
        pts: list[int] = []
        for packet in container.demux():
            if packet.size == 0:
                continue
            index = packet.stream.index
            if index == vs.index and packet.pts is not None:
                pts.append(packet.pts)
            elif index in audio:
                audio[index] += 1
        return ReadBack(
            time_base=Fraction(vs.time_base or default_time_base),
            video_pts=sorted(pts),
            pix_fmt=vs.codec_context.pix_fmt or "",
            audio_packets=audio,
        )
    except (av.error.FFmpegError, IndexError) as e:
        raise VideoWriteError(f"{name}: the written file cannot be read back ({e})") from e
    finally:
        container.close()


def check_audio_packets(name: Path, got: dict[int, int], muxed: dict[int, int]) -> None:
    """Every audio stream of the file holds exactly the packets muxed into it.

    Args:
        name: the output, for the message.
        got: `ReadBack.audio_packets`.
        muxed: packets with data muxed per output stream index (streams absent: none).

    Raises:
        VideoWriteError: a stream with more or fewer packets than were muxed.
    """
    for index, count in sorted(got.items()):
        want = muxed.get(index, 0)
        if count != want:
            raise VideoWriteError(
                f"{name}: verification failed, audio stream {index} holds {count} packets but {want} "
                "were written"
            )


def check_written(
    name: Path,
    back: ReadBack,
    written_pts: list[int],
    time_base: Fraction,
    audio_muxed: dict[int, int],
    audio_streams: int,
) -> float:
    """The file read back holds the audio streams and packets, the frames and their times, that were muxed.

    Args:
        name: the output, for the message.
        back: what `read_back` found.
        written_pts: the video pts muxed, in presentation order, in ``time_base``.
        time_base: the time base of ``written_pts``.
        audio_muxed: audio packets with data muxed per output stream index.
        audio_streams: audio streams muxed.

    Returns:
        The seconds the muxer moved every stream by (Matroska/WebM cannot store negative times, so AAC/Opus
        priming shifts the whole file a little; sync is unchanged).

    Raises:
        VideoWriteError: any count or time that differs.
    """
    if len(back.audio_packets) != audio_streams:
        raise VideoWriteError(
            f"{name}: verification failed, {len(back.audio_packets)} audio streams in the file but "
            f"{audio_streams} were written"
        )
    check_audio_packets(name, back.audio_packets, audio_muxed)
    tb, pts_list = back.time_base, back.video_pts
    if len(pts_list) != len(written_pts):
        raise VideoWriteError(
            f"{name}: verification failed, {len(pts_list)} frames in the file but {len(written_pts)} "
            "were written"
        )
    # The muxer may store times in a coarser time base (Matroska: 1 ms); allow half a tick of it.
    # It may also shift every stream by the same amount to avoid negative timestamps (Matroska
    # with AAC priming), which keeps sync; so frame times are compared relative to the first.
    tick = max(float(tb), float(time_base)) / 2 + 1e-9
    got0, want0 = pts_list[0] * tb, written_pts[0] * time_base
    for i, (got, want) in enumerate(zip(pts_list, written_pts, strict=True)):
        got_t, want_t = float(got * tb - got0), float(want * time_base - want0)
        if abs(got_t - want_t) > tick:
            raise VideoWriteError(
                f"{name}: verification failed, frame {i} is at {got_t:.6f} s "
                f"instead of {want_t:.6f} s (from the first frame)"
            )
    return float(got0 - want0)
