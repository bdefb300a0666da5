"""Video I/O: probe, reader and writer on tiny clips generated with PyAV (see tests/media.py)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import media
import numpy as np
import pytest

from fmanetpp_cli.errors import (
    ConfigError,
    OutputExistsError,
    UnsupportedVideoError,
    VideoDecodeError,
    VideoOpenError,
    VideoWriteError,
)
from fmanetpp_cli.video import EncodeOptions, VideoReader, VideoWriter, choose_pix_fmt, probe


# -- helpers -------------------------------------------------------------------------------------
def passthrough(src: Path, dst: Path, **writer_kw: object) -> tuple[list[int], object]:
    """Copy every frame of ``src`` into ``dst`` through the reader and writer; return (pts, result)."""
    info = probe(src)
    start, end = writer_kw.get("start"), writer_kw.get("end")
    pts = []
    with (
        VideoReader(src, info=info, start=start, end=end) as reader,  # type: ignore[arg-type]
        VideoWriter(dst, source=src, info=info, **writer_kw) as writer,  # type: ignore[arg-type]
    ):
        for frame in reader:
            writer.write(frame.image, frame.pts)
            pts.append(frame.pts)
        result = writer.commit()
    return pts, result


def packets(path: Path, kind: str, index: int = 0) -> list[tuple[bytes, float | None, float]]:
    """(payload, pts seconds, duration seconds) of every non-empty packet of one stream."""
    out = []
    with av.open(str(path)) as c:
        s = getattr(c.streams, kind)[index]
        for p in c.demux(s):
            if p.size == 0:
                continue
            tb = p.time_base
            out.append((bytes(p), None if p.pts is None else float(p.pts * tb), float(p.duration * tb)))
    return out


def shown_span(path: Path) -> float:
    """Seconds from the first video frame shown to the end of the last one (packet pts + duration)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        spans = [(p.pts, p.pts + p.duration) for p in c.demux(s) if p.size and p.pts is not None]
        return float((max(e for _, e in spans) - min(b for b, _ in spans)) * s.time_base)


def video_times(path: Path) -> list[float]:
    with VideoReader(path) as r:
        return [f.time for f in r]


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


# -- probe ---------------------------------------------------------------------------------------
def test_probe_cfr_clip(tmp_path: Path) -> None:
    info = probe(media.cfr_clip(tmp_path))
    assert (info.width, info.height) == (64, 48)
    assert (info.display_width, info.display_height) == (64, 48)
    assert info.fps == Fraction(25) and isinstance(info.fps, Fraction)
    assert info.frame_count == 10 and info.frame_count_exact
    assert info.duration == pytest.approx(0.4, abs=1e-3)
    assert info.pix_fmt == "yuv420p" and info.bit_depth == 8 and not info.high_bit_depth
    assert [a.codec for a in info.audio] == ["aac"] and info.audio[0].channels == 2


def test_probe_multitrack_streams_metadata_chapters(tmp_path: Path) -> None:
    info = probe(media.multitrack_clip(tmp_path))
    assert info.frame_count is None and info.expected_frames in (12, 13)  # estimate from duration x fps
    assert [(a.codec, a.language, a.title, a.channels) for a in info.audio] == [
        ("aac", "eng", "Main", 2),
        ("flac", "fre", "Commentary", 1),
    ]
    assert [s.language for s in info.subtitles] == ["eng", "spa"]
    assert [c.title for c in info.chapters] == ["Opening", "Ending"]
    assert info.metadata["title"] == "Multitrack test"


def test_probe_rotation(tmp_path: Path) -> None:
    info = probe(media.rotated_clip(tmp_path, degrees=90))
    assert info.rotation == 90
    assert (info.width, info.height) == (64, 48)
    assert (info.display_width, info.display_height) == (48, 64)


