"""`fmanetpp degrade SOURCE OUT`: make a (blurry LR, sharp HR) pair with exposure sidecar and flows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fmanetpp_cli.cli._console import out
from fmanetpp_cli.cli.options import OverwriteOpt
from fmanetpp_cli.errors import ConfigError
from fmanetpp_cli.synth import DegradeOptions, MotionRange, degrade
from fmanetpp_cli.synth.interp import SUBFRAME_STEP


def _parse_crop(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise ConfigError(f"--crop must look like 256x256 (HxW), got {text!r}") from e
    return h, w


def degrade_command(
    source: Annotated[
        Path, typer.Argument(help="Sharp video, frame folder or still image.", show_default=False)
    ],
    output: Annotated[
        Path, typer.Argument(help="Output folder (lr/, gt/, degrade.json, flow.npz).", show_default=False)
    ],
    recipe: Annotated[
        str,
        typer.Option(
            help="camera: synthetic camera motion (any source); hfr: average high-frame-rate frames."
        ),
    ] = "camera",
    exposure: Annotated[
        str, typer.Option(help="Exposure level 1..5 (5:N, REDS-ME), 'random' (REDS-RE walk) or 'mixed'.")
    ] = "random",
    frames: Annotated[int | None, typer.Option(help="Output frames (default: all; stills: 30).")] = None,
    start: Annotated[int, typer.Option(help="First source frame.")] = 0,
    interval: Annotated[
        int, typer.Option(help="hfr: source frames per output frame (REDS 120->24 fps: 5).")
    ] = 5,
    downscale: Annotated[int, typer.Option(help="Area-downscale the source first by this factor.")] = 1,
    crop: Annotated[str | None, typer.Option(help="HR size HxW, centred (divisible by 4).")] = None,
    gt_anchor: Annotated[
        str, typer.Option(help="camera: ground truth at the exposure 'centre' or 'start'.")
    ] = "centre",
    object_motion: Annotated[
        str,
        typer.Option(
            help="Video and hfr sources: 'flow' (objects move during the exposure, flow-interpolated; "
            "needs OpenCV) or 'hold' (source frames as they are)."
        ),
    ] = "flow",
    subframe_step: Annotated[
        float, typer.Option(help="Most HR px a point moves between two sub-frame renders.")
    ] = SUBFRAME_STEP,
    max_speed: Annotated[float, typer.Option(help="camera: max drift, HR px per frame.")] = 16.0,
    max_shake: Annotated[float, typer.Option(help="camera: max shake amplitude, HR px.")] = 4.0,
    noise: Annotated[float, typer.Option(help="Gaussian noise sigma on LR, 8-bit levels (0 = none).")] = 0.0,
    crf: Annotated[int | None, typer.Option(help="H.264 round trip of the LR frames at this CRF.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (trajectory, exposure walk, noise).")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Synthesise blurry low-resolution input and sharp ground truth from sharp footage."""
    opts = DegradeOptions(
        recipe=recipe,
        exposure=exposure,
        frames=frames,
        start=start,
        interval=interval,
        downscale=downscale,
        crop=_parse_crop(crop),
        gt_anchor=gt_anchor,
        object_motion=object_motion,
        subframe_step=subframe_step,
        motion=MotionRange(max_speed=max_speed, max_shake=max_shake),
        noise_sigma=noise,
        crf=crf,
        seed=seed,
    )
    report = degrade(source, output, opts, overwrite=overwrite)
    levels = "".join(str(v) for v in report.levels)
    out.print(
        f"wrote {report.frames} frames to {report.output}: LR {report.lr_size[1]}x{report.lr_size[0]}, "
        f"GT {report.gt_size[1]}x{report.gt_size[0]}, exposure levels {levels}"
        + (", flow.npz" if report.flow else ""),
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add the ``degrade`` command."""
    app.command("degrade")(degrade_command)
