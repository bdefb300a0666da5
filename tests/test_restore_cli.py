"""`fmanetpp restore` end to end: generated clips through the streaming runner, the CLI, errors.

Most cases use the toy models of ``test_pipeline.py`` (exact, fast); a few run the real tiny presets with
random weights on very small frames. Clips come from ``tests/media.py``.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from cli_run import run_cli
from media import (
    VFR_PTS,
    audio_only_clip,
    cfr_clip,
    empty_file,
    make_clip,
    multitrack_clip,
    not_a_video,
    odd_size_clip,
    rotated_clip,
    single_frame_clip,
    tenbit_clip,
    truncated_clip,
    vfr_clip,
)
from toy_models import Identity4, ToySequence, ToyWindow

from fmanetpp_cli.cli.app import main
from fmanetpp_cli.pipeline import RestoreOptions, restore_video
from fmanetpp_cli.video import EncodeOptions, VideoReader, probe

LOSSLESS = EncodeOptions(codec="ffv1", pix_fmt="bgr0")  # RGB in, RGB out: no YUV rounding


def _video_pts(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        return sorted(p.pts for p in c.demux(vs) if p.size > 0)


def _audio_packets(path: Path) -> list[list[tuple[int, bytes]]]:
    with av.open(str(path)) as c:
        streams = list(c.streams.audio)
        out: list[list[tuple[int, bytes]]] = [[] for _ in streams]
        for p in c.demux(*streams):
            if p.size > 0:
                out[streams.index(p.stream)].append((p.pts, bytes(p)))
        return out


def _frames(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as r:
        return [f.image for f in r]


# ----------------------------------------------------------------------------------------------------------
# The runner on generated clips


def test_frames_timestamps_and_audio_kept(tmp_path: Path) -> None:
    src = cfr_clip(tmp_path)
    out = tmp_path / "out.mp4"
    seen: list[tuple[int, int | None]] = []
    opts = RestoreOptions(chunk=5, tile=0)
    report = restore_video(
        src, out, opts, ToySequence(radius=2), on_progress=lambda d, t: seen.append((d, t))
    )
    info = probe(out)
    assert (info.width, info.height) == (4 * 64, 4 * 48)
    assert report.frames == 10 and [d for d, _ in seen] == list(range(1, 11)) and seen[-1][1] == 10
    assert _video_pts(out) == _video_pts(src)
    assert _audio_packets(out) == _audio_packets(src)
    assert report.exact_stitching and report.write.audio_copied == 1


def test_chunked_video_equals_single_pass(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=12, width=32, height=16, codec="ffv1", pix_fmt="bgr0")
    a, b = tmp_path / "a.mkv", tmp_path / "b.mkv"
    model = ToySequence(radius=2)
    restore_video(src, a, RestoreOptions(chunk=5, tile=0, encode=LOSSLESS), model)
    restore_video(src, b, RestoreOptions(chunk=64, tile=0, encode=LOSSLESS), model)
    fa, fb = _frames(a), _frames(b)
    assert len(fa) == len(fb) == 12
    # Float rounding may move a value across a quantisation step, nothing more.
    diffs = [np.abs(x.astype(int) - y.astype(int)) for x, y in zip(fa, fb, strict=True)]
    assert max(int(d.max()) for d in diffs) <= 1 and np.mean([d.mean() for d in diffs]) < 1e-3


def test_identity_model_through_tiles_reproduces_input(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=3, width=64, height=24, codec="ffv1", pix_fmt="bgr0")
    out = tmp_path / "out.mkv"
    restore_video(src, out, RestoreOptions(tile=16, tile_overlap=4, encode=LOSSLESS), Identity4())
    for lr, hr in zip(_frames(src), _frames(out), strict=True):
        np.testing.assert_array_equal(hr[::4, ::4], lr)


def test_identity_restore_matches_source_at_any_width(tmp_path: Path) -> None:
    """Width 40 is not a multiple of 16: every column must still come through (within codec rounding)."""
    src = make_clip(tmp_path / "in.mkv", frames=2, width=40, height=24)
    out = tmp_path / "out.mkv"
    restore_video(src, out, RestoreOptions(tile=0, encode=LOSSLESS), Identity4())
    for lr, hr in zip(_frames(src), _frames(out), strict=True):
        assert np.abs(hr[::4, ::4].astype(int) - lr.astype(int)).max() <= 2


def test_variable_frame_rate_keeps_every_timestamp(tmp_path: Path) -> None:
    src = vfr_clip(tmp_path)
    out = tmp_path / "out.mp4"
    report = restore_video(src, out, RestoreOptions(tile=0), ToyWindow(3))
    assert report.frames == len(VFR_PTS)
    tb = probe(out).time_base
    got = [float(p * tb) for p in _video_pts(out)]
    assert got == pytest.approx([p / 1000 for p in VFR_PTS], abs=1e-3)


def test_ten_bit_stays_ten_bit(tmp_path: Path) -> None:
    src = tenbit_clip(tmp_path)
    out = tmp_path / "out.mp4"
    report = restore_video(src, out, RestoreOptions(tile=0), Identity4())
    info = probe(out)
    assert info.bit_depth == 10 and report.write.pix_fmt.startswith("yuv420p10")
    with VideoReader(out) as r:
        assert next(iter(r)).image.dtype == np.uint16


def test_odd_size_gives_exactly_four_times(tmp_path: Path) -> None:
    src = odd_size_clip(tmp_path)
    out = tmp_path / "out.mkv"
    report = restore_video(src, out, RestoreOptions(tile=0), ToySequence(radius=1))
    assert (probe(out).width, probe(out).height) == (132, 68) and report.frames == 6


def test_other_scale_is_resampled(tmp_path: Path) -> None:
    src = cfr_clip(tmp_path, frames=3)
    out = tmp_path / "out.mp4"
    restore_video(src, out, RestoreOptions(scale=2, tile=0), Identity4())
    assert (probe(out).width, probe(out).height) == (128, 96)


def test_multitrack_audio_and_subtitles_survive(tmp_path: Path) -> None:
    src = multitrack_clip(tmp_path)
    out = tmp_path / "out.mkv"
    report = restore_video(src, out, RestoreOptions(tile=0), ToySequence(radius=1))
    info = probe(out)
    assert len(info.audio) == 2 and len(info.subtitles) == 2
    assert [a.language for a in info.audio] == ["eng", "fre"]
    assert _audio_packets(out) == _audio_packets(src)
    assert report.write.subtitles_copied == 2


@pytest.mark.parametrize("name", ["toy-window", "toy-sequence", "fmanet-small-a", "fmanetpp-tiny"])
def test_single_frame_clip(tmp_path: Path, name: str) -> None:
    from fmanetpp_cli.models import create_model, list_models

    if name.startswith("toy"):
        model: torch.nn.Module = ToyWindow(3) if name == "toy-window" else ToySequence(radius=2)
    elif name in list_models():
        torch.manual_seed(0)
        model = create_model(name)
    else:
        pytest.skip(f"preset {name} not available")
    out = tmp_path / "out.mp4"
    report = restore_video(single_frame_clip(tmp_path), out, RestoreOptions(tile=0), model)
    assert report.frames == 1 and len(_video_pts(out)) == 1 and probe(out).width == 4 * 64


def test_rotation_is_carried_over(tmp_path: Path) -> None:
    src = rotated_clip(tmp_path)
    out = tmp_path / "out.mp4"
    restore_video(src, out, RestoreOptions(tile=0), Identity4())
    info = probe(out)
    assert (info.display_width, info.display_height) == (4 * 48, 4 * 64)


def test_time_range_and_compare(tmp_path: Path) -> None:
    src = cfr_clip(tmp_path, frames=20)
    out, side = tmp_path / "out.mp4", tmp_path / "side.mp4"
    report = restore_video(
        src, out, RestoreOptions(start=0.2, end=0.6, compare=side, tile=0), ToySequence(radius=1)
    )
    assert report.frames == 10 == len(_video_pts(out)) == len(_video_pts(side))
    assert (probe(side).width, probe(side).height) == (2 * 4 * 64, 4 * 48)
    assert probe(out).start_time == pytest.approx(0.0, abs=0.01)


def _two_scene_clip(path: Path, n: int = 6) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 32, 24, "bgr0"
        s.time_base = Fraction(1, 25)
        yy, xx = np.mgrid[0:24, 0:32]
        for i in range(2 * n):
            img = np.zeros((24, 32, 3), np.uint8)
            if i < n:
                img[..., 0], img[..., 1], img[..., 2] = (xx * 8 + i * 3) % 256, yy * 10, 60
            else:
                img[..., 0], img[..., 1], img[..., 2] = 10, 220, (xx * 6 - i * 2) % 256
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return path


def test_scene_detect_resets_context(tmp_path: Path) -> None:
    src = _two_scene_clip(tmp_path / "cut.mkv")
    model = ToySequence(radius=2)
    with_cut, plain = tmp_path / "a.mkv", tmp_path / "b.mkv"
    report = restore_video(src, with_cut, RestoreOptions(scene_detect=True, tile=0, encode=LOSSLESS), model)
    restore_video(src, plain, RestoreOptions(tile=0, encode=LOSSLESS), model)
    assert report.scene_cuts == (6,)
    a, b = _frames(with_cut), _frames(plain)
    # Far from the cut, nothing changes; next to it, the other scene no longer leaks in.
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[-1], b[-1])
    assert not np.array_equal(a[5], b[5]) and not np.array_equal(a[6], b[6])


def test_memory_budget_forces_tiles(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=2, width=160, height=96, codec="ffv1", pix_fmt="bgr0")
    tiled, whole = tmp_path / "t.mkv", tmp_path / "w.mkv"
    report = restore_video(src, tiled, RestoreOptions(memory_budget=1 << 20, encode=LOSSLESS), Identity4())
    assert 0 < report.tile < 160
    restore_video(src, whole, RestoreOptions(encode=LOSSLESS), Identity4())
    for a, b in zip(_frames(tiled), _frames(whole), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    opts = RestoreOptions(device="cuda", precision="fp16", tile=0)
    report = restore_video(cfr_clip(tmp_path, frames=3), out, opts, ToySequence(radius=1))
    assert report.device.startswith("cuda") and report.frames == 3


def test_real_presets_run(tmp_path: Path) -> None:
    from fmanetpp_cli.models import create_model, list_models

    src = make_clip(tmp_path / "in.mp4", frames=4, width=16, height=16)
    for name in ("fmanet-small-a", "fmanetpp-tiny"):
        if name not in list_models():
            continue
        torch.manual_seed(0)
        model = create_model(name)
        out = tmp_path / f"{name}.mp4"
        report = restore_video(src, out, RestoreOptions(tile=0), model)
        assert report.frames == 4 and probe(out).width == 64


# ----------------------------------------------------------------------------------------------------------
# The CLI


@pytest.fixture
def toy_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the CLI load a toy model instead of resolving and reading weights."""
    import fmanetpp_cli.checkpoints as ckpt
    import fmanetpp_cli.checkpoints.resolve as resolve

    monkeypatch.setattr(resolve, "resolve_weights", lambda model, weights, offline=None: Path("toy"))
    monkeypatch.setattr(ckpt, "load_model", lambda path, device="cpu": ToySequence(radius=1))


