"""`fmanetpp eval RESTORED GT`: PSNR / SSIM (RGB and Y), tOF, per-frame CSV and PSNR plot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fmanetpp_cli.cli._console import out
from fmanetpp_cli.eval import EvalReport, evaluate


def eval_command(
    restored: Annotated[Path, typer.Argument(help="Restored video or frame folder.", show_default=False)],
    gt: Annotated[Path, typer.Argument(help="Ground-truth video or frame folder.", show_default=False)],
    lr: Annotated[
        Path | None,
        typer.Option("--lr", help="The LR input: adds the bicubic x4 baseline.", show_default=False),
    ] = None,
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Write per-frame metrics here.", show_default=False)
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Write a per-frame PSNR plot (PNG) here.", show_default=False),
    ] = None,
    crop: Annotated[int, typer.Option(help="Border pixels ignored (the paper's protocol: 4).")] = 4,
    tof: Annotated[
        bool | None,
        typer.Option("--tof/--no-tof", help="Compute tOF (default: when OpenCV is installed).", metavar=""),
    ] = None,
) -> None:
    """Measure a restored clip against its ground truth."""
    report = evaluate(restored, gt, lr=lr, csv_path=csv, plot_path=plot, crop=crop, with_tof=tof)
    _render(report)


def _render(report: EvalReport) -> None:
    table = Table(title=f"{report.frames} frames", show_edge=False)
    table.add_column("")
    for name in ("PSNR RGB", "SSIM RGB", "PSNR Y", "SSIM Y", "tOF"):
        table.add_column(name, justify="right")
    m = report.mean

    def row(label: str, prefix: str, tof: float | None) -> None:
        table.add_row(
            label,
            f"{m[prefix + 'psnr_rgb']:.2f}",
            f"{m[prefix + 'ssim_rgb']:.4f}",
            f"{m[prefix + 'psnr_y']:.2f}",
            f"{m[prefix + 'ssim_y']:.4f}",
            "-" if tof is None else f"{tof:.3f}",
        )

    row("restored", "", report.tof)
    if "bicubic_psnr_rgb" in m:
        row("bicubic", "bicubic_", report.tof_bicubic)
    out.print(table)
    for kind, path in report.files.items():
        out.print(f"wrote {kind}: {path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``eval`` command."""
    app.command("eval")(eval_command)