@pytest.mark.parametrize(
    ("make", "error", "words"),
    [
        (lambda d: d / "missing.mp4", VideoOpenError, "file not found"),
        (media.empty_file, VideoOpenError, "empty"),
        (media.not_a_video, VideoOpenError, "not a readable video"),
        (media.audio_only_clip, UnsupportedVideoError, "no video stream"),
        (lambda d: d, VideoOpenError, "folder"),
    ],
)
def test_probe_bad_inputs_name_the_file(tmp_path: Path, make, error, words) -> None:  # noqa: ANN001
    path = make(tmp_path)
    with pytest.raises(error) as exc:
        probe(path)
    assert str(path) in str(exc.value) and words in str(exc.value)


# -- reader --------------------------------------------------------------------------------------
def test_reader_yields_rgb_frames_with_pts(tmp_path: Path) -> None:
    path = media.cfr_clip(tmp_path)
    with VideoReader(path) as reader:
        frames = list(reader)
    assert len(frames) == 10
    assert [f.index for f in frames] == list(range(10))
    assert [f.pts for f in frames] == [i * 512 for i in range(10)]  # 1/12800 time base, 25 fps
    assert frames[3].time == pytest.approx(0.12)
    for i, f in enumerate(frames):
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
        assert psnr(f.image, media.pattern(i, 48, 64), 255) > 30


def test_reader_10bit_gives_uint16_full_scale(tmp_path: Path) -> None:
    path = media.tenbit_clip(tmp_path)
    info = probe(path)
    assert info.bit_depth == 10 and info.high_bit_depth
    assert (info.color_range, info.color_primaries, info.color_trc, info.colorspace) == (1, 1, 1, 1)
    with VideoReader(path, info=info) as reader:
        frames = list(reader)
    assert len(frames) == 10
    img = frames[0].image
    assert img.dtype == np.uint16 and img.shape == (48, 64, 3)
    assert img.max() > 50000  # full 16-bit scale, not 10-bit values in a 16-bit box
    assert psnr(img, media.pattern(0, 48, 64, high=True), 65535) > 30


@pytest.mark.parametrize(
    ("colorspace", "color_range", "pix_fmt"),
    [(1, 2, "yuv444p"), (1, 1, "yuv444p"), (9, 1, "yuv444p10le"), (2, 2, "yuv444p10le")],
)
def test_colour_matrix_and_range_round_trip(
    tmp_path: Path, colorspace: int, color_range: int, pix_fmt: str
) -> None:
    """Lossless FFV1 4:4:4, so only the colour maths is measured (full range failed at 25 dB before)."""
    tags = {"colorspace": colorspace, "color_range": color_range, "color_primaries": 1, "color_trc": 1}
    src = media.make_clip(tmp_path / "c.mkv", codec="ffv1", pix_fmt=pix_fmt, frames=2, color=tags)
    high = "10" in pix_fmt
    peak = 65535 if high else 255
    with VideoReader(src) as r:
        img = next(iter(r)).image
    assert psnr(img, media.pattern(0, 48, 64, high=high), peak) > 45
    out = tmp_path / "c_out.mkv"
    _, result = passthrough(src, out, options=EncodeOptions(codec="ffv1"))
    info = probe(out)
    assert (info.colorspace, info.color_range, info.pix_fmt) == (colorspace, color_range, pix_fmt)
    with VideoReader(out) as r:
        again = next(iter(r)).image
    assert psnr(again, img, peak) > 45


@pytest.mark.parametrize(
    ("width", "pix_fmt"), [(40, "yuv420p"), (40, "yuv420p10le"), (200, "yuv422p"), (33, "yuv444p")]
)
def test_reader_every_column_at_awkward_widths(tmp_path: Path, width: int, pix_fmt: str) -> None:
    """Widths that are not multiples of 16: FFmpeg 8's 4:2:0 -> gbrp path garbled the last columns."""
    high = "10" in pix_fmt
    src = media.make_clip(tmp_path / "w.mkv", frames=2, width=width, height=8, codec="ffv1", pix_fmt=pix_fmt)
    with VideoReader(src) as reader:
        img = next(iter(reader)).image
    ref = media.pattern(0, 8, width, high=high)
    per_column = np.abs(img.astype(np.float64) - ref).mean(axis=(0, 2)) / (65535 if high else 255)
    assert per_column.max() < 0.03, per_column.round(3)


