"""Degradation synthesis: exposure schedules and averaging, camera motion with its flow, noise, degrade."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from media import make_clip, pattern

from fmanetpp_cli.errors import ConfigError, InputShapeError, OutputExistsError
from fmanetpp_cli.synth import DegradeOptions, MotionRange, Trajectory, camera_motion_clip, degrade
from fmanetpp_cli.synth.exposure import (
    average_exposures,
    bicubic_down,
    fixed_schedule,
    frames_in_window,
    make_schedule,
    random_schedule,
)
from fmanetpp_cli.synth.interp import forward_flows, pixel_grid, sample_moving
from fmanetpp_cli.synth.io import encode_png, read_frames, read_image, write_frame_folder, write_png
from fmanetpp_cli.synth.motion import _affine, render
from fmanetpp_cli.synth.noise import add_gaussian_noise, degrade_lr, h264_roundtrip
from fmanetpp_cli.video import VideoReader


def textured(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth random texture ``[3, h, w]`` in [0, 1] (low-pass noise, so bilinear sampling is accurate)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8 + 2, w // 8 + 2, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)[0]


def warp(img: torch.Tensor, flow_lr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """Backward-warp ``img [3, H, W]`` by an LR flow ``[2, h, w]`` upsampled to HR."""
    fl = F.interpolate(flow_lr[None], scale_factor=scale, mode="bilinear", align_corners=False)[0] * scale
    H, W = img.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    grid = torch.stack([(xs + fl[0] + 0.5) * 2 / W - 1, (ys + fl[1] + 0.5) * 2 / H - 1], -1)
    return F.grid_sample(img[None], grid[None], align_corners=False)[0]


def test_fixed_schedule_and_level_check() -> None:
    assert fixed_schedule(4, 3) == [3, 3, 3, 3]
    with pytest.raises(ConfigError):
        fixed_schedule(4, 6)


def test_random_schedule_is_a_seeded_stepwise_walk() -> None:
    a = random_schedule(60, np.random.default_rng(7), interval=5)
    b = random_schedule(60, np.random.default_rng(7), interval=5)
    assert a == b
    assert all(1 <= v <= 5 for v in a)
    for i in range(1, 60):
        if i % 5:
            assert a[i] == a[i - 1], "the level may change only at multiples of the interval"
        else:
            assert abs(a[i] - a[i - 1]) <= 1
    assert len(set(random_schedule(200, np.random.default_rng(1)))) > 1


def test_make_schedule_accepts_levels_random_and_mixed() -> None:
    rng = np.random.default_rng(0)
    assert make_schedule(3, "2", rng) == [2, 2, 2]
    mixed = make_schedule(5, "mixed", rng)
    assert len(set(mixed)) == 1
    with pytest.raises(ConfigError):
        make_schedule(3, "sometimes", rng)


def test_average_exposures_window_lengths() -> None:
    # Source frame k holds the value k, so the mean of a window tells which frames it averaged.
    src = torch.arange(40, dtype=torch.float32)[:, None, None, None].expand(40, 3, 4, 4)
    blurry, sharp = average_exposures(src, [1, 3, 5], interval=5)
    assert frames_in_window(3, 5) == 3
    assert blurry[:, 0, 0, 0].tolist() == [0.0, 6.0, 12.0]  # means of {0}, {5,6,7}, {10..14}
    assert sharp[:, 0, 0, 0].tolist() == [0.0, 5.0, 10.0]  # the window's first frame
    with pytest.raises(InputShapeError):
        average_exposures(src[:12], [5, 5, 5], interval=5)


def test_bicubic_down_keeps_constants_and_shape() -> None:
    x = torch.full((2, 3, 16, 24), 0.25)
    y = bicubic_down(x)
    assert y.shape == (2, 3, 4, 6)
    assert torch.allclose(y, torch.full_like(y, 0.25), atol=1e-6)
    with pytest.raises(InputShapeError):
        bicubic_down(torch.zeros(1, 3, 10, 16))


def test_camera_flow_aligns_ground_truth_frames() -> None:
    src = textured(256, 256)[None]
    traj = Trajectory.random(np.random.default_rng(3), MotionRange(max_speed=12.0))
    clip = camera_motion_clip(src, [4] * 4, traj, hr_hw=(64, 64))
    assert clip.lr.shape == (4, 3, 16, 16) and clip.gt.shape == (4, 3, 64, 64)
    assert clip.flow_next.shape == (4, 2, 16, 16)
    assert torch.all(clip.flow_next[-1] == 0) and torch.all(clip.flow_prev[0] == 0)
    inner = (slice(None), slice(12, -12), slice(12, -12))
    for i in range(3):
        aligned = (warp(clip.gt[i + 1], clip.flow_next[i]) - clip.gt[i]).abs()[inner].mean()
        unaligned = (clip.gt[i + 1] - clip.gt[i]).abs()[inner].mean()
        assert aligned < 0.25 * unaligned
        back = (warp(clip.gt[i], clip.flow_prev[i + 1]) - clip.gt[i + 1]).abs()[inner].mean()
        assert back < 0.25 * unaligned


def test_static_camera_gives_no_blur_and_zero_flow() -> None:
    src = textured(96, 96)[None]
    still = Trajectory((0.0, 0.0), (0.0, 0.0), (0.0, 0.0), 0.1, (0.0, 0.0), 0.0, 0.0)
    clip = camera_motion_clip(src, [5, 5, 5], still, hr_hw=(64, 64))
    assert torch.allclose(clip.flow_next, torch.zeros_like(clip.flow_next), atol=1e-5)
    assert torch.allclose(clip.lr, bicubic_down(clip.gt), atol=1e-4)


def test_longer_exposure_blurs_more() -> None:
    src = textured(256, 256, seed=5)[None]
    traj = Trajectory((10.0, 3.0), (0.0, 0.0), (0.0, 0.0), 0.1, (0.0, 0.0), 0.0, 0.0)
    short = camera_motion_clip(src, [1, 1], traj, hr_hw=(64, 64))
    long = camera_motion_clip(src, [5, 5], traj, hr_hw=(64, 64))

    def sharpness(x: torch.Tensor) -> float:
        return (x[..., 1:] - x[..., :-1]).abs().mean().item()

    assert sharpness(long.lr) < 0.8 * sharpness(short.lr)


def edge_ramp_steps(max_subframes: int, levels: list[int]) -> list[torch.Tensor]:
    """Pixel-to-pixel increments of a vertical edge smeared by a fast pan (120 HR px per frame interval),
    inside the ramp, one tensor per frame; ``scale=1`` keeps the blur at full resolution."""
    src = torch.zeros(1, 3, 64, 768)
    src[..., 384:] = 1.0
    pan = Trajectory((120.0, 0.0), (0.0, 0.0), (0.0, 0.0), 0.1, (0.0, 0.0), 0.0, 0.0)
    clip = camera_motion_clip(src, levels, pan, hr_hw=(32, 384), scale=1, max_subframes=max_subframes)
    steps = []
    for frame in clip.lr:
        row = frame[0, 16].double()
        inside = (row[:-1] > 0.02) & (row[1:] < 0.98)
        steps.append(row.diff()[inside])
    return steps


def test_long_exposure_is_a_continuous_smear_not_ghost_copies() -> None:
    # 5:5 of a 120 px pan: the ramp is ~120 px wide. Ghost copies show as flat runs (increments near 0)
    # between the copies' edges; a continuous smear rises at a near-constant rate.
    (dense,) = edge_ramp_steps(1024, [5])
    assert dense.numel() > 100
    assert dense.min() > 0.5 * dense.mean(), "no plateau inside the ramp"
    assert dense.max() < 1.5 * dense.mean()
    # The old cap of 48 renders (2.5 px apart) gave stacked copies; the check above catches them.
    (capped,) = edge_ramp_steps(48, [5])
    assert capped.min() < 0.1 * capped.mean()


def test_short_exposure_renders_are_unchanged_and_blurred() -> None:
    # 5:1 of the same pan needs 36 renders: below the old cap of 48, so exactly the old output, and a
    # smear of ~24 px (a blurred frame, not a sharp copy).
    new, old = edge_ramp_steps(1024, [1, 5]), edge_ramp_steps(48, [1, 5])
    assert torch.equal(new[0], old[0])
    assert 20 <= new[0].numel() <= 28 and new[0].min() > 0.5 * new[0].mean()
    src = textured(256, 256, seed=4)[None]
    traj = Trajectory.random(np.random.default_rng(5), MotionRange(max_speed=12.0))
    a = camera_motion_clip(src, [1, 2, 1], traj, hr_hw=(64, 64))
    b = camera_motion_clip(src, [1, 2, 1], traj, hr_hw=(64, 64), max_subframes=48)
    assert torch.equal(a.lr, b.lr) and torch.equal(a.gt, b.gt)


def test_chunked_long_exposures_are_deterministic_and_match_one_render() -> None:
    src = textured(384, 384, seed=6)[None]
    pan = Trajectory((150.0, 40.0), (0.0, 0.0), (0.0, 0.0), 0.1, (0.0, 0.0), 0.0, 0.0)
    a = camera_motion_clip(src, [5, 4], pan, hr_hw=(64, 64), subframe_step=0.5)
    b = camera_motion_clip(src, [5, 4], pan, hr_hw=(64, 64), subframe_step=0.5)
    assert torch.equal(a.lr, b.lr) and torch.equal(a.gt, b.gt)
    # Summing in chunks of RENDER_CHUNK renders is the mean of all renders (float rounding apart).
    n = 256  # a tiny step makes the cap the count
    centre = np.array([191.5, 191.5]) - pan.translation(np.array([0.5]))[0]  # as camera_motion_clip does
    M, bb = _affine(pan, (np.arange(n) + 0.5) / n, (64, 64), centre)
    whole = render(src[0], M, bb, (64, 64)).mean(0)
    c = camera_motion_clip(src, [5], pan, hr_hw=(64, 64), subframe_step=0.01, max_subframes=n)
    assert torch.allclose(c.lr[0], bicubic_down(whole[None])[0], atol=1e-5)
    with pytest.raises(ConfigError, match="subframe_step"):
        camera_motion_clip(src, [5], pan, hr_hw=(64, 64), subframe_step=0.0)
    with pytest.raises(ConfigError, match="max_subframes"):
        DegradeOptions(max_subframes=1)


def test_noise_is_seeded_and_compression_keeps_shape() -> None:
    x = torch.full((2, 3, 8, 8), 0.5)
    a = add_gaussian_noise(x, 5.0, torch.Generator().manual_seed(1))
    b = add_gaussian_noise(x, 5.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert 3.0 < (a - x).std().item() * 255 < 7.0
    frames = (np.random.default_rng(0).uniform(0, 255, (3, 15, 17, 3))).astype(np.uint8)
    out = h264_roundtrip(frames, crf=30)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert not np.array_equal(out, frames)
    q = degrade_lr(x, noise_sigma=0.0)
    assert torch.allclose(q, torch.full_like(q, 128 / 255))


def test_png_round_trip(tmp_path) -> None:
    img = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    assert encode_png(img).startswith(b"\x89PNG")
    write_png(tmp_path / "a.png", img)
    assert np.array_equal(read_image(tmp_path / "a.png"), img)


@pytest.mark.parametrize("matrix", [1, 6], ids=["bt709", "bt601"])
def test_frame_reader_decodes_as_the_video_reader(tmp_path, matrix: int) -> None:
    """eval/ and train/ read through ``read_frames``: same colours as the restore pipeline's reader."""
    color = {
        "colorspace": matrix,
        "color_primaries": matrix,
        "color_trc": 1 if matrix == 1 else 6,
        "color_range": 1,
    }
    clip = make_clip(tmp_path / f"m{matrix}.mp4", frames=4, width=72, height=40, color=color)
    frames = read_frames(clip)
    with VideoReader(clip) as reader:
        expected = [f.image for f in reader]
    assert len(frames) == len(expected) == 4
    for got, want in zip(frames, expected, strict=True):
        assert got.dtype == np.uint8 and np.array_equal(got, want)
    source = pattern(0, 40, 72).astype(float)
    assert np.abs(frames[0].astype(float) - source).mean() < 1.5  # and those colours are the source's
    assert [f.shape for f in read_frames(clip, start=1, count=2)] == [(40, 72, 3)] * 2


