"""Continuous synthetic camera motion over still images, integrated over each frame's exposure window.

For sources without a high frame rate (stills, ordinary video) we move a virtual camera over the image
along a smooth trajectory (drift + acceleration + handheld shake + slow rotation and zoom) and render the
scene at many sub-frame instants inside each exposure window. Their mean is the blurry frame; the render at
the ground-truth instant is the sharp frame. Because the blur comes from the same trajectory at the same
duty cycle as the exposure label, it is physically consistent with it, and because the motion is known,
so is the optical flow between ground-truth frames (emitted for Net_D's flow loss).

Coordinates: pixel centres sit at integer positions, ``x`` to the right, ``y`` down. The camera pose at
time ``t`` (in frame intervals) maps an output pixel ``p`` to the source position
``q = M(t) @ p + b(t)`` with ``M = zoom * rotation``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fmanetpp_cli.errors import ConfigError, InputShapeError
from fmanetpp_cli.synth.exposure import bicubic_down, duty_cycle
from fmanetpp_cli.synth.interp import (
    MAX_SUBFRAMES,
    RENDER_CHUNK,
    SUBFRAME_STEP,
    check_subframes,
    flow_speed,
    pixel_grid,
    sample_moving,
)


@dataclass(frozen=True, slots=True)
class MotionRange:
    """Bounds of the random camera trajectories (HR pixels and radians per frame interval)."""

    max_speed: float = 16.0  # drift speed, HR px per frame interval
    max_accel: float = 2.0  # change of drift per frame interval
    max_shake: float = 4.0  # handheld shake amplitude, HR px
    max_rotation: float = 0.01  # rad per frame interval
    max_zoom: float = 0.01  # log-scale change per frame interval

    def __post_init__(self) -> None:
        if min(self.max_speed, self.max_accel, self.max_shake, self.max_rotation, self.max_zoom) < 0:
            raise ConfigError("motion bounds must be >= 0")


@dataclass(frozen=True, slots=True)
class Trajectory:
    """A smooth camera path: shift ``v t + a t^2 / 2 + shake(t)``, rotation ``w t``, zoom ``e^(z t)``."""

    velocity: tuple[float, float]
    accel: tuple[float, float]
    shake_amp: tuple[float, float]
    shake_freq: float  # cycles per frame interval
    shake_phase: tuple[float, float]
    rotation: float
    zoom: float

    @staticmethod
    def random(rng: np.random.Generator, bounds: MotionRange = MotionRange()) -> Trajectory:
        """Draw a trajectory within ``bounds`` (direction uniform, magnitudes uniform up to the bound)."""
        ang = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(0, bounds.max_speed)
        acc_ang = rng.uniform(0, 2 * math.pi)
        acc = rng.uniform(0, bounds.max_accel)
        return Trajectory(
            velocity=(speed * math.cos(ang), speed * math.sin(ang)),
            accel=(acc * math.cos(acc_ang), acc * math.sin(acc_ang)),
            shake_amp=(rng.uniform(0, bounds.max_shake), rng.uniform(0, bounds.max_shake)),
            shake_freq=rng.uniform(0.05, 0.4),
            shake_phase=(rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)),
            rotation=rng.uniform(-bounds.max_rotation, bounds.max_rotation),
            zoom=rng.uniform(-bounds.max_zoom, bounds.max_zoom),
        )

    def advanced(self, t0: float) -> Trajectory:
        """The same path seen from time ``t0`` on: ``advanced(t0).translation(t)`` equals
        ``translation(t0 + t)`` up to a constant offset (the drift has gained ``accel * t0``, the shake
        its phase); rotation and zoom rates are constant. Training clips drawn with an offset move like
        the later frames of a long clip."""
        phase = 2 * math.pi * self.shake_freq * t0
        return dataclasses.replace(
            self,
            velocity=(self.velocity[0] + self.accel[0] * t0, self.velocity[1] + self.accel[1] * t0),
            shake_phase=(self.shake_phase[0] + phase, self.shake_phase[1] + phase),
        )

    def translation(self, t: np.ndarray) -> np.ndarray:
        """Camera offset in source pixels at times ``t`` (shape ``[S]`` -> ``[S, 2]``)."""
        out = np.empty((t.shape[0], 2))
        for k in range(2):
            shake = self.shake_amp[k] * np.sin(2 * math.pi * self.shake_freq * t + self.shake_phase[k])
            out[:, k] = self.velocity[k] * t + 0.5 * self.accel[k] * t**2 + shake
        return out

    def max_speed(self, span: float, radius: float) -> float:
        """An upper bound of the image speed (px per frame interval) within ``[0, span]`` at ``radius`` px."""
        v = math.hypot(*self.velocity) + math.hypot(*self.accel) * span
        v += 2 * math.pi * self.shake_freq * math.hypot(*self.shake_amp)
        return v + (abs(self.rotation) + abs(self.zoom)) * radius * 1.1


def _affine(
    traj: Trajectory, t: np.ndarray, out_hw: tuple[int, int], src_center: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Affine maps ``q = M p + b`` from output to source pixels per time: ``M [S, 2, 2]``, ``b [S, 2]``."""
    h, w = out_hw
    c_out = np.array([(w - 1) / 2, (h - 1) / 2])
    s = np.exp(traj.zoom * t)
    cos, sin = np.cos(traj.rotation * t) * s, np.sin(traj.rotation * t) * s
    M = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # [S, 2, 2]
    b = src_center[None] + traj.translation(t) - np.einsum("sij,j->si", M, c_out)  # [S, 2]
    return M, b