def test_reader_time_range_is_accurate(tmp_path: Path) -> None:
    path = media.make_clip(tmp_path / "gop.mp4", frames=20, options={"g": "8"})
    with VideoReader(path, start=0.3, end=0.5) as reader:
        frames = list(reader)
    # 25 fps: frames at 0.32, 0.36, 0.40, 0.44, 0.48 (0.30 is not on the grid; 0.50 is excluded).
    assert [round(f.time, 2) for f in frames] == [0.32, 0.36, 0.40, 0.44, 0.48]
    assert psnr(frames[0].image, media.pattern(8, 48, 64), 255) > 30


def test_stream_starting_late_keeps_its_times(tmp_path: Path) -> None:
    """Video that starts 1 s into the file (audio from 0): ranges count from the video's start."""
    src = media.make_clip(
        tmp_path / "late.mkv",
        pts=[25 + i for i in range(10)],
        time_base=Fraction(1, 25),
        audio=[media.AudioSpec()],
    )
    info = probe(src)
    assert info.start_time == pytest.approx(1.0) and info.expected_frames == 10
    with VideoReader(src, start=0.2, end=0.3) as reader:
        assert [round(f.time, 2) for f in reader] == [1.2, 1.24, 1.28]
    out = tmp_path / "late_out.mp4"
    passthrough(src, out)  # no range: every timestamp stays where it was, audio included
    assert video_times(out)[0] == pytest.approx(1.0)
    got, want = packets(out, "audio"), packets(src, "audio")  # Matroska times are whole ms
    assert [d for d, _, _ in got] == [d for d, _, _ in want]
    assert [t for _, t, _ in got] == pytest.approx([t for _, t, _ in want], abs=1e-3)


def test_reader_rejects_bad_range(tmp_path: Path) -> None:
    path = media.single_frame_clip(tmp_path)
    with (
        pytest.raises(VideoDecodeError, match="no video frame from 5 s to the end"),
        VideoReader(path, start=5.0) as reader,
    ):
        list(reader)
    with pytest.raises(ConfigError):
        VideoReader(path, start=-1)
    with pytest.raises(ConfigError):
        VideoReader(path, start=2.0, end=1.0)


def test_reader_truncated_matroska_raises(tmp_path: Path) -> None:
    path = media.truncated_mkv_clip(tmp_path)
    with pytest.raises(VideoDecodeError, match="truncated") as exc, VideoReader(path) as reader:
        for _ in reader:
            pass
    assert str(path) in str(exc.value)


def test_reader_truncated_file_raises(tmp_path: Path) -> None:
    path = media.truncated_clip(tmp_path)
    info = probe(path)
    assert info.frame_count == 40
    with pytest.raises(VideoDecodeError) as exc, VideoReader(path, info=info) as reader:
        for _ in reader:
            pass
    assert str(path) in str(exc.value) and "of 40 frames" in str(exc.value)


def test_reader_retimes_a_repeated_timestamp(tmp_path: Path) -> None:
    path = media.repeated_pts_clip(tmp_path)
    with VideoReader(path) as reader:
        frames = list(reader)
    assert len(frames) == 10 and reader.retimed == 1  # no frame dropped
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:], strict=False))
    _, result = passthrough(path, tmp_path / "retimed.mkv")
    assert result.frames == 10


def test_reader_single_frame(tmp_path: Path) -> None:
    with VideoReader(media.single_frame_clip(tmp_path)) as reader:
        frames = list(reader)
    assert len(frames) == 1 and frames[0].pts == 0


# -- encode options --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"codec": "no_such_codec"},
        {"codec": "aac"},
        {"crf": 60},
        {"crf": -1},
        {"codec": "ffv1", "crf": 10},
        {"preset": "warp-speed"},
        {"codec": "libx264", "pix_fmt": "rgb24"},
        {"threads": -2},
    ],
)
def test_encode_options_reject_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        EncodeOptions(**kwargs)


