"""Video output: the writer's timing, stream carry-over and safety on tiny clips, and real footage."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import media
import numpy as np
import pytest
from video_checks import leftovers, packets, passthrough, psnr, shown_span, video_times

from fmanetpp_cli.errors import (
    ConfigError,
    OutputExistsError,
    VideoWriteError,
)
from fmanetpp_cli.video import EncodeOptions, VideoReader, VideoWriter, probe


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


def test_writer_interleaves_audio_with_video(tmp_path: Path) -> None:
    """Audio is muxed as the video advances (bounded memory), not appended at the end."""
    src = media.make_clip(tmp_path / "two_s.mkv", frames=50, audio=[media.AudioSpec()])
    out = tmp_path / "interleaved.mp4"
    passthrough(src, out, options=EncodeOptions(preset="ultrafast"))
    with av.open(str(out)) as c:
        order = [p.stream.type for p in c.demux() if p.size]
    last_video = max(i for i, kind in enumerate(order) if kind == "video")
    audio_positions = [i for i, kind in enumerate(order) if kind == "audio"]
    assert sum(i < last_video for i in audio_positions) > 0.9 * len(audio_positions)
    assert min(audio_positions) < len(order) // 10


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
    with pytest.raises(OutputExistsError, match="is the input"):
        VideoWriter(src, info=probe(src), overwrite=True)  # known only through its info
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
