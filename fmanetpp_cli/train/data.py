"""Training clips degraded on the fly, with the same code as ``fmanetpp degrade``.

Sharp source frames are decoded once and kept in memory (area-downscaled by ``data.downscale``). Every
sample is a pure function of ``(seed, index)``, so a resumed run sees exactly the batches it would have
seen, and every process under ``torchrun`` draws different indices.

- ``camera`` recipe: a random source frame is a still; a random continuous camera path over it is
  integrated over each frame's exposure window (``synth.motion``); the true LR flows come with it.
- ``hfr`` recipe: consecutive source frames are averaged (``synth.exposure``); no flow target.

Each clip has one exposure level (REDS-ME) or, with probability ``random_exposure_prob``, a random-walk
schedule (REDS-RE).

``colour_jitter`` (j): before degradation, each clip's sharp source gets a random per-channel gain and
brightness (both ``exp(U[-j, j])``), saturation ``1 + U[-j, j]`` and gamma ``exp(U[-j/2, j/2])``, clamped
to [0, 1], so that LR and GT change together. Its numbers come from a generator of their own,
``(seed, index, 1)``, so switching it on leaves every other draw of a sample unchanged.

``time_offset_max``: a camera path accelerates for the whole clip, so the last frames of a 20-frame
``degrade`` clip move much faster than any frame of a 6-frame training clip drawn from the same bounds
(measured on the test set: up to 12 LR px per frame against about 7). A clip that starts at a random time
``t0 <= time_offset_max`` on its path sees the later, faster part too; 14 matches 20-frame clips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fmanetpp_cli.errors import InputShapeError
from fmanetpp_cli.synth.degrade import prepare_source
from fmanetpp_cli.synth.exposure import (
    average_exposures,
    bicubic_down,
    fixed_schedule,
    frames_in_window,
    random_schedule,
)
from fmanetpp_cli.synth.io import read_frames
from fmanetpp_cli.synth.motion import MotionRange, Trajectory, camera_motion_clip
from fmanetpp_cli.synth.noise import add_gaussian_noise
from fmanetpp_cli.train.config import DataConfig, SourceSpec

SCALE = 4


def load_sources(specs: tuple[SourceSpec, ...], downscale: int, hr_patch: int = 0) -> list[Tensor]:
    """Decode every source into a float ``[N, 3, H, W]`` tensor (frames subsampled by ``step``).

    A source whose frames end up smaller than ``hr_patch`` on either side is refused by name.
    """
    out = []
    for spec in specs:
        count = None if spec.stop is None else spec.stop - spec.start
        frames = read_frames(spec.path, start=spec.start, count=count)[:: spec.step]
        factor = downscale if spec.downscale is None else spec.downscale
        src = prepare_source(frames, factor, SCALE)
        h, w = src.shape[-2:]
        if min(h, w) < hr_patch:
            raise InputShapeError(
                f"{spec.path}: {w}x{h} after downscale {factor} is smaller than the {hr_patch}-pixel HR patch"
            )
        out.append(src)
    return out


def jitter_colours(x: Tensor, amount: float, rng: np.random.Generator) -> Tensor:
    """A random colour change of sharp frames ``x [..., 3, H, W]`` in [0, 1] (see the module docstring)."""
    gain = np.exp(rng.uniform(-amount, amount, size=3)) * np.exp(rng.uniform(-amount, amount))
    saturation = 1.0 + rng.uniform(-amount, amount)
    gamma = float(np.exp(rng.uniform(-amount / 2, amount / 2)))
    y = x * torch.tensor(gain, dtype=x.dtype)[:, None, None]
    grey = y.mean(dim=-3, keepdim=True)
    y = (grey + saturation * (y - grey)).clamp(0.0, 1.0)
    return y**gamma


@dataclass
class Clip:
    """One training sample (tensors without the batch axis)."""

    lr: Tensor  # [3, T, h, w]
    gt: Tensor  # [3, T, 4h, 4w]
    levels: Tensor  # [T] int64, exposure levels 1..5
    flow_prev: Tensor  # [2, T, h, w] frame i -> i - 1 (LR px)
    flow_next: Tensor  # [2, T, h, w] frame i -> i + 1
    flow_valid: Tensor  # [] bool: the flows are the true motion


class DegradedClips(torch.utils.data.Dataset):
    """An endless, deterministic stream of degraded clips (``len`` is nominal, indices may be any int).

    Args:
        sources: decoded source tensors ``[N, 3, H, W]`` (``load_sources``).
        cfg: the data settings.
        seed: base seed; sample ``i`` is drawn from ``(seed, i)``.
        length: nominal length reported to samplers.
        source_weights: sampling weight of each source (``None`` entries, or no list: its frame count).
    """

    def __init__(
        self,
        sources: list[Tensor],
        cfg: DataConfig,
        seed: int,
        length: int = 10**9,
        source_weights: list[float | None] | None = None,
    ) -> None:
        if not sources:
            raise InputShapeError("no training sources")
        hr = cfg.lr_patch * SCALE
        for s in sources:
            if min(s.shape[-2:]) < hr:
                raise InputShapeError(f"a source of {tuple(s.shape[-2:])} is smaller than the HR patch {hr}")
        self.sources = sources
        self.cfg = cfg
        self.seed = seed
        self.length = length
        given = list(source_weights) if source_weights is not None else [None] * len(sources)
        if len(given) != len(sources):
            raise InputShapeError(f"{len(given)} source weights for {len(sources)} sources")
        weights = np.array(
            [s.shape[0] if w is None else w for s, w in zip(sources, given, strict=True)], dtype=np.float64
        )
        self.weights = weights / weights.sum()
        self.motion = MotionRange(
            max_speed=cfg.max_speed,
            max_accel=cfg.max_accel,
            max_shake=cfg.max_shake,
            max_rotation=cfg.max_rotation,
            max_zoom=cfg.max_zoom,
        )

    def __len__(self) -> int:
        return self.length

    def _jitter(self, x: Tensor, index: int) -> Tensor:
        if self.cfg.colour_jitter <= 0:
            return x
        return jitter_colours(x, self.cfg.colour_jitter, np.random.default_rng([self.seed, index, 1]))

    def _levels(self, rng: np.random.Generator) -> list[int]:
        T = self.cfg.frames
        if rng.uniform() < self.cfg.random_exposure_prob:
            return random_schedule(T, rng)
        return fixed_schedule(T, int(rng.integers(1, 6)))

    def _camera(
        self, src: Tensor, rng: np.random.Generator, levels: list[int], index: int
    ) -> dict[str, Tensor]:
        N, _, H, W = src.shape
        hr = self.cfg.lr_patch * SCALE
        still = self._jitter(src[int(rng.integers(N))], index)
        traj = Trajectory.random(rng, self.motion)
        if self.cfg.time_offset_max > 0:  # acceleration has built up, as in the late frames of a long clip
            traj = traj.advanced(float(rng.uniform(0, self.cfg.time_offset_max)))
        # Keep the path inside the frame where the source allows it (reflection covers the rest).
        reach = math.hypot(*traj.velocity) * self.cfg.frames / 2 + hr / 2 + 8
        cx = rng.uniform(min(reach, W / 2), max(W - reach, W / 2))
        cy = rng.uniform(min(reach, H / 2), max(H - reach, H / 2))
        clip = camera_motion_clip(
            still[None],
            levels,
            traj,
            hr_hw=(hr, hr),
            scale=SCALE,
            gt_anchor=self.cfg.gt_anchor,
            center=(cx, cy),
        )
        return {
            "lr": clip.lr,
            "gt": clip.gt,
            "flow_prev": clip.flow_prev,
            "flow_next": clip.flow_next,
            "valid": torch.tensor(True),
        }

    def _hfr(self, src: Tensor, rng: np.random.Generator, levels: list[int], index: int) -> dict[str, Tensor]:
        T, step = self.cfg.frames, self.cfg.hfr_interval
        span = (T - 1) * step + frames_in_window(5, step)
        if src.shape[0] < span:
            raise InputShapeError(f"an hfr source of {src.shape[0]} frames is shorter than a clip ({span})")
        first = int(rng.integers(src.shape[0] - span + 1))
        hr = self.cfg.lr_patch * SCALE
        top = int(rng.integers(src.shape[-2] - hr + 1))
        left = int(rng.integers(src.shape[-1] - hr + 1))
        window = self._jitter(src[first : first + span, :, top : top + hr, left : left + hr], index)
        blurry, sharp = average_exposures(window, levels, interval=step)
        zeros = torch.zeros(T, 2, hr // SCALE, hr // SCALE)
        return {
            "lr": bicubic_down(blurry, SCALE),
            "gt": sharp,
            "flow_prev": zeros,
            "flow_next": zeros,
            "valid": torch.tensor(False),
        }

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        """Sample ``index``: ``lr [3, T, h, w]``, ``gt [3, T, 4h, 4w]``, ``levels [T]``, flows, validity."""
        rng = np.random.default_rng([self.seed, int(index)])
        src = self.sources[int(rng.choice(len(self.sources), p=self.weights))]
        levels = self._levels(rng)
        make = self._camera if self.cfg.recipe == "camera" else self._hfr
        d = make(src, rng, levels, int(index))
        lr, gt, fp, fn = d["lr"], d["gt"], d["flow_prev"], d["flow_next"]
        if self.cfg.noise_sigma > 0:
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            lr = add_gaussian_noise(lr, float(rng.uniform(0, self.cfg.noise_sigma)), gen)
        lr = (lr * 255).round() / 255  # the 8-bit grid real inputs live on
        if self.cfg.flip:
            if rng.uniform() < 0.5:  # horizontal: x flips, so does the x component of the flows
                lr, gt, fp, fn = (t.flip(-1) for t in (lr, gt, fp, fn))
                fp, fn = (
                    fp * torch.tensor([-1.0, 1.0])[:, None, None],
                    fn * torch.tensor([-1.0, 1.0])[:, None, None],
                )
            if rng.uniform() < 0.5:
                lr, gt, fp, fn = (t.flip(-2) for t in (lr, gt, fp, fn))
                fp, fn = (
                    fp * torch.tensor([1.0, -1.0])[:, None, None],
                    fn * torch.tensor([1.0, -1.0])[:, None, None],
                )
        return {
            "lr": lr.permute(1, 0, 2, 3).contiguous(),  # [3, T, h, w]
            "gt": gt.permute(1, 0, 2, 3).contiguous(),  # [3, T, 4h, 4w]
            "levels": torch.tensor(levels, dtype=torch.int64),  # [T]
            "flow_prev": fp.permute(1, 0, 2, 3).contiguous(),  # [2, T, h, w]
            "flow_next": fn.permute(1, 0, 2, 3).contiguous(),  # [2, T, h, w]
            "flow_valid": d["valid"],
        }


def collate(samples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack samples into a batch (``lr [B, 3, T, h, w]`` etc.)."""
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def batch_at(
    dataset: DegradedClips, step: int, batch_size: int, rank: int = 0, world: int = 1
) -> dict[str, Tensor]:
    """The batch for global ``step`` on process ``rank``: a pure function of the step (resume-safe)."""
    first = (step * world + rank) * batch_size
    return collate([dataset[first + i] for i in range(batch_size)])