def test_encode_options_map_to_encoder_settings() -> None:
    assert EncodeOptions().codec_options()["crf"] == "18"
    assert EncodeOptions(crf=30, preset="fast").codec_options() == {"crf": "30", "preset": "fast"}
    assert EncodeOptions(codec="libx265", crf=22).codec_options()["crf"] == "22"
    assert EncodeOptions(codec="h264_nvenc", crf=25, preset="p5").codec_options() == {
        "rc": "vbr",
        "cq": "25",
        "b": "0",
        "preset": "p5",
    }
    assert "crf" not in EncodeOptions(codec="ffv1").codec_options()


def test_choose_pix_fmt_keeps_bit_depth_and_chroma() -> None:
    assert choose_pix_fmt("libx264", "yuv420p10le") == "yuv420p10le"
    assert choose_pix_fmt("libx265", "yuv420p10le") == "yuv420p10le"
    assert choose_pix_fmt("ffv1", "yuv422p10le") == "yuv422p10le"
    assert choose_pix_fmt("libx264", "yuv444p") == "yuv444p"
    assert choose_pix_fmt("libx264", "yuv420p12le") == "yuv420p10le"  # x264 stops at 10 bits
    assert choose_pix_fmt("libx265", "yuv420p12le") == "yuv420p12le"
    assert choose_pix_fmt("h264_nvenc", "yuv420p10le") == "p010le"
    assert choose_pix_fmt("libx264", "yuvj420p") == "yuv420p"
    assert choose_pix_fmt("libx264", "yuv420p", "yuv444p") == "yuv444p"


# -- writer: timing, audio, streams ----------------------------------------------------------------
def test_writer_roundtrip_keeps_pts_and_audio_packets(tmp_path: Path) -> None:
    src = media.cfr_clip(tmp_path)
    out = tmp_path / "out.mp4"
    pts, result = passthrough(src, out)
    assert result.frames == 10 and result.audio_copied == 1 and result.warnings == []
    info = probe(out)
    assert info.frame_count == 10 and info.fps == Fraction(25)
    assert info.duration == pytest.approx(probe(src).duration, abs=1e-3)
    assert video_times(out) == pytest.approx(video_times(src), abs=1e-6)
    assert packets(out, "audio") == packets(src, "audio")
    assert leftovers(tmp_path) == []


def test_writer_keeps_variable_frame_rate(tmp_path: Path) -> None:
    src = media.vfr_clip(tmp_path)
    for ext in (".mp4", ".mkv", ".mov"):
        out = tmp_path / f"vfr_out{ext}"
        passthrough(src, out)
        times = video_times(out)
        # Matroska shifts all streams by the AAC priming delay (no negative times); sync is kept.
        times = [t - times[0] for t in times]
        assert times == pytest.approx([t / 1000 for t in media.VFR_PTS], abs=1e-6)
        # The last frame keeps its 40 ms. Matroska stores per-frame durations (its container
        # duration includes the AAC priming shift); mp4/mov packet durations are dts steps, so
        # there the edit-listed container duration is the measure.
        if ext == ".mkv":
            assert shown_span(out) == pytest.approx(0.54, abs=1e-3)
        else:
            with av.open(str(out)) as c:
                assert c.duration / 1e6 == pytest.approx(0.54, abs=1e-3)
        if ext != ".mkv":
            assert packets(out, "audio") == packets(src, "audio")
        # Matroska stores times in ms and shifts all streams alike: payloads and ms times must match.
        shift = video_times(out)[0]
        got = [(d, round(t - shift, 3)) for d, t, _ in packets(out, "audio")]
        assert got == [(d, round(t, 3)) for d, t, _ in packets(src, "audio")]


def test_writer_10bit_stays_10bit_with_colour_tags(tmp_path: Path) -> None:
    src = media.tenbit_clip(tmp_path)
    for codec, ext in (("libx264", ".mp4"), ("libx265", ".mkv"), ("ffv1", ".mkv")):
        out = tmp_path / f"out_{codec}{ext}"
        _, result = passthrough(src, out, options=EncodeOptions(codec=codec))
        info = probe(out)
        assert info.pix_fmt == "yuv420p10le" and result.pix_fmt == "yuv420p10le", codec
        assert (info.color_range, info.color_primaries, info.color_trc, info.colorspace) == (1, 1, 1, 1)
        with VideoReader(out) as r:
            img = next(iter(r)).image
        assert img.dtype == np.uint16
        assert psnr(img, media.pattern(0, 48, 64, high=True), 65535) > 30