def test_cli_restore_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], toy_weights: None) -> None:
    src = cfr_clip(tmp_path, frames=4)
    out = tmp_path / "out.mp4"
    argv = ["restore", str(src), str(out), "--tile", "off", "--json", "--compare", "--ensemble", "2"]
    code, stdout, _ = run_cli(argv, capsys)
    assert code == 0
    report = json.loads(stdout)
    assert report["frames"] == 4 and report["output"] == str(out) and report["ensemble"] == 2
    assert (tmp_path / "out.compare.mp4").is_file()


def test_cli_summary_and_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str], toy_weights: None) -> None:
    src = cfr_clip(tmp_path, frames=3)
    code, stdout, _ = run_cli(["restore", str(src), str(tmp_path / "a.mp4"), "--tile", "0"], capsys)
    assert code == 0 and "restored 3 frames" in stdout and "audio copied" in stdout
    code, stdout, stderr = run_cli(
        ["restore", str(src), str(tmp_path / "b.mp4"), "-q", "--tile", "0"], capsys
    )
    assert code == 0 and stdout == "" and stderr == ""


def test_cli_passes_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, toy_weights: None
) -> None:
    import fmanetpp_cli.cli.restore as cli_restore

    seen: dict = {}
    monkeypatch.setattr(cli_restore, "restore_video", lambda *a, **k: seen.update(args=a) or _Stop())
    monkeypatch.setattr(cli_restore, "render_summary", lambda report: None)
    src = cfr_clip(tmp_path, frames=2)
    argv = ["restore", str(src), str(tmp_path / "o.mkv"), "--scale", "2", "--chunk", "9", "--overlap", "3"]
    argv += ["--tile", "128", "--device", "cpu", "--precision", "bf16", "--scene-detect", "--start", "0:01"]
    argv += ["--scene-threshold", "0.3"]
    argv += ["--end", "2.5", "--codec", "libx265", "--crf", "22", "--overwrite", "-q"]
    argv += ["--memory-budget", "1G", "--ensemble", "4"]
    assert run_cli(argv, capsys)[0] == 0
    _, _, opts, model = seen["args"][:4]
    assert (opts.scale, opts.chunk, opts.overlap, opts.tile, opts.device, opts.precision) == (
        2.0, 9, 3, 128, "cpu", "bf16"
    )  # fmt: skip
    assert opts.scene_detect and opts.scene_threshold == 0.3 and opts.overwrite
    assert opts.start == 1.0 and opts.end == 2.5
    assert opts.ensemble == 4
    assert opts.memory_budget == 1 << 30 and opts.encode.codec == "libx265" and opts.encode.crf == 22
    assert isinstance(model, ToySequence)


