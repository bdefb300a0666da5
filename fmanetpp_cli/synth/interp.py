"""Flow-based interpolation between consecutive source frames, so that blur follows object motion too.

An ordinary video shows motion between its frames as jumps: averaging frames stacks sharp copies
(ghosts), and holding one frame through an exposure leaves moving objects sharp. Here the scene at a
fractional time ``c = k + tau`` between source frames ``k`` and ``k + 1`` is

    S_c(q) = (1 - tau) * S_k(q - tau * F_k(q)) + tau * S_{k+1}(q + (1 - tau) * F_k(q))

with ``F_k`` the dense forward flow ``k -> k + 1`` (a point at ``p`` in frame ``k`` is at ``p + F_k(p)`` in
frame ``k + 1``), read at the target position ``q`` (the usual linear-motion approximation). At integer
times it is the source frame itself, so ground truth taken at a source frame is never interpolated. Where
the flow is wrong (occlusions, large textureless areas) the two warps disagree and blend into a soft
double image, not a tear. Outside ``[0, N - 1]`` only the nearer frame is warped (no negative weights).

The flows come from OpenCV's Farneback estimator on grey levels (``opencv-python-headless``, the
``eval`` extra). Coordinates match ``synth.motion``: pixel centres at integers, ``x`` right, ``y`` down.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fmanetpp_cli.errors import ConfigError

SUBFRAME_STEP = 2.0 / 3.0
"""Default bound on the image motion between two sub-frame renders, HR px (the original 1.5 renders/px)."""
MAX_SUBFRAMES = 1024
"""Default cap on renders per exposure window (the step stays <= 2/3 px up to ~680 px of blur)."""
RENDER_CHUNK = 64
"""Renders computed at once when summing a long exposure (bounds the sampling grid's memory)."""


def check_subframes(subframe_step: float, max_subframes: int) -> None:
    """Refuse a non-positive sub-frame step or a cap below the two renders every exposure gets."""
    if not subframe_step > 0:
        raise ConfigError(f"subframe_step must be > 0 HR px, got {subframe_step}")
    if max_subframes < 2:
        raise ConfigError(f"max_subframes must be >= 2, got {max_subframes}")


def forward_flows(frames: Tensor) -> Tensor:
    """Dense flows between consecutive frames (OpenCV Farneback, deterministic for a given input).

    Shapes:
        frames: ``[N, 3, H, W]`` float in [0, 1], N >= 2.
        returns: ``[N - 1, 2, H, W]`` float32, flow ``k -> k + 1`` in pixels (x, y).

    Raises:
        ConfigError: OpenCV is not installed.
    """
    try:
        import cv2
    except ImportError as e:
        raise ConfigError(
            "object motion 'flow' needs OpenCV: pip install opencv-python-headless (or use 'hold')"
        ) from e
    grey = (frames * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1)  # [N, H, W]
    grey_u8 = (grey.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    out = np.empty((frames.shape[0] - 1, 2, *grey_u8.shape[1:]), np.float32)
    for k in range(frames.shape[0] - 1):
        flow = cv2.calcOpticalFlowFarneback(
            grey_u8[k], grey_u8[k + 1], None, 0.5, 5, 21, 5, 7, 1.5, cv2.OPTFLOW_FARNEBACK_GAUSSIAN
        )  # [H, W, 2]
        out[k] = flow.transpose(2, 0, 1)
    return torch.from_numpy(out)


def _sample(image: Tensor, q: Tensor) -> Tensor:
    """Bilinear samples of ``image [C, H, W]`` at source positions ``q [S, P, 2]`` (x, y; reflected at
    the border, the convention of ``synth.motion.render``) -> ``[S, C, P]``."""
    _, H, W = image.shape
    scale = torch.tensor([2.0 / W, 2.0 / H], dtype=q.dtype)
    grid = ((q + 0.5) * scale - 1.0).to(image.dtype)  # [S, P, 2]
    S, P, _ = grid.shape
    out = F.grid_sample(
        image[None], grid.reshape(1, S, P, 2), mode="bilinear", padding_mode="reflection", align_corners=False
    )  # [1, C, S, P]
    return out[0].transpose(0, 1)


def sample_moving(frames: Tensor, flows: Tensor, times: np.ndarray, q: Tensor) -> Tensor:
    """The flow-interpolated scene at fractional ``times``, sampled at source positions ``q``.

    Args:
        frames: ``[N, 3, H, W]`` the sharp source frames (frame ``k`` at time ``k``), N >= 2.
        flows: ``[N - 1, 2, H, W]`` forward flows (``forward_flows``).
        times: ``[S]`` content times in source frames.
        q: ``[S, P, 2]`` float64 source positions (x, y) per time.

    Returns:
        ``[S, 3, P]``.
    """
    N = frames.shape[0]
    k_all = np.clip(np.floor(times).astype(np.int64), 0, N - 2)
    out = torch.empty(len(times), frames.shape[1], q.shape[1], dtype=frames.dtype)
    for k in np.unique(k_all):
        idx = np.nonzero(k_all == k)[0]
        tau = torch.from_numpy(times[idx] - k)[:, None, None]  # [s, 1, 1]
        qk = q[idx]  # [s, P, 2]
        fl = _sample(flows[k], qk).transpose(1, 2).to(q.dtype)  # [s, P, 2] flow at the target
        w1 = tau.clamp(0, 1).to(frames.dtype)[:, :, 0:1]  # [s, 1, 1] weight of frame k + 1
        a = _sample(frames[k], qk - tau * fl)  # [s, 3, P]
        b = _sample(frames[k + 1], qk + (1 - tau) * fl)
        out[torch.from_numpy(idx)] = a * (1 - w1) + b * w1
    return out


def pixel_grid(h: int, w: int) -> Tensor:
    """Every pixel centre of an ``h x w`` frame as ``[h * w, 2]`` float64 (x, y), row-major."""
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    return torch.stack([xs, ys], -1).reshape(-1, 2)


def flow_speed(flows: Tensor | None) -> float:
    """The largest flow magnitude (px per source frame) in ``flows``; 0 for None."""
    if flows is None or flows.numel() == 0:
        return 0.0
    return float(flows.norm(dim=1).amax())