def test_writer_keeps_hdr10_metadata_with_x265(tmp_path: Path) -> None:
    src = media.hdr10_clip(tmp_path)
    hdr = probe(src).hdr
    assert hdr is not None and hdr.max_luminance == pytest.approx(1000) and hdr.max_cll == 1000
    assert hdr.primaries is not None
    assert [c for xy in hdr.primaries for c in xy] == pytest.approx([0.68, 0.32, 0.265, 0.69, 0.15, 0.06])
    for ext in (".mkv", ".mp4"):
        out = tmp_path / f"hdr_out{ext}"
        _, result = passthrough(src, out, options=EncodeOptions(codec="libx265"))
        info = probe(out)
        assert result.warnings == [] and info.hdr == hdr
        assert (info.color_primaries, info.color_trc, info.colorspace, info.bit_depth) == (9, 16, 9, 10)
    _, result = passthrough(src, tmp_path / "hdr_x264.mp4")
    assert probe(tmp_path / "hdr_x264.mp4").hdr is None
    assert len(result.warnings) == 1 and "HDR10" in result.warnings[0]


def test_writer_applies_rotation_so_display_matches(tmp_path: Path) -> None:
    src = media.rotated_clip(tmp_path, degrees=90)
    out = tmp_path / "rot_out.mp4"
    passthrough(src, out)
    info = probe(out)
    assert info.rotation == 0
    assert (info.display_width, info.display_height) == (48, 64)
    with VideoReader(out) as r:
        img = next(iter(r)).image
    upright = np.rot90(media.pattern(0, 48, 64), k=-1)  # what a player shows for the source
    assert psnr(img, upright, 255) > 30


def test_writer_keeps_anamorphic_pixel_aspect(tmp_path: Path) -> None:
    src = media.make_clip(tmp_path / "dvd.mkv", frames=3, sar=Fraction(8, 9))
    assert probe(src).sample_aspect_ratio == Fraction(8, 9)
    for ext in (".mp4", ".mkv"):
        passthrough(src, tmp_path / f"dvd_out{ext}")
        assert probe(tmp_path / f"dvd_out{ext}").sample_aspect_ratio == Fraction(8, 9)
    assert probe(media.single_frame_clip(tmp_path)).sample_aspect_ratio is None


def test_writer_odd_size_and_single_frame(tmp_path: Path) -> None:
    _, result = passthrough(media.odd_size_clip(tmp_path), tmp_path / "odd_out.mp4")
    info = probe(tmp_path / "odd_out.mp4")
    assert (info.width, info.height, info.frame_count) == (33, 17, 6)
    assert probe(media.odd_size_clip(tmp_path)).pix_fmt == "yuv420p"
    assert result.pix_fmt == "yuv444p"  # x264's 4:2:0 needs even sizes: full chroma instead
    _, result = passthrough(media.single_frame_clip(tmp_path), tmp_path / "one.mp4")
    assert result.frames == 1 and probe(tmp_path / "one.mp4").frame_count == 1
    assert probe(tmp_path / "one.mp4").duration == pytest.approx(0.04, abs=1e-3)


def test_writer_multitrack_mkv_keeps_everything(tmp_path: Path) -> None:
    src = media.multitrack_clip(tmp_path)
    out = tmp_path / "multi_out.mkv"
    _, result = passthrough(src, out)
    assert (result.audio_copied, result.audio_transcoded, result.subtitles_copied) == (2, 0, 2)
    assert result.warnings == []
    a, b = probe(src), probe(out)
    assert [(s.codec, s.language, s.title) for s in b.audio] == [
        (s.codec, s.language, s.title) for s in a.audio
    ]
    assert [(s.codec, s.language) for s in b.subtitles] == [(s.codec, s.language) for s in a.subtitles]
    assert [(c.title, c.start, c.end) for c in b.chapters] == [(c.title, c.start, c.end) for c in a.chapters]
    assert b.metadata["title"] == "Multitrack test"
    for i in range(2):
        assert packets(out, "audio", i) == packets(src, "audio", i)
        assert packets(out, "subtitles", i) == packets(src, "subtitles", i)


