"""Evaluation: PSNR / SSIM (RGB and Y, border crop), tOF, per-frame CSV and plot (``fmanetpp eval``)."""

from fmanetpp_cli.eval.evaluate import EvalReport, evaluate, evaluate_frames
from fmanetpp_cli.eval.metrics import frame_metrics, psnr, tof

__all__ = ["EvalReport", "evaluate", "evaluate_frames", "frame_metrics", "psnr", "tof"]
