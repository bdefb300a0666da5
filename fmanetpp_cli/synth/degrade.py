"""``degrade``: turn sharp footage into (blurry LR input, sharp HR ground truth) pairs with a sidecar.

Two recipes:

- ``hfr``: the source is sharp high-frame-rate video or frames (the REDS 120 fps layout). Output frame ``i``
  covers ``round(N / 5 * interval)`` source frame intervals from frame ``i * interval`` (exposure level
  5:N), its ground truth is that first frame, and the average is bicubic-downsampled x4. With
  ``object_motion="flow"`` (default) the scene is flow-interpolated between source frames and averaged
  densely (``synth.interp``: continuous blur, and 5:1 is blurred too); ``"hold"`` averages the source
  frames themselves (ghost copies when objects move more than about a pixel per source frame).
- ``camera``: any still image or ordinary video. A synthetic continuous camera path is integrated over each
  frame's exposure window (``fmanetpp_cli.synth.motion``), rendered at sub-frame steps of at most
  ``subframe_step`` HR px; the true LR flows of the camera between ground-truth frames are written too.
  For video, ``object_motion="flow"`` moves the objects during the exposure as well (interpolated
  between source frames); ``"hold"`` shows source frame ``i`` throughout frame ``i``'s exposure.

Output folder layout::

    OUT/lr/00000000.png ...     blurry LR input frames
    OUT/gt/00000000.png ...     sharp HR ground truth
    OUT/flow.npz                camera recipe only: ``next`` / ``prev`` [T, 2, h, w] LR-pixel flows (x, y)
    OUT/degrade.json            recipe, seed, options and the exposure level / duty cycle of every frame
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fmanetpp_cli._files import write_bytes_atomic
from fmanetpp_cli.errors import ConfigError, InputShapeError, OutputExistsError
from fmanetpp_cli.synth.exposure import (
    average_exposures,
    bicubic_down,
    duty_cycle,
    frames_in_window,
    from_uint8,
    make_schedule,
    to_uint8,
)
from fmanetpp_cli.synth.interp import MAX_SUBFRAMES, SUBFRAME_STEP, check_subframes, forward_flows
from fmanetpp_cli.synth.io import is_image, read_frames, write_frame_folder
from fmanetpp_cli.synth.motion import MotionRange, Trajectory, camera_motion_clip
from fmanetpp_cli.synth.noise import degrade_lr

SIDECAR_FORMAT = "fmanetpp.degrade/1"


@dataclass(frozen=True, slots=True)
class DegradeOptions:
    """Settings of one ``degrade`` run (validated on construction)."""

    recipe: str = "camera"  # "camera" (synthetic camera motion) or "hfr" (average high-frame-rate frames)
    exposure: str = "random"  # "1".."5" (REDS-ME level), "random" (REDS-RE walk) or "mixed" (random fixed)
    frames: int | None = None  # output frames; None: as many as the source gives (stills: 30)
    start: int = 0  # first source frame used
    interval: int = 5  # hfr: source frames per output frame interval
    downscale: int = 1  # area-downscale the source first (e.g. 2 for 1280x720 -> 640x360)
    crop: tuple[int, int] | None = None  # HR (height, width) of the output, centred; None: whole frame
    gt_anchor: str = "centre"  # camera: ground truth at the exposure window's "centre" or "start"
    motion: MotionRange = field(default_factory=MotionRange)
    subframe_step: float = SUBFRAME_STEP  # camera: most HR px an image point moves between two renders
    max_subframes: int = MAX_SUBFRAMES  # camera: cap on renders per exposure window
    object_motion: str = "flow"  # video and hfr sources: "flow" (interpolated, synth.interp) or "hold"
    noise_sigma: float = 0.0  # Gaussian noise on LR, 8-bit levels
    crf: int | None = None  # H.264 round trip at this CRF; None: no compression
    seed: int = 0
    scale: int = 4

    def __post_init__(self) -> None:
        if self.recipe not in ("camera", "hfr"):
            raise ConfigError(f"recipe must be 'camera' or 'hfr', got {self.recipe!r}")
        make_schedule(1, self.exposure, np.random.default_rng(0))
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"frames must be >= 1, got {self.frames}")
        if self.interval < 1 or self.downscale < 1 or self.start < 0:
            raise ConfigError("interval and downscale must be >= 1 and start >= 0")
        check_subframes(self.subframe_step, self.max_subframes)
        if self.object_motion not in ("flow", "hold"):
            raise ConfigError(f"object_motion must be 'flow' or 'hold', got {self.object_motion!r}")
        if self.crop is not None and (self.crop[0] % self.scale or self.crop[1] % self.scale):
            raise ConfigError(f"crop {self.crop} must be divisible by the scale {self.scale}")


@dataclass(frozen=True, slots=True)
class DegradeReport:
    """What a ``degrade`` run wrote."""

    output: Path
    frames: int
    lr_size: tuple[int, int]  # (h, w)
    gt_size: tuple[int, int]  # (H, W)
    levels: list[int]
    flow: bool


def prepare_source(frames: list[np.ndarray], downscale: int, scale: int) -> Tensor:
    """uint8 frames -> float ``[N, 3, H, W]``, area-downscaled and cropped to a multiple of ``scale``."""
    x = from_uint8(frames)  # [N, 3, H, W]
    if downscale > 1:
        x = F.interpolate(x, scale_factor=1 / downscale, mode="area")  # [N, 3, H/d, W/d]
    H, W = x.shape[-2] // scale * scale, x.shape[-1] // scale * scale
    return x[..., :H, :W]


def center_crop(x: Tensor, hw: tuple[int, int]) -> Tensor:
    """Crop the last two axes to ``hw`` around the centre."""
    H, W = x.shape[-2:]
    if hw[0] > H or hw[1] > W:
        raise InputShapeError(f"crop {hw} is larger than the frame {(H, W)}")
    top, left = (H - hw[0]) // 2, (W - hw[1]) // 2
    return x[..., top : top + hw[0], left : left + hw[1]]


def synthesize(source: Tensor, opts: DegradeOptions, still: bool) -> dict:
    """Run the chosen recipe on a prepared source (no file I/O).

    Shapes:
        source: ``[N, 3, H, W]`` float in [0, 1].
        returns: dict with ``lr [T, 3, h, w]``, ``gt [T, 3, sH, sW]``, ``levels``, and for the camera recipe
        ``flow_next`` / ``flow_prev`` ``[T, 2, h, w]``.
    """
    rng = np.random.default_rng(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    N, _, H, W = source.shape
    if opts.recipe == "hfr":
        longest = frames_in_window(5, opts.interval)
        avail = (N - opts.start - longest) // opts.interval + 1
        T = avail if opts.frames is None else opts.frames
        if not 1 <= T <= avail:
            raise InputShapeError(
                f"the source has {N} frames: room for {max(avail, 0)} outputs at interval {opts.interval}"
            )
        levels = make_schedule(T, opts.exposure, rng)
        used = source[opts.start : opts.start + (T - 1) * opts.interval + longest + 1]  # +1: the last pair
        blurry, sharp = average_exposures(
            used,
            levels,
            interval=opts.interval,
            flows=forward_flows(used) if opts.object_motion == "flow" and len(used) > 1 else None,
            subframe_step=opts.subframe_step,
            max_subframes=opts.max_subframes,
        )
        if opts.crop is not None:
            blurry, sharp = center_crop(blurry, opts.crop), center_crop(sharp, opts.crop)
        out: dict[str, Any] = {"lr": bicubic_down(blurry, opts.scale), "gt": sharp, "levels": levels}
    else:
        T = opts.frames if opts.frames is not None else (30 if still else N - opts.start)
        if not still and opts.start + T > N:
            raise InputShapeError(f"the source has {N} frames, {opts.start + T} needed")
        levels = make_schedule(T, opts.exposure, rng)
        hw = opts.crop if opts.crop is not None else (H, W)
        scenes = source[:1] if still else source[opts.start : opts.start + T]
        moving = opts.object_motion == "flow" and scenes.shape[0] > 1
        clip = camera_motion_clip(
            scenes,
            levels,
            Trajectory.random(rng, opts.motion),
            hr_hw=hw,
            scale=opts.scale,
            gt_anchor=opts.gt_anchor,
            subframe_step=opts.subframe_step,
            max_subframes=opts.max_subframes,
            object_flows=forward_flows(scenes) if moving else None,
        )
        out = {
            "lr": clip.lr,
            "gt": clip.gt,
            "levels": levels,
            "flow_next": clip.flow_next,
            "flow_prev": clip.flow_prev,
        }
    out["lr"] = degrade_lr(out["lr"], noise_sigma=opts.noise_sigma, crf=opts.crf, generator=gen)
    return out


def degrade(
    source: str | Path, output: str | Path, opts: DegradeOptions, *, overwrite: bool = False
) -> DegradeReport:
    """Read a source, synthesise a degraded pair and write it as frame folders + flows + sidecar JSON.

    Args:
        source: a video, a folder of frames, or one still image.
        output: the output folder (created).
        opts: recipe settings.
        overwrite: allow writing into an existing non-empty folder.

    Raises:
        OutputExistsError: ``output`` is a non-empty folder and ``overwrite`` is False, or the source.
        VideoOpenError: the source cannot be read.
        InputShapeError: the source is too short or too small for the request.
    """
    src, out_dir = Path(source), Path(output)
    if out_dir.resolve() == src.resolve():
        raise OutputExistsError(f"{out_dir}: the output would overwrite the source", overwritable=False)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out_dir}: folder exists and is not empty")
    still = src.is_file() and is_image(src)
    need = None
    if opts.frames is not None and not still:
        need = opts.start + (opts.frames * opts.interval + 5 if opts.recipe == "hfr" else opts.frames)
    frames = read_frames(src, count=need)
    still = still or len(frames) == 1
    data = synthesize(prepare_source(frames, opts.downscale, opts.scale), opts, still)
    write_frame_folder(out_dir / "lr", list(to_uint8(data["lr"])))
    write_frame_folder(out_dir / "gt", list(to_uint8(data["gt"])))
    has_flow = "flow_next" in data
    if has_flow:
        buf = io.BytesIO()
        np.savez_compressed(buf, next=data["flow_next"].numpy(), prev=data["flow_prev"].numpy())
        write_bytes_atomic(out_dir / "flow.npz", buf.getvalue())
    levels = data["levels"]
    sidecar = {
        "format": SIDECAR_FORMAT,
        "source": str(src),
        "still": still,
        "options": {**asdict(opts), "motion": asdict(opts.motion)},
        "flow": "flow.npz (x, y in LR pixels; exact for stills, the camera's motion only for video)"
        if has_flow
        else None,
        "frames": [
            {"index": i, "exposure_level": lv, "duty_cycle": duty_cycle(lv), "exposure": f"5:{lv}"}
            for i, lv in enumerate(levels)
        ],
    }
    write_bytes_atomic(out_dir / "degrade.json", json.dumps(sidecar, indent=1).encode())
    lr, gt = data["lr"], data["gt"]
    return DegradeReport(
        output=out_dir,
        frames=len(levels),
        lr_size=(lr.shape[-2], lr.shape[-1]),
        gt_size=(gt.shape[-2], gt.shape[-1]),
        levels=levels,
        flow=has_flow,
    )