def test_writer_copy_switches(tmp_path: Path) -> None:
    src = media.multitrack_clip(tmp_path)
    out = tmp_path / "bare.mkv"
    opts = EncodeOptions(copy_audio=False, copy_subtitles=False, copy_metadata=False)
    _, result = passthrough(src, out, options=opts)
    info = probe(out)
    assert (info.audio, info.subtitles, info.chapters) == ((), (), ())
    assert "title" not in info.metadata and result.warnings == []


def test_writer_reports_data_streams_it_leaves_out(tmp_path: Path) -> None:
    src = media.with_data_stream(tmp_path)
    _, result = passthrough(src, tmp_path / "from_ts.mp4")
    assert result.frames == 4
    assert result.warnings == ["data stream 1: not copied (data tracks are not carried over)"]


def test_writer_mkv_keeps_attachments(tmp_path: Path) -> None:
    src = media.with_attachment(media.make_clip(tmp_path / "subs.mkv", frames=3, subtitles=["eng"]))
    out = tmp_path / "att_out.mkv"
    passthrough(src, out)
    with av.open(str(out)) as c:
        found = [(a.name, a.data) for a in c.streams.attachments]
        assert [s.language for s in c.streams.subtitles] == ["eng"]
    assert found == [("font.ttf", b"not really a font" * 8)]


def test_writer_mkv_to_mp4_converts_what_mp4_cannot_hold(tmp_path: Path) -> None:
    src = media.multitrack_clip(tmp_path)
    out = tmp_path / "multi_out.mp4"
    _, result = passthrough(src, out)
    info = probe(out)
    assert [s.codec for s in info.subtitles] == ["mov_text", "mov_text"]
    assert any("converted to mov_text" in w for w in result.warnings)
    cues = [(t, d, text) for text, t, d in packets(out, "subtitles") if len(text) > 2]  # skip gap samples
    assert [(t, d) for t, d, _ in cues] == pytest.approx([(0.0, 0.24), (0.24, 0.24)])
    assert [text[2:] for _, _, text in cues] == [b"cue 0 of track 0", b"cue 1 of track 0"]
    assert [a.language for a in info.audio] == ["eng", "fre"]
    assert [c.title for c in info.chapters] == ["Opening", "Ending"]
    # Matroska rounds times to 1 ms, mp4 stores exact sample counts: payloads equal, times within 1 ms.
    got, want = packets(out, "audio", 0), packets(src, "audio", 0)
    assert [d for d, _, _ in got] == [d for d, _, _ in want]
    assert [t for _, t, _ in got] == pytest.approx([t for _, t, _ in want], abs=1e-3)


def test_writer_time_range_starts_at_zero_and_cuts_audio(tmp_path: Path) -> None:
    src = media.make_clip(tmp_path / "long.mp4", frames=25, audio=[media.AudioSpec()], options={"g": "6"})
    out = tmp_path / "range.mp4"
    _, result = passthrough(src, out, start=0.4, end=0.8)
    assert result.frames == 10
    times = video_times(out)
    assert times[0] == pytest.approx(0.0) and times[-1] == pytest.approx(0.36)
    audio = packets(out, "audio")
    assert audio[0][1] >= 0 and audio[-1][1] < 0.4 + 1e-6
    source_audio = {d for d, _, _ in packets(src, "audio")}
    assert all(d in source_audio for d, _, _ in audio)  # copied, not re-encoded
    assert 0.35 < sum(d for _, _, d in audio) <= 0.42
    # A range that ends between two frames: the last frame keeps its full 40 ms.
    _, result = passthrough(src, tmp_path / "offgrid.mp4", start=0.5, end=0.7)
    assert result.frames == 5 and result.duration == pytest.approx(0.2)
    assert probe(tmp_path / "offgrid.mp4").duration == pytest.approx(0.2)