def _positions(M: np.ndarray, b: np.ndarray, out_hw: tuple[int, int]) -> Tensor:
    """Source positions of every output pixel per instant: ``q = M p + b`` as ``[S, h*w, 2]`` float64."""
    p = pixel_grid(*out_hw)  # [h*w, 2]
    return torch.einsum("sij,nj->sni", torch.from_numpy(M), p) + torch.from_numpy(b)[:, None]


def render(source: Tensor, M: np.ndarray, b: np.ndarray, out_hw: tuple[int, int]) -> Tensor:
    """Sample the source through each affine map (bilinear, reflected at the border).

    Shapes:
        source: ``[3, Hs, Ws]``; M: ``[S, 2, 2]``; b: ``[S, 2]``.
        returns: ``[S, 3, h, w]``.
    """
    h, w = out_hw
    _, Hs, Ws = source.shape
    q = _positions(M, b, out_hw)  # [S, h*w, 2]
    scale = torch.tensor([2.0 / Ws, 2.0 / Hs], dtype=torch.float64)
    S = q.shape[0]
    # All instants stacked along the height of one grid: one source read, no per-instant copy of it.
    grid = ((q + 0.5) * scale - 1.0).reshape(1, S * h, w, 2).to(source.dtype)  # [1, S*h, w, 2]
    out = F.grid_sample(source[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.reshape(3, S, h, w).transpose(0, 1)  # [S, 3, h, w]


def render_moving(
    scenes: Tensor, flows: Tensor, times: np.ndarray, M: np.ndarray, b: np.ndarray, out_hw: tuple[int, int]
) -> Tensor:
    """``render`` of a moving scene: at instant ``s`` the source is the flow-interpolated scene at content
    time ``times[s]`` (``synth.interp``).

    Shapes:
        scenes: ``[N, 3, Hs, Ws]``; flows: ``[N - 1, 2, Hs, Ws]``; times: ``[S]``; M, b as in ``render``.
        returns: ``[S, 3, h, w]``.
    """
    out = sample_moving(scenes, flows, times, _positions(M, b, out_hw))  # [S, 3, h*w]
    return out.reshape(len(times), 3, *out_hw)


def affine_flow(
    M_from: np.ndarray,
    b_from: np.ndarray,
    M_to: np.ndarray,
    b_to: np.ndarray,
    lr_hw: tuple[int, int],
    scale: int,
) -> np.ndarray:
    """Flow at the LR grid from one ground-truth frame to another, in LR pixels.

    ``flow(p)`` is where the scene point seen at LR pixel ``p`` of the first frame appears in the second,
    minus ``p``; backward-warping the second frame with it aligns it to the first.

    Returns:
        ``[2, h, w]`` float32 with channel 0 = x (right), channel 1 = y (down).
    """
    h, w = lr_hw
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    # The centre of LR pixel l covers HR pixels s*l .. s*l + s - 1, whose centre is s*l + (s - 1) / 2.
    p = np.stack([xs, ys], -1).reshape(-1, 2) * scale + (scale - 1) / 2  # [h*w, 2]
    q = p @ M_from.T + b_from
    p2 = (q - b_to) @ np.linalg.inv(M_to).T
    return ((p2 - p) / scale).T.reshape(2, h, w).astype(np.float32)


@dataclass
class MotionClip:
    """One synthesised clip: blurry LR input, sharp HR ground truth, exposure levels and true flows."""

    lr: Tensor  # [T, 3, h, w]
    gt: Tensor  # [T, 3, s*h, s*w]
    levels: list[int]
    flow_next: Tensor  # [T, 2, h, w]: frame i -> i + 1 (zero for the last frame)
    flow_prev: Tensor  # [T, 2, h, w]: frame i -> i - 1 (zero for the first frame)


def camera_motion_clip(
    scenes: Tensor,
    levels: list[int],
    trajectory: Trajectory,
    *,
    hr_hw: tuple[int, int],
    scale: int = 4,
    gt_anchor: str = "centre",
    center: tuple[float, float] | None = None,
    subframe_step: float = SUBFRAME_STEP,
    max_subframes: int = MAX_SUBFRAMES,
    object_flows: Tensor | None = None,
) -> MotionClip:
    """Render a blurry LR clip and its sharp HR ground truth under continuous camera motion.

    Frame ``i`` opens the shutter at ``t = i`` for ``duty_cycle(levels[i])`` frame intervals; the blurry
    frame is the mean of renders at evenly spaced sub-frame instants, enough of them that no image point
    moves more than ``subframe_step`` HR pixels between two (an upper bound of the clip's image speed sets
    the count; ``max_subframes`` caps it). With steps at or below about a pixel the bilinear renders
    overlap and the mean is a continuous smear, not a stack of sharp copies. The ground truth is the
    render at the window's centre (``gt_anchor="centre"``, GoPro-like) or start (``"start"``, the
    literal REDS-ME reading).

    Args:
        scenes: ``[N, 3, Hs, Ws]`` sharp source in [0, 1]; frame ``i`` shows scene ``min(i, N - 1)``
            (one still, or consecutive video frames).
        levels: exposure level of each output frame (1..5).
        trajectory: the camera path.
        hr_hw: ground-truth size, divisible by ``scale``.
        scale: downsampling factor.
        gt_anchor: ``"centre"`` or ``"start"``.
        center: source position of the path's middle (the source centre when None).
        subframe_step: the most an image point may move between two sub-frame renders, HR px.
        max_subframes: cap on renders per exposure window (steps grow beyond ``subframe_step`` only
            for image speeds over ``max_subframes * subframe_step`` HR px per exposure).
        object_flows: ``[N - 1, 2, Hs, Ws]`` forward flows between consecutive scenes
            (``synth.interp.forward_flows``), or None. With flows, the scene moves during the exposure
            too: render ``s`` of frame ``i`` shows the flow-interpolated scene at content time
            ``i + (t_s - t_gt)``, so the ground truth is scene ``i`` itself and the blur follows both the
            camera and the objects. Without them, scene ``i`` is held for the whole exposure (object
            motion between scenes is a jump from frame to frame, never blur).

    Shapes:
        returns ``MotionClip`` with ``lr [T, 3, h, w]``, ``gt [T, 3, s*h, s*w]``, flows ``[T, 2, h, w]``.
    """
    if scenes.ndim != 4 or hr_hw[0] % scale or hr_hw[1] % scale:
        raise InputShapeError(
            f"scenes must be [N, 3, H, W] and hr_hw divisible by {scale}; got {tuple(scenes.shape)}, {hr_hw}"
        )
    if gt_anchor not in ("centre", "start"):
        raise ConfigError(f"gt_anchor must be 'centre' or 'start', got {gt_anchor!r}")
    check_subframes(subframe_step, max_subframes)
    T = len(levels)
    _, _, Hs, Ws = scenes.shape
    mid = np.array(center if center is not None else ((Ws - 1) / 2, (Hs - 1) / 2), dtype=np.float64)
    # Centre the path on the source: subtract the translation at the clip's middle instant.
    src_center = mid - trajectory.translation(np.array([T / 2]))[0]
    radius = math.hypot(*hr_hw) / 2
    flows = object_flows if scenes.shape[0] > 1 else None
    if flows is not None and flows.shape != (scenes.shape[0] - 1, 2, Hs, Ws):
        raise InputShapeError(f"object_flows must be [N - 1, 2, Hs, Ws], got {tuple(flows.shape)}")
    # Object motion adds at most the largest flow (scene px per frame; the slow zoom is ignored).
    speed = trajectory.max_speed(T + 1, radius) + flow_speed(flows)
    blurry, sharp, anchors = [], [], []
    for i, level in enumerate(levels):
        span = duty_cycle(level)
        n_sub = int(min(max_subframes, max(2, math.ceil(speed * span / subframe_step))))
        t_sub = i + span * (np.arange(n_sub) + 0.5) / n_sub
        t_gt = i + (span / 2 if gt_anchor == "centre" else 0.0)
        anchors.append(t_gt)
        scene = scenes[min(i, scenes.shape[0] - 1)]
        M, b = _affine(trajectory, np.concatenate([t_sub, [t_gt]]), hr_hw, src_center)
        if flows is None and n_sub < RENDER_CHUNK:  # one render call, exactly as before chunking
            frames = render(scene, M, b, hr_hw)  # [n_sub + 1, 3, H, W]
            blurry.append(frames[:-1].mean(0))
            sharp.append(frames[-1])
            continue
        # Sum the renders chunk by chunk (memory of RENDER_CHUNK renders); index n_sub is the GT instant.
        times = i + (t_sub - t_gt)  # content time: the ground-truth instant shows scene i exactly
        total = torch.zeros(3, *hr_hw, dtype=scene.dtype)
        for c in range(0, n_sub, RENDER_CHUNK):
            e = min(c + RENDER_CHUNK, n_sub)
            if flows is None:
                part = render(scene, M[c:e], b[c:e], hr_hw)
            else:
                part = render_moving(scenes, flows, times[c:e], M[c:e], b[c:e], hr_hw)
            total += part.sum(0)
        blurry.append(total / n_sub)
        sharp.append(render(scene, M[-1:], b[-1:], hr_hw)[0])
    hr_blur = torch.stack(blurry)  # [T, 3, H, W]
    gt = torch.stack(sharp).clamp(0, 1)  # [T, 3, H, W]
    lr_hw = (hr_hw[0] // scale, hr_hw[1] // scale)
    M, b = _affine(trajectory, np.array(anchors), hr_hw, src_center)
    flow_next = np.zeros((T, 2, *lr_hw), np.float32)
    flow_prev = np.zeros((T, 2, *lr_hw), np.float32)
    for i in range(T):
        if i + 1 < T:
            flow_next[i] = affine_flow(M[i], b[i], M[i + 1], b[i + 1], lr_hw, scale)
        if i > 0:
            flow_prev[i] = affine_flow(M[i], b[i], M[i - 1], b[i - 1], lr_hw, scale)
    return MotionClip(
        lr=bicubic_down(hr_blur, scale),
        gt=gt,
        levels=list(levels),
        flow_next=torch.from_numpy(flow_next),
        flow_prev=torch.from_numpy(flow_prev),
    )
