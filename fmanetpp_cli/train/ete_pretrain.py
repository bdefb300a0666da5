"""ETE pre-training on exposure-contrast sets, and the two held-out checks of an exposure embedding.

An exposure-contrast set renders ``K`` *contents* (a random still, camera path and start time each) at
every exposure level 5:1..5:5 with the same path, so its ``5 K`` frames are labelled by level and
grouped by content. Under SupCon with exposure labels the positives of a frame are then the same
exposure over other content, and the other frames of its own content (same scene, same motion, other
exposures) are negatives: the embedding cannot score by recognising the scene. Frames are rendered at
the LR size the ETE will see at inference (whole frames, not 32x32 patches reduced to 1x1).

Checks (content never seen by the ETE):

- ``knn_accuracy``: k-NN (cosine, k = 5) with neighbours from other contents only (the paper's S4.1 check
  without its content leak);
- ``linear_probe_accuracy``: multinomial logistic regression fitted on embeddings of training material,
  scored on the held-out frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmanetpp_cli.synth.exposure import LEVELS
from fmanetpp_cli.synth.motion import MotionRange, Trajectory, camera_motion_clip
from fmanetpp_cli.train.losses import supcon

SCALE = 4


@dataclass
class ContrastSet:
    """Frames of ``K`` contents at every exposure level."""

    frames: Tensor  # [K * 5, 3 * F, h, w] LR on the 8-bit grid (F = 1, or 3 frames i - 1, i, i + 1)
    levels: Tensor  # [K * 5] int64, 1..5
    content: Tensor  # [K * 5] int64, content index


def contrast_set(
    sources: list[Tensor],
    contents: int,
    lr_hw: tuple[int, int],
    seed: int,
    motion: MotionRange = MotionRange(),
    time_offset_max: float = 14.0,
    frames: int = 1,
) -> ContrastSet:
    """Render ``contents`` random contents at all five exposure levels (same path per content).

    Args:
        sources: decoded sources ``[N, 3, H, W]`` (``train.data.load_sources``); a random frame of a
            random source is the still of each content.
        contents: number of contents K.
        lr_hw: LR frame size (HR is ``4x``).
        seed: the random seed (the set is a pure function of its arguments).
        motion: bounds of the camera paths.
        time_offset_max: paths start at a random time up to this (faster, later parts of a path).
        frames: 1, or 3 for an ETE that sees each frame with its neighbours: the three frames of a
            3-frame clip at one level, stacked along the channels (``i - 1, i, i + 1``).

    Shapes:
        returns frames ``[5 K, 3 * frames, h, w]``.
    """
    rng = np.random.default_rng(seed)
    hr = (lr_hw[0] * SCALE, lr_hw[1] * SCALE)
    out, levels, content = [], [], []
    for k in range(contents):
        src = sources[int(rng.integers(len(sources)))]
        still = src[int(rng.integers(src.shape[0]))]
        traj = Trajectory.random(rng, motion).advanced(float(rng.uniform(0, time_offset_max)))
        H, W = still.shape[-2:]
        reach = math.hypot(*traj.velocity) + max(hr) / 2 + 8
        cx = rng.uniform(min(reach, W / 2), max(W - reach, W / 2))
        cy = rng.uniform(min(reach, H / 2), max(H - reach, H / 2))
        for level in LEVELS:
            clip = camera_motion_clip(
                still[None], [level] * frames, traj, hr_hw=hr, scale=SCALE, center=(cx, cy)
            )
            out.append(clip.lr.flatten(0, 1))  # [3 * frames, h, w]
            levels.append(level)
            content.append(k)
    x = (torch.stack(out) * 255).round() / 255
    return ContrastSet(x, torch.tensor(levels), torch.tensor(content))


def train_ete(
    ete: nn.Module,
    data: ContrastSet,
    *,
    steps: int,
    contents_per_batch: int = 16,
    lr: float = 1e-3,
    temperature: float = 0.5,
    supcon_weight: float = 1.0,
    ce_weight: float = 0.0,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[float]:
    """Train on batches of whole contents (all 5 levels of each), with random flips; Adam, cosine lr.

    The loss is ``supcon_weight`` x SupCon on exposure labels plus ``ce_weight`` x the cross-entropy of
    a linear classifier on the unit embeddings (logits scaled by 10; the classifier is discarded). SupCon
    alone on these batches collapses every embedding to one point within about ten steps (its loss then
    sits at ``ln(N - 1)``, measured); the classifier term keeps the classes apart.

    Returns:
        The loss of every step.
    """
    gen = torch.Generator().manual_seed(seed)
    K = int(data.content.max()) + 1
    ete.requires_grad_(True)
    ete.train()
    z_dim = ete(data.frames[:1]).shape[1]
    head = nn.Linear(z_dim, len(LEVELS))
    opt = torch.optim.Adam([*ete.parameters(), *head.parameters()], lr=lr)
    losses = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        pick = torch.randperm(K, generator=gen)[:contents_per_batch]
        idx = torch.nonzero(torch.isin(data.content, pick)).flatten()
        x = data.frames[idx]
        if torch.rand(1, generator=gen) < 0.5:
            x = x.flip(-1)
        if torch.rand(1, generator=gen) < 0.5:
            x = x.flip(-2)
        z, y = ete(x), data.levels[idx]
        loss = torch.zeros(())
        if supcon_weight > 0:
            loss = loss + supcon_weight * supcon(z, y, temperature)
        if ce_weight > 0:
            loss = loss + ce_weight * F.cross_entropy(head(F.normalize(z, dim=1) * 10.0), y - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if log is not None and (step % 100 == 0 or step == steps - 1):
            log(f"ete step {step} loss {loss.item():.4f}")
    ete.eval()
    ete.requires_grad_(False)
    return losses


@torch.no_grad()
def embed(ete: nn.Module, frames: Tensor, batch: int = 64) -> Tensor:
    """Unit embeddings of ``frames [N, 3, h, w]`` -> ``[N, d]``."""
    return torch.cat([F.normalize(ete(frames[i : i + batch]), dim=1) for i in range(0, len(frames), batch)])


def knn_accuracy(z: Tensor, levels: Tensor, groups: Tensor, k: int = 5) -> float:
    """k-NN accuracy (cosine, majority vote) with neighbours from other groups only."""
    sim = z @ z.T
    sim[groups[:, None] == groups[None, :]] = -2.0
    nearest = sim.topk(k, dim=1).indices  # [N, k]
    votes = torch.stack([(levels[nearest] == c).sum(1) for c in LEVELS], 1)  # [N, 5]
    pred = votes.argmax(1) + 1
    return float((pred == levels).float().mean())


def linear_probe_accuracy(
    z_train: Tensor, y_train: Tensor, z_test: Tensor, y_test: Tensor, steps: int = 500
) -> float:
    """Multinomial logistic regression (full-batch Adam, small weight decay) fitted on the training
    embeddings, accuracy on the test embeddings."""
    probe = nn.Linear(z_train.shape[1], len(LEVELS))
    opt = torch.optim.Adam(probe.parameters(), lr=0.05, weight_decay=1e-4)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(probe(z_train), y_train - 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float((probe(z_test).argmax(1) + 1 == y_test).float().mean())