def test_writer_time_range_cuts_subtitles_and_chapters(tmp_path: Path) -> None:
    src = media.multitrack_clip(tmp_path)  # cues [0, 0.24) and [0.24, 0.48); chapters at 0 and 0.2
    out = tmp_path / "cut.mkv"
    _, result = passthrough(src, out, start=0.12, end=0.4)
    assert result.frames == 7  # 0.12 .. 0.36
    cues = [(round(t, 3), round(d, 3), text) for text, t, d in packets(out, "subtitles")]
    # The first cue is on screen at 0.12: kept, moved to 0 and shortened; the second one shifted.
    assert cues == [(0.0, 0.12, b"cue 0 of track 0"), (0.12, 0.24, b"cue 1 of track 0")]
    chapters = probe(out).chapters
    assert [(c.title, round(c.start, 3), round(c.end, 3)) for c in chapters] == [
        ("Opening", 0.0, 0.08),
        ("Ending", 0.08, 0.28),
    ]


def test_writer_webm_transcodes_what_webm_cannot_hold(tmp_path: Path) -> None:
    """WebM takes only Opus/Vorbis audio and WebVTT text: AAC 48 kHz and FLAC 44.1 kHz become Opus
    (48 kHz, the only rates Opus has), SubRip becomes WebVTT, each with one warning."""
    src = media.multitrack_clip(tmp_path)
    out = tmp_path / "out.webm"
    _, result = passthrough(src, out, options=EncodeOptions(codec="libvpx-vp9", crf=40))
    assert (result.audio_copied, result.audio_transcoded, result.subtitles_copied) == (0, 2, 2)
    assert len(result.warnings) == 4
    assert sum("transcoded to libopus" in w for w in result.warnings) == 2
    info = probe(out)
    assert info.codec == "vp9"
    assert [(a.codec, a.sample_rate, a.channels, a.language) for a in info.audio] == [
        ("opus", 48000, 2, "eng"),
        ("opus", 48000, 1, "fre"),
    ]
    assert [(s.codec, s.language) for s in info.subtitles] == [("webvtt", "eng"), ("webvtt", "spa")]
    shift = video_times(out)[0]  # Opus pre-skip makes WebM shift every stream alike
    cues = [(round(t - shift, 3), text) for text, t, _ in packets(out, "subtitles")]
    assert cues == [(0.0, b"cue 0 of track 0"), (0.24, b"cue 1 of track 0")]
    with av.open(str(out)) as c:
        audio_seconds = sum(float(p.duration * p.time_base) for p in c.demux(audio=1) if p.size)
    assert audio_seconds == pytest.approx(0.48, abs=0.03)


def test_writer_nvenc_without_gpu_fails_clearly(tmp_path: Path) -> None:
    src = media.single_frame_clip(tmp_path)
    try:
        writer = VideoWriter(tmp_path / "gpu.mp4", source=src, options=EncodeOptions(codec="h264_nvenc"))
    except VideoWriteError as e:
        assert "h264_nvenc" in str(e) and "NVIDIA" in str(e)
        assert leftovers(tmp_path) == []
        return
    writer.abort()
    pytest.skip("an NVENC encoder started on this machine")


# -- writer: safety ----------------------------------------------------------------------------------
def test_writer_refuses_input_and_existing_output(tmp_path: Path) -> None:
    src = media.single_frame_clip(tmp_path)
    before = src.read_bytes()
    with pytest.raises(OutputExistsError, match="is the input"):
        VideoWriter(src, source=src, overwrite=True)
    link = tmp_path / "same_inode.mp4"
    os.link(src, link)
    with pytest.raises(OutputExistsError, match="is the input"):
        VideoWriter(link, source=src, overwrite=True)
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="already exists"):
        VideoWriter(existing, source=src)
    passthrough(src, existing, overwrite=True)
    assert probe(existing).frame_count == 1
    assert src.read_bytes() == before and leftovers(tmp_path) == []


def test_writer_unwritable_or_missing_folder(tmp_path: Path) -> None:
    src = media.single_frame_clip(tmp_path)
    missing = tmp_path / "no" / "such" / "out.mp4"
    with pytest.raises(VideoWriteError, match="does not exist") as exc:
        VideoWriter(missing, source=src)
    assert str(missing.parent) in str(exc.value)
    with pytest.raises(ConfigError, match="extension"):
        VideoWriter(tmp_path / "out.xyz", source=src)
    if os.geteuid() == 0:
        return  # root writes anywhere; the permission case cannot be staged
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(VideoWriteError, match="not writable"):
            VideoWriter(locked / "out.mp4", source=src)
    finally:
        locked.chmod(0o700)