def test_degrade_camera_writes_pairs_sidecar_and_flow(tmp_path) -> None:
    still = (textured(96, 128, seed=2).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    write_png(tmp_path / "still.png", still)
    opts = DegradeOptions(exposure="random", frames=5, seed=11)
    report = degrade(tmp_path / "still.png", tmp_path / "out", opts)
    assert report.frames == 5 and report.lr_size == (24, 32) and report.gt_size == (96, 128) and report.flow
    side = json.loads((tmp_path / "out" / "degrade.json").read_text())
    assert [f["exposure_level"] for f in side["frames"]] == report.levels
    assert side["frames"][0]["duty_cycle"] == report.levels[0] / 5
    assert len(read_frames(tmp_path / "out" / "lr")) == 5
    flows = np.load(tmp_path / "out" / "flow.npz")
    assert flows["next"].shape == (5, 2, 24, 32)
    # The same seed reproduces the same bytes.
    degrade(tmp_path / "still.png", tmp_path / "again", opts)
    first, again = tmp_path / "out/lr/00000003.png", tmp_path / "again/lr/00000003.png"
    assert first.read_bytes() == again.read_bytes()
    with pytest.raises(OutputExistsError):
        degrade(tmp_path / "still.png", tmp_path / "out", opts)


def test_degrade_hfr_from_frame_folder(tmp_path) -> None:
    frames = [(np.full((16, 16, 3), 10 * k)).astype(np.uint8) for k in range(12)]
    write_frame_folder(tmp_path / "src", frames)
    opts = DegradeOptions(recipe="hfr", exposure="3", interval=4)
    report = degrade(tmp_path / "src", tmp_path / "out", opts)
    # Windows start at 0, 4, 8; each must have room for the longest (5:5) window of 4 frames.
    assert report.frames == 3 and not report.flow
    gt = read_frames(tmp_path / "out" / "gt")
    assert [int(f[0, 0, 0]) for f in gt] == [0, 40, 80]
    lr = read_frames(tmp_path / "out" / "lr")
    assert lr[1].shape == (4, 4, 3) and int(lr[1][0, 0, 0]) == 45  # 5:3 of 4 frames: round(2.4) = 2 frames


def test_advanced_trajectory_is_the_later_part_of_the_same_path() -> None:
    traj = Trajectory.random(np.random.default_rng(3), MotionRange(max_accel=2.0, max_shake=4.0))
    t = np.arange(6.0)
    later = traj.advanced(9.5)
    diff = later.translation(t) - traj.translation(t + 9.5)
    assert np.ptp(diff, axis=0).max() < 1e-9  # equal up to a constant offset
    speed = np.hypot(*later.velocity)
    assert abs(speed - np.hypot(*(np.array(traj.velocity) + 9.5 * np.array(traj.accel)))) < 1e-9
    assert later.rotation == traj.rotation and later.zoom == traj.zoom


def test_time_offset_makes_training_clips_move_faster(tmp_path) -> None:
    from fmanetpp_cli.train.config import config_from_dict
    from fmanetpp_cli.train.data import DegradedClips, load_sources

    g = torch.Generator().manual_seed(0)
    img = F.interpolate(torch.rand(1, 3, 20, 20, generator=g), size=(160, 160), mode="bicubic").clamp(0, 1)[0]
    write_png(tmp_path / "s.png", (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    speeds = []
    for offset in (0.0, 14.0):
        cfg = config_from_dict(
            {
                "out_dir": str(tmp_path / "run"),
                "data": {
                    "sources": [str(tmp_path / "s.png")],
                    "lr_patch": 8,
                    "frames": 3,
                    "downscale": 1,
                    "max_speed": 2.0,
                    "max_accel": 2.0,
                    "max_shake": 0.0,
                    "time_offset_max": offset,
                    "flip": False,
                },
            }
        )
        ds = DegradedClips(load_sources(cfg.data.sources, 1), cfg.data, seed=0)
        speeds.append(np.mean([ds[i]["flow_next"][:, 0].mean((-2, -1)).norm().item() for i in range(24)]))
    assert speeds[1] > 2 * speeds[0], speeds
    with pytest.raises(ConfigError, match="time_offset_max"):
        config_from_dict({"data": {"sources": ["x.png"], "time_offset_max": -1}})


def moving_frames(n: int, shift: float, width: int = 256) -> torch.Tensor:
    """``n`` frames of one smooth texture moving ``shift`` px to the right per frame, ``[n, 3, 64, W]``."""
    tex = textured(96, 512, seed=8)
    M = np.repeat(np.eye(2)[None], n, 0)
    b = np.stack([np.array([32.0 - shift * k, 16.0]) for k in range(n)])
    return render(tex, M, b, (64, width))


def test_forward_flows_find_a_translation() -> None:
    pytest.importorskip("cv2")
    frames = moving_frames(3, 5.0)
    flows = forward_flows(frames)
    assert flows.shape == (2, 2, 64, 256)
    inner = flows[:, :, 16:-16, 32:-32].mean((-2, -1))  # [2, 2]
    assert torch.allclose(inner, torch.tensor([[5.0, 0.0], [5.0, 0.0]]), atol=0.3), inner
    assert torch.equal(forward_flows(frames), flows)  # deterministic


def test_interpolation_is_exact_at_source_frames_and_moves_in_between() -> None:
    frames = moving_frames(3, 6.0)
    flows = torch.zeros(2, 2, 64, 256)
    flows[:, 0] = 6.0  # the true motion
    q = pixel_grid(64, 256)[None].expand(4, -1, -1)
    out = sample_moving(frames, flows, np.array([0.0, 1.0, 2.0, 0.5]), q).reshape(4, 3, 64, 256)
    assert torch.equal(out[0], frames[0]) and torch.equal(out[2], frames[2])
    assert torch.allclose(out[1], frames[1], atol=1e-6)
    half = moving_frames(2, 3.0)[1]  # the texture moved by 3 px: what time 0.5 must show
    inner = (slice(None), slice(8, -8), slice(16, -16))
    assert (out[3] - half)[inner].abs().mean() < 0.1 * (frames[1] - half)[inner].abs().mean()


def hfr_edge_steps(flows: bool, level: int) -> torch.Tensor:
    """Increments inside the ramp of an edge moving 8 px per source frame, averaged at ``level``."""
    src = torch.zeros(12, 3, 8, 256)
    for k in range(12):
        src[k, :, :, 100 + 8 * k :] = 1.0
    fl = torch.zeros(11, 2, 8, 256)
    fl[:, 0] = 8.0
    blurry, sharp = average_exposures(src, [level], interval=5, flows=fl if flows else None)
    row = blurry[0, 0, 4].double()
    inside = (row[:-1] > 0.02) & (row[1:] < 0.98)
    return row.diff()[inside]


def test_hfr_with_flow_interpolation_blurs_continuously() -> None:
    dense = hfr_edge_steps(True, 5)  # 5 source intervals x 8 px = a 40 px smear
    assert 36 <= dense.numel() <= 44 and dense.min() > 0.5 * dense.mean()
    stacked = hfr_edge_steps(False, 5)  # the plain average: 5 sharp copies 8 px apart
    assert stacked.min() < 0.1 * stacked.mean() or stacked.numel() < 36
    short = hfr_edge_steps(True, 1)  # 5:1 covers one source interval: an 8 px smear, not a sharp edge
    assert short.numel() >= 6 and short.min() > 0.5 * short.mean()
    assert hfr_edge_steps(False, 1).numel() <= 1


def test_camera_recipe_on_video_blurs_object_motion(tmp_path) -> None:
    pytest.importorskip("cv2")
    frames = moving_frames(6, 6.0)  # [6, 3, 64, 256]: an object (the texture) moving 6 px per frame
    still = Trajectory((0.0, 0.0), (0.0, 0.0), (0.0, 0.0), 0.1, (0.0, 0.0), 0.0, 0.0)
    flows = forward_flows(frames)
    held = camera_motion_clip(frames, [5] * 5, still, hr_hw=(64, 128), scale=1)
    moved = camera_motion_clip(frames, [5] * 5, still, hr_hw=(64, 128), scale=1, object_flows=flows)
    assert torch.equal(held.gt, moved.gt)  # the ground truth is each source frame, never interpolated
    assert torch.allclose(held.lr, held.gt, atol=1e-4)  # held: no blur at all

    # What a 5:5 shutter over content times i - 0.5 .. i + 0.5 sees: the texture at 96 - 6 c (exact).
    tex = textured(96, 512, seed=8)
    c = 2 + (np.arange(400) + 0.5) / 400 - 0.5
    b = np.stack([np.array([96.0 - 6.0 * t, 16.0]) for t in c])
    truth = render(tex, np.repeat(np.eye(2)[None], 400, 0), b, (64, 128)).mean(0)
    inner = (slice(None), slice(8, -8), slice(16, -16))
    err_moved = (moved.lr[2] - truth)[inner].abs().mean()
    err_held = (held.lr[2] - truth)[inner].abs().mean()
    assert err_moved < 0.25 * err_held, (err_moved, err_held)
    write_frame_folder(tmp_path / "src", list((frames.permute(0, 2, 3, 1) * 255).round().byte().numpy()))
    opts = DegradeOptions(exposure="4", frames=5, seed=3, motion=MotionRange(max_speed=0.0, max_shake=0.0))
    degrade(tmp_path / "src", tmp_path / "a", opts)
    degrade(tmp_path / "src", tmp_path / "b", opts)
    for name in ("lr/00000004.png", "gt/00000004.png", "flow.npz", "degrade.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    hold = DegradeOptions(exposure="4", frames=5, seed=3, object_motion="hold")
    assert json.loads((tmp_path / "a/degrade.json").read_text())["options"]["object_motion"] == "flow"
    with pytest.raises(ConfigError, match="object_motion"):
        DegradeOptions(object_motion="blend")
    assert hold.object_motion == "hold"
