"""Metrics (PSNR / SSIM on RGB and Y with border crop, tOF) and the `eval` report, CSV, plot and CLI."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from fmanetpp_cli.errors import InputShapeError
from fmanetpp_cli.eval import evaluate, evaluate_frames, frame_metrics, psnr, tof
from fmanetpp_cli.eval.metrics import have_opencv, rgb_to_y
from fmanetpp_cli.synth.io import write_frame_folder


def noise_image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_psnr_of_a_known_error() -> None:
    a = np.full((32, 32, 3), 100, np.uint8)
    b = np.full((32, 32, 3), 110, np.uint8)
    assert psnr(a, b) == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)
    assert psnr(a, a) == math.inf


def test_border_crop_ignores_the_border() -> None:
    a = noise_image()
    b = a.copy()
    b[:4] = 0
    b[:, -4:] = 255
    assert psnr(a, b, crop=4) == math.inf
    assert psnr(a, b, crop=0) < 30


def test_float_inputs_are_measured_on_the_8bit_grid() -> None:
    a = noise_image()
    t = torch.from_numpy(a).permute(2, 0, 1).float() / 255 + 0.3 / 255  # rounds back to a
    assert psnr(t, a) == math.inf


def test_ssim_and_y_channel() -> None:
    ramp = np.linspace(40, 200, 64)
    a = np.stack([np.tile(ramp, (48, 1))] * 3, -1).round().astype(np.uint8)  # smooth: noise shows in SSIM
    m = frame_metrics(a, a)
    assert m["ssim_rgb"] == pytest.approx(1.0) and m["ssim_y"] == pytest.approx(1.0)
    noisy = np.clip(a.astype(int) + np.random.default_rng(2).integers(-40, 41, a.shape), 0, 255).astype(
        np.uint8
    )
    m2 = frame_metrics(noisy, a)
    assert 0 < m2["ssim_rgb"] < 0.95 and m2["psnr_rgb"] < 30
    white = torch.ones(3, 2, 2)
    assert rgb_to_y(white)[0, 0, 0].item() == pytest.approx(235 / 255)
    # Y weighs green most: a green error costs more Y-PSNR than the same blue error.
    g, bl = a.copy(), a.copy()
    g[..., 1] = np.clip(g[..., 1].astype(int) + 20, 0, 255)
    bl[..., 2] = np.clip(bl[..., 2].astype(int) + 20, 0, 255)
    assert frame_metrics(g, a)["psnr_y"] < frame_metrics(bl, a)["psnr_y"]


def test_size_mismatch_is_an_input_error() -> None:
    with pytest.raises(InputShapeError):
        frame_metrics(noise_image(48, 64), noise_image(48, 60))


@pytest.mark.skipif(not have_opencv(), reason="tOF needs OpenCV (the eval extra)")
def test_tof_zero_for_identical_and_positive_for_wrong_motion() -> None:
    base = noise_image(96, 96, seed=3)
    base = np.asarray(
        torch.nn.functional.avg_pool2d(torch.from_numpy(base).permute(2, 0, 1)[None].float(), 3, 1, 1)[0]
        .permute(1, 2, 0)
        .round()
        .byte()
    )
    gt = [np.roll(base, k, axis=1) for k in range(4)]  # moves right by 1 px per frame
    still = [base] * 4  # no motion
    assert tof(gt, gt) == 0.0
    assert tof(still, gt) > 0.3


def test_evaluate_frames_with_bicubic_baseline() -> None:
    gt = [noise_image(64, 64, seed=s) for s in range(3)]
    lr = [g[::4, ::4] for g in gt]
    rep = evaluate_frames(gt, gt, lr=lr, with_tof=False)
    assert rep.frames == 3 and rep.mean["psnr_rgb"] == math.inf
    assert rep.mean["bicubic_psnr_rgb"] < 20
    with pytest.raises(InputShapeError):
        evaluate_frames(gt[:2], gt)


def test_evaluate_folders_writes_csv_and_plot(tmp_path) -> None:
    gt = [noise_image(32, 32, seed=s) for s in range(4)]
    out = [np.clip(g.astype(int) + 3, 0, 255).astype(np.uint8) for g in gt]
    write_frame_folder(tmp_path / "gt", gt)
    write_frame_folder(tmp_path / "out", out)
    write_frame_folder(tmp_path / "lr", [g[::4, ::4] for g in gt])
    try:
        import matplotlib  # noqa: F401

        plot = tmp_path / "psnr.png"
    except ImportError:
        plot = None
    rep = evaluate(
        tmp_path / "out",
        tmp_path / "gt",
        lr=tmp_path / "lr",
        csv_path=tmp_path / "m.csv",
        plot_path=plot,
        with_tof=False,
    )
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert len(rows) == 5 and rows[-1]["index"] == "mean"
    assert float(rows[0]["psnr_rgb"]) == pytest.approx(rep.rows[0]["psnr_rgb"], abs=1e-3)
    assert "bicubic_psnr_rgb" in rows[0]
    if plot is not None:
        assert plot.read_bytes().startswith(b"\x89PNG")


def test_eval_cli_reports_a_frame_count_mismatch(tmp_path) -> None:
    from typer.testing import CliRunner

    from fmanetpp_cli.cli.app import main

    write_frame_folder(tmp_path / "gt", [noise_image(32, 32, seed=s) for s in range(3)])
    write_frame_folder(tmp_path / "out", [noise_image(32, 32, seed=s) for s in range(2)])
    with pytest.raises(SystemExit) as exc:
        main(["eval", str(tmp_path / "out"), str(tmp_path / "gt"), "--no-tof"])
    assert exc.value.code == 1
    runner = CliRunner()
    from fmanetpp_cli.cli.app import app

    ok = runner.invoke(app, ["eval", str(tmp_path / "gt"), str(tmp_path / "gt"), "--no-tof"])
    assert ok.exit_code == 0 and "PSNR RGB" in ok.output