def test_writer_aborts_on_exception_and_leaves_nothing(tmp_path: Path) -> None:
    src = media.cfr_clip(tmp_path)
    out = tmp_path / "aborted.mp4"
    with pytest.raises(RuntimeError), VideoWriter(out, source=src) as writer:
        writer.write(media.pattern(0, 48, 64), 0)
        assert writer.tmp_path.exists() and writer.tmp_path.name.startswith(".")
        assert not writer.tmp_path.name.endswith(".mp4")
        raise RuntimeError("model crashed")
    assert not out.exists() and leftovers(tmp_path) == []


def test_writer_rejects_bad_frames_and_pts(tmp_path: Path) -> None:
    src = media.cfr_clip(tmp_path)
    with VideoWriter(tmp_path / "bad.mp4", source=src) as writer:
        with pytest.raises(VideoWriteError, match="does not match"):
            writer.write(np.zeros((10, 10, 3), np.uint8), 0)
        with pytest.raises(VideoWriteError, match="uint8 or uint16"):
            writer.write(np.zeros((48, 64, 3), np.float32), 0)
        writer.write(media.pattern(0, 48, 64), 512)
        writer.write(media.pattern(1, 48, 64), 1024)
        with pytest.raises(VideoWriteError, match="not after"):
            writer.write(media.pattern(2, 48, 64), 1024)
        writer.abort()
    with pytest.raises(VideoWriteError, match="no frame"):
        VideoWriter(tmp_path / "empty_out.mp4", source=src).commit()
    assert leftovers(tmp_path) == [] and not (tmp_path / "bad.mp4").exists()


def test_writer_lets_callers_reuse_their_buffer(tmp_path: Path) -> None:
    src = media.cfr_clip(tmp_path)
    out = tmp_path / "reuse.mkv"
    buffer = np.zeros((48, 64, 3), np.uint8)
    with VideoWriter(out, source=src) as writer:
        for i in range(4):
            buffer[...] = media.pattern(i, 48, 64)  # the same array, overwritten every frame
            writer.write(buffer, i * 512)
    with VideoReader(out) as reader:  # its audio (0.4 s) outlasts the video (0.16 s): not "truncated"
        frames = [f.image for f in reader]
    assert len(frames) == 4
    for i, img in enumerate(frames):
        assert psnr(img, media.pattern(i, 48, 64), 255) > 30


def test_writer_verification_failure_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = media.cfr_clip(tmp_path)
    out = tmp_path / "unverified.mp4"
    writer = VideoWriter(out, source=src)
    for i in range(3):
        writer.write(media.pattern(i, 48, 64), i * 512)
    writer.frames_written += 1  # pretend one more frame went in than the file will hold
    writer._written_pts.append(99999)
    with pytest.raises(VideoWriteError, match="verification failed"):
        writer.commit()
    assert not out.exists() and leftovers(tmp_path) == []


# -- real footage --------------------------------------------------------------------------------
@pytest.mark.slow
def test_bigbuckbunny_51_aac_packets_identical(tmp_path: Path) -> None:
    """Real footage: 132 frames of 1280x720 through reader and writer, 5.1 AAC copied bit for bit."""
    src = media.bigbuckbunny()
    out = tmp_path / "bbb.mp4"
    pts, result = passthrough(src, out, options=EncodeOptions(preset="ultrafast", crf=30))
    assert result.frames == 132 and result.audio_copied == 1 and result.warnings == []
    info = probe(out)
    assert info.frame_count == 132 and info.audio[0].layout == "5.1"
    assert video_times(out) == pytest.approx([p / 12800 for p in pts], abs=1e-9)
    got, want = packets(out, "audio"), packets(src, "audio")
    assert len(got) == len(want) == 249
    assert got == want  # payload, pts and duration of every packet