class _Stop:
    """Stands in for a report when restore_video is patched out."""


def _assert_one_line_error(code: int, stderr: str, name: str) -> None:
    assert code != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert name in lines[0] and "Traceback" not in stderr


@pytest.mark.parametrize(
    "make",
    [empty_file, not_a_video, audio_only_clip, truncated_clip, lambda d: d / "missing.mp4"],
    ids=["empty", "not-a-video", "audio-only", "truncated", "missing"],
)
def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], toy_weights: None, make) -> None:
    src = make(tmp_path)
    out = tmp_path / "out.mp4"
    code, _, stderr = run_cli(["restore", str(src), str(out)], capsys)
    _assert_one_line_error(code, stderr, src.name)
    assert not out.exists() and not list(tmp_path.glob(".out.mp4.*"))


def test_cli_debug_shows_the_traceback(tmp_path: Path, toy_weights: None) -> None:
    from fmanetpp_cli.errors import VideoOpenError

    with pytest.raises(VideoOpenError):
        main(["--debug", "restore", str(tmp_path / "missing.mp4"), str(tmp_path / "out.mp4")])


def test_cli_existing_output_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toy_weights: None
) -> None:
    src = cfr_clip(tmp_path, frames=2)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    code, _, stderr = run_cli(["restore", str(src), str(out), "--tile", "0"], capsys)
    _assert_one_line_error(code, stderr, "out.mp4")
    assert "--overwrite" in stderr  # the way out is named
    assert out.read_bytes() == b"precious"
    code, _, stderr = run_cli(["restore", str(src), str(src), "--overwrite", "--tile", "0"], capsys)
    _assert_one_line_error(code, stderr, src.name)
    assert "--overwrite" not in stderr  # it would not help: the input is never replaced


