"""Reliability (issue 15): verification after encoding, write failures, broken input, out of memory.

Each case stages a failure (an injected mismatch, a file-size limit, a mutated file, an allocation failure)
and checks the promise: a typed error naming the file, a non-zero exit, nothing at the output path.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import media
import pytest
from video_checks import leftovers, packets, passthrough

from fmanetpp_cli.errors import VideoWriteError
from fmanetpp_cli.video import VideoReader, VideoWriter, probe
from fmanetpp_cli.video.verify import read_back

ROOT = Path(__file__).resolve().parents[1]


# -- verification after encoding ---------------------------------------------------------------------------
def test_read_back_counts_every_audio_packet(tmp_path: Path) -> None:
    src = media.multitrack_clip(tmp_path)
    out = tmp_path / "out.mkv"
    passthrough(src, out)
    back = read_back(out, "matroska", name=out, default_time_base=Fraction(1, 1000))
    assert len(back.video_pts) == len(packets(src, "video"))
    assert list(back.audio_packets.values()) == [len(packets(src, "audio", i)) for i in (0, 1)]


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_audio_packet_mismatch_is_an_error(tmp_path: Path, ext: str) -> None:
    """One audio packet more muxed than the file holds (as if the muxer dropped one): refused."""
    src = media.cfr_clip(tmp_path)
    out = tmp_path / f"out{ext}"
    info = probe(src)
    writer = VideoWriter(out, source=src, info=info)
    with VideoReader(src, info=info) as reader:
        for frame in reader:
            writer.write(frame.image, frame.pts)
    real_finish = writer._aux.finish  # type: ignore[union-attr]

    def finish_and_miscount() -> None:
        real_finish()
        counts = writer._aux.audio_packets  # type: ignore[union-attr]
        index = next(iter(counts))
        counts[index] += 1

    writer._aux.finish = finish_and_miscount  # type: ignore[union-attr,method-assign]
    with pytest.raises(VideoWriteError, match=r"audio stream \d holds \d+ packets but \d+ were written") as e:
        writer.commit()
    assert str(out) in str(e.value)
    assert not out.exists() and leftovers(tmp_path) == []
