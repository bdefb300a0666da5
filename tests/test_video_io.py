"""Video input: probe, reader and encode options on tiny clips generated with PyAV (tests/media.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import media
import numpy as np
import pytest
from video_checks import packets, passthrough, psnr, video_times

from fmanetpp_cli.errors import (
    ConfigError,
    UnsupportedVideoError,
    VideoDecodeError,
    VideoOpenError,
)
from fmanetpp_cli.video import EncodeOptions, VideoReader, choose_pix_fmt, probe


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


def test_a_png_with_an_icc_profile_is_read_without_crashing(tmp_path) -> None:
    """PyAV 16.1 segfaults when the side data of such a frame is collected: probe must not touch it."""
    import subprocess
    import sys

    from PIL import Image, ImageCms

    path = tmp_path / "icc.png"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (64, 48), (200, 40, 90)).save(path, icc_profile=icc)
    code = (
        "import gc, sys\n"
        "from fmanetpp_cli.synth.io import read_frames\n"
        "from fmanetpp_cli.video import probe\n"
        "info = probe(sys.argv[1]); frames = read_frames(sys.argv[1]); gc.collect()\n"
        "print(info.width, info.height, frames[0][0, 0].tolist())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["64", "48", "[200,", "40,", "90]"]
