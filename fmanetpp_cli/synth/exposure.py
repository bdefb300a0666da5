"""Exposure schedules and the multi-exposure recipe of FMA-Net++ (REDS-ME / REDS-RE).

Exposure is expressed as a level ``N`` in 1..5, the paper's "5:N": a duty cycle of ``N / 5`` of the frame
interval (5:5 = the shutter is open for the whole interval, the most blur). REDS-ME uses one fixed level
per clip; REDS-RE draws a step-wise random walk over the levels (paper Algorithm S1): every ``I`` frames
(I in {5, 7}) the level moves by -1, 0 or +1, clipped to 1..5.

For high-frame-rate sources, output frame ``i`` averages ``count`` consecutive source frames starting at
``i * interval`` (the literal reading of the paper's Eq. S2: the window starts at the sharp frame that is
the ground truth), then is downsampled x4 with antialiased bicubic.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fmanetpp_cli.errors import ConfigError, InputShapeError
from fmanetpp_cli.frames import frames_to_tensor, tensor_to_frames
from fmanetpp_cli.synth.interp import (
    MAX_SUBFRAMES,
    SUBFRAME_STEP,
    check_subframes,
    flow_speed,
    pixel_grid,
    sample_moving,
)

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
NUM_LEVELS = 5


def duty_cycle(level: int) -> float:
    """Fraction of the frame interval during which the shutter is open for level ``5:level``."""
    if level not in LEVELS:
        raise ConfigError(f"exposure level must be one of {LEVELS}, got {level}")
    return level / NUM_LEVELS


def fixed_schedule(num_frames: int, level: int) -> list[int]:
    """REDS-ME: the same exposure level for every frame of the clip."""
    duty_cycle(level)
    return [level] * num_frames


def random_schedule(
    num_frames: int,
    rng: np.random.Generator,
    *,
    start: int | None = None,
    interval: int | None = None,
) -> list[int]:
    """REDS-RE (Algorithm S1): a step-wise random walk over the exposure levels.

    Args:
        num_frames: length of the schedule.
        rng: the random generator (seeded by the caller for reproducibility).
        start: initial level E0; drawn uniformly from 1..5 when None.
        interval: frames between updates I; drawn from {5, 7} when None.

    Returns:
        One level per frame, each in 1..5.
    """
    level = int(rng.integers(1, NUM_LEVELS + 1)) if start is None else start
    duty_cycle(level)
    every = int(rng.choice([5, 7])) if interval is None else interval
    if every < 1:
        raise ConfigError(f"random exposure interval must be >= 1, got {every}")
    levels = []
    for i in range(num_frames):
        if i % every == 0:
            level = int(np.clip(level + int(rng.integers(-1, 2)), 1, NUM_LEVELS))
        levels.append(level)
    return levels


def make_schedule(num_frames: int, exposure: str | int, rng: np.random.Generator) -> list[int]:
    """A schedule from a user setting: a level ``1..5``, ``"random"`` (REDS-RE) or ``"mixed"``.

    ``"mixed"`` draws one fixed level for the whole clip (a REDS-ME clip of random level), which is what
    the training data uses.
    """
    if isinstance(exposure, str):
        if exposure == "random":
            return random_schedule(num_frames, rng)
        if exposure == "mixed":
            return fixed_schedule(num_frames, int(rng.integers(1, NUM_LEVELS + 1)))
        if exposure.isdigit():
            return fixed_schedule(num_frames, int(exposure))
        raise ConfigError(f"exposure must be 1..5, 'random' or 'mixed', got {exposure!r}")
    return fixed_schedule(num_frames, int(exposure))


def frames_in_window(level: int, interval: int) -> int:
    """Number of source frames averaged for level ``5:level`` when ``interval`` source frames make one
    output frame interval (REDS at 120 fps -> 24 fps: interval 5, so level N averages N frames)."""
    return max(1, round(duty_cycle(level) * interval))


def bicubic_down(x: Tensor, scale: int = 4) -> Tensor:
    """Antialiased bicubic downsampling by ``scale`` (the MATLAB ``imresize`` behaviour).

    Shapes:
        x: ``[N, 3, H, W]`` float in [0, 1], H and W divisible by ``scale``.
        returns: ``[N, 3, H / scale, W / scale]``, clamped to [0, 1].
    """
    if x.ndim != 4 or x.shape[-1] % scale or x.shape[-2] % scale:
        raise InputShapeError(
            f"bicubic_down needs [N, C, H, W] with H, W divisible by {scale}, got {tuple(x.shape)}"
        )
    h, w = x.shape[-2] // scale, x.shape[-1] // scale
    return F.interpolate(x, size=(h, w), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def bicubic_up(x: Tensor, scale: int = 4) -> Tensor:
    """Plain bicubic upsampling by ``scale``, the baseline every restorer is compared with.

    Shapes:
        x: ``[N, 3, h, w]``; returns ``[N, 3, scale * h, scale * w]`` clamped to [0, 1].
    """
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


def average_exposures(
    frames: Tensor,
    levels: list[int],
    *,
    interval: int = 5,
    offset: int = 0,
    flows: Tensor | None = None,
    subframe_step: float = SUBFRAME_STEP,
    max_subframes: int = MAX_SUBFRAMES,
) -> tuple[Tensor, Tensor]:
    """Average high-frame-rate frames over each exposure window (REDS-ME recipe, before resizing).

    Output frame ``i`` covers source times ``[first, first + count)`` with ``first = offset + i * interval``
    and ``count`` from its level; its ground truth is frame ``first``.

    - ``flows=None``: the mean of the ``count`` source frames in the window (sharp copies stack up as
      ghosts when objects move more than about a pixel between source frames; 5:1 at ``interval=5`` is
      one unblurred frame).
    - ``flows`` given (``synth.interp.forward_flows`` of ``frames``): the mean of the flow-interpolated
      scene at ``n`` evenly spaced times from ``first`` on, ``n >= count`` chosen so that no point moves
      more than ``subframe_step`` px between two (capped at ``max_subframes``): the paper's temporal
      upsampling before averaging, with our own interpolation.

    Shapes:
        frames: ``[N, 3, H, W]`` float in [0, 1], the sharp high-frame-rate source.
        flows: ``[N - 1, 2, H, W]`` or None.
        returns: (blurry ``[T, 3, H, W]``, sharp ground truth ``[T, 3, H, W]``) with ``T = len(levels)``.

    Raises:
        InputShapeError: the source is too short for the requested frames.
    """
    needed = offset + (len(levels) - 1) * interval + frames_in_window(max(levels), interval)
    if frames.shape[0] < needed:
        raise InputShapeError(
            f"{len(levels)} frames at interval {interval} need {needed} source frames, got {frames.shape[0]}"
        )
    check_subframes(subframe_step, max_subframes)
    H, W = frames.shape[-2:]
    if flows is not None and flows.shape != (frames.shape[0] - 1, 2, H, W):
        raise InputShapeError(f"flows must be [N - 1, 2, H, W], got {tuple(flows.shape)}")
    if frames.shape[0] < 2:
        flows = None
    speed = flow_speed(flows)
    chunk = max(1, 4_000_000 // (H * W))  # sampling positions held at once
    blurry, sharp = [], []
    for i, level in enumerate(levels):
        first = offset + i * interval
        count = frames_in_window(level, interval)
        sharp.append(frames[first])
        if flows is None:
            blurry.append(frames[first : first + count].mean(dim=0))
            continue
        n = int(min(max_subframes, max(count, math.ceil(speed * count / subframe_step))))
        times = first + count * np.arange(n) / n
        total = torch.zeros(3, H * W, dtype=frames.dtype)
        for c in range(0, n, chunk):
            t = times[c : c + chunk]
            q = pixel_grid(H, W)[None].expand(len(t), -1, -1)
            total += sample_moving(frames, flows, t, q).sum(0)
        blurry.append((total / n).reshape(3, H, W))
    return torch.stack(blurry), torch.stack(sharp)  # [T, 3, H, W] each


def to_uint8(x: Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` float in [0, 1] -> ``[N, H, W, 3]`` uint8 (rounded; ``frames.tensor_to_frames``)."""
    return tensor_to_frames(x, np.uint8)


def from_uint8(frames: list[np.ndarray] | np.ndarray) -> Tensor:
    """``[N, H, W, 3]`` uint8 -> ``[N, 3, H, W]`` float32 in [0, 1] (``frames.frames_to_tensor``)."""
    return frames_to_tensor(frames)