@pytest.mark.parametrize(
    ("flags", "word"),
    [
        (["--precision", "fp16", "--device", "cpu"], "fp16"),
        (["--chunk", "2", "--overlap", "1"], "chunk"),
        (["--start", "abc"], "--start"),
        (["--tile", "big"], "--tile"),
        (["--scale", "0"], "--scale"),
        (["--ensemble", "3"], "--ensemble"),
        (["--codec", "nosuchcodec"], "nosuchcodec"),
        *([] if torch.cuda.is_available() else [(["--device", "cuda:0"], "CUDA")]),
    ],
)
def test_cli_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toy_weights: None, flags: list[str], word: str
) -> None:
    src = cfr_clip(tmp_path, frames=2)
    out = tmp_path / "out.mp4"
    code, _, stderr = run_cli(["restore", str(src), str(out), *flags], capsys)
    _assert_one_line_error(code, stderr, word)
    assert not out.exists()


def test_cli_truncated_output_never_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, toy_weights: None
) -> None:
    """A failure in the middle (here: the model breaks on the second chunk) leaves no output behind."""
    import fmanetpp_cli.checkpoints as ckpt

    class Breaks(ToySequence):
        calls = 0

        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
            Breaks.calls += 1
            if Breaks.calls > 1:
                raise MemoryError
            return super().forward(x)

    monkeypatch.setattr(ckpt, "load_model", lambda path, device="cpu": Breaks(radius=1))
    src = cfr_clip(tmp_path, frames=10)
    out = tmp_path / "out.mp4"
    code, _, stderr = run_cli(["restore", str(src), str(out), "--chunk", "4", "--tile", "0"], capsys)
    assert code == 1 and "out of memory" in stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == [src.name]


