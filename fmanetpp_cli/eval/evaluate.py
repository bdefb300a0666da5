"""``fmanetpp eval``: compare a restored video with its ground truth, frame by frame.

Writes a per-frame CSV and a PNG plot of per-frame PSNR (restored and, when the LR input is given, its
bicubic x4 upsampling as the baseline), and returns a report with the means and tOF. Inputs may be videos
or frame folders (see ``fmanetpp_cli.synth.io.read_frames``).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmanetpp_cli._files import write_bytes_atomic
from fmanetpp_cli.errors import ConfigError, InputShapeError
from fmanetpp_cli.eval.metrics import PAPER_CROP, frame_metrics, have_opencv, tof
from fmanetpp_cli.synth.exposure import bicubic_up, from_uint8, to_uint8
from fmanetpp_cli.synth.io import read_frames

METRICS = ("psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y")


@dataclass
class EvalReport:
    """Per-frame metrics and their means for a restored clip (and optionally the bicubic baseline)."""

    rows: list[dict[str, float]]  # one dict per frame: index, METRICS, and bicubic_<metric> when given
    mean: dict[str, float]
    tof: float | None = None
    tof_bicubic: float | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        """Number of frames compared."""
        return len(self.rows)


def bicubic_baseline(lr: list[np.ndarray], scale: int = 4) -> list[np.ndarray]:
    """Bicubic x``scale`` upsampling of LR uint8 frames, as uint8 frames."""
    return list(to_uint8(bicubic_up(from_uint8(lr), scale)))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.inf


def evaluate_frames(
    restored: list[np.ndarray],
    gt: list[np.ndarray],
    *,
    lr: list[np.ndarray] | None = None,
    crop: int = PAPER_CROP,
    with_tof: bool | None = None,
    scale: int = 4,
) -> EvalReport:
    """Measure restored frames against ground truth (in memory).

    Args:
        restored: ``[H, W, 3]`` uint8 frames.
        gt: ground-truth frames, same count and size.
        lr: the LR inputs; when given, the bicubic baseline is measured too.
        crop: border crop in pixels.
        with_tof: compute tOF; None means "when OpenCV is installed".
        scale: LR -> HR factor of the baseline.

    Raises:
        InputShapeError: counts or sizes differ.
        ConfigError: tOF requested without OpenCV.
    """
    if len(restored) != len(gt) or not gt:
        raise InputShapeError(f"restored has {len(restored)} frames, ground truth {len(gt)}")
    base = bicubic_baseline(lr, scale) if lr is not None else None
    if base is not None and (len(base) != len(gt) or base[0].shape != gt[0].shape):
        raise InputShapeError(
            f"LR input x{scale} gives {len(base)} frames of {base[0].shape}, ground truth {gt[0].shape}"
        )
    rows = []
    for i, (r, g) in enumerate(zip(restored, gt, strict=True)):
        row: dict[str, float] = {"index": i, **frame_metrics(r, g, crop)}
        if base is not None:
            row.update({f"bicubic_{k}": v for k, v in frame_metrics(base[i], g, crop).items()})
        rows.append(row)
    keys = [k for k in rows[0] if k != "index"]
    report = EvalReport(rows=rows, mean={k: _mean([r[k] for r in rows]) for k in keys})
    want_tof = have_opencv() if with_tof is None else with_tof
    if want_tof and len(gt) >= 2:
        report.tof = tof(restored, gt)
        if base is not None:
            report.tof_bicubic = tof(base, gt)
    return report


def write_csv(report: EvalReport, path: Path) -> None:
    """Write the per-frame table (one row per frame, plus a final ``mean`` row), atomically."""
    buf = io.StringIO()
    keys = list(report.rows[0])
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    writer.writerow({"index": "mean", **{k: f"{v:.4f}" for k, v in report.mean.items()}})
    write_bytes_atomic(path, buf.getvalue().encode())


def plot_psnr(report: EvalReport, path: Path, title: str = "") -> None:
    """Plot per-frame RGB-PSNR of the restored clip (and the bicubic baseline) to a PNG file.

    Raises:
        ConfigError: matplotlib (the ``eval`` extra) is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError("the PSNR plot needs matplotlib: pip install 'fmanetpp-cli[eval]'") from e
    idx = [r["index"] for r in report.rows]
    fig, ax = plt.subplots(figsize=(8, 3.5), dpi=100)
    ax.plot(idx, [r["psnr_rgb"] for r in report.rows], label=f"restored ({report.mean['psnr_rgb']:.2f} dB)")
    if "bicubic_psnr_rgb" in report.rows[0]:
        ax.plot(
            idx,
            [r["bicubic_psnr_rgb"] for r in report.rows],
            label=f"bicubic ({report.mean['bicubic_psnr_rgb']:.2f} dB)",
        )
    ax.set_xlabel("frame")
    ax.set_ylabel("PSNR RGB (dB)")
    ax.set_title(title or "per-frame PSNR")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def evaluate(
    restored: str | Path,
    gt: str | Path,
    *,
    lr: str | Path | None = None,
    csv_path: str | Path | None = None,
    plot_path: str | Path | None = None,
    crop: int = PAPER_CROP,
    with_tof: bool | None = None,
) -> EvalReport:
    """Read a restored clip and its ground truth (videos or frame folders) and measure them.

    Args:
        restored: restored video or frame folder.
        gt: ground-truth video or frame folder.
        lr: optional LR input (for the bicubic baseline).
        csv_path: where to write the per-frame CSV (skipped when None).
        plot_path: where to write the per-frame PSNR plot (skipped when None).
        crop: border crop.
        with_tof: compute tOF (None: when OpenCV is available).

    Raises:
        VideoOpenError: an input cannot be read.
        InputShapeError: frame counts or sizes differ (the message names the files).
    """
    out = read_frames(restored)
    ref = read_frames(gt)
    low = read_frames(lr) if lr is not None else None
    if len(out) != len(ref):
        raise InputShapeError(f"{restored} has {len(out)} frames but {gt} has {len(ref)}")
    if out[0].shape != ref[0].shape:
        raise InputShapeError(
            f"{restored} frames are {out[0].shape[:2]} but {gt} frames are {ref[0].shape[:2]}"
        )
    report = evaluate_frames(out, ref, lr=low, crop=crop, with_tof=with_tof)
    if csv_path is not None:
        write_csv(report, Path(csv_path))
        report.files["csv"] = Path(csv_path)
    if plot_path is not None:
        plot_psnr(report, Path(plot_path), title=Path(restored).name)
        report.files["plot"] = Path(plot_path)
    return report