def test_encoder_failure_surfaces_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoding runs on a worker thread: its error reaches the caller and both outputs are removed."""
    import fmanetpp_cli.pipeline.runner as runner
    from fmanetpp_cli.errors import VideoWriteError

    real_write = runner.VideoWriter.write

    def flaky(self: object, image: np.ndarray, pts: int) -> None:
        if pts >= 3:
            raise VideoWriteError("disk full (simulated)")
        real_write(self, image, pts)  # type: ignore[arg-type]

    monkeypatch.setattr(runner.VideoWriter, "write", flaky)
    src = cfr_clip(tmp_path, frames=10)
    with pytest.raises(VideoWriteError, match="disk full"):
        restore_video(
            src,
            tmp_path / "out.mp4",
            RestoreOptions(chunk=3, tile=0, compare=tmp_path / "c.mp4"),
            ToyWindow(3),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


# ----------------------------------------------------------------------------------------------------------
# Real footage


@pytest.mark.slow
def test_bigbuckbunny_51_audio_packets_identical(tmp_path: Path) -> None:
    """Real footage, a range from the middle: the 5.1 AAC packets of that range come out byte for byte."""
    from media import bigbuckbunny

    src = bigbuckbunny()
    out = tmp_path / "bbb.mp4"
    report = restore_video(src, out, RestoreOptions(start=1.0, end=1.5, scale=0.25, tile=0), Identity4())
    with VideoReader(src) as r:
        expected = sum(1 for f in r if 1.0 <= f.time - r.info.start_time < 1.5)
    assert report.frames == len(_video_pts(out)) == expected > 10
    assert (probe(out).width, probe(out).height) == (320, 180)
    (src_audio,), (out_audio,) = _audio_packets(src), _audio_packets(out)
    assert probe(out).audio[0].channels == 6 and probe(out).audio[0].layout == "5.1"
    assert len(out_audio) > 10
    # The same packets, contiguous in the source, all shifted by one constant (the range start).
    src_bytes = [data for _, data in src_audio]
    k = src_bytes.index(out_audio[0][1])
    assert src_bytes[k : k + len(out_audio)] == [data for _, data in out_audio]
    shifts = {s_pts - o_pts for (s_pts, _), (o_pts, _) in zip(src_audio[k:], out_audio, strict=False)}
    assert len(shifts) == 1
