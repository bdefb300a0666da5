"""The exposure-contrast ETE data, its held-out checks, and the 3-frame ETE input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fmanetpp_cli.errors import ConfigError, InputShapeError
from fmanetpp_cli.models.ete import ExposureEncoder
from fmanetpp_cli.synth.motion import MotionRange
from fmanetpp_cli.train.ete_pretrain import (
    contrast_set,
    embed,
    knn_accuracy,
    linear_probe_accuracy,
    train_ete,
)


def source(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(2, 3, 20, 20, generator=g)
    return F.interpolate(coarse, size=(192, 192), mode="bicubic", align_corners=False).clamp(0, 1)


def test_contrast_set_renders_every_level_of_each_content_along_one_path() -> None:
    motion = MotionRange(max_speed=16.0, max_shake=0.0)
    s = contrast_set([source()], 3, (16, 16), seed=4, motion=motion, frames=3)
    assert s.frames.shape == (15, 9, 16, 16)
    assert s.levels.tolist() == [1, 2, 3, 4, 5] * 3
    assert s.content.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert torch.equal((s.frames * 255).round() / 255, s.frames)  # the 8-bit grid
    # Same content, same path: the mid frame is the same picture with more blur at longer exposures.
    mid = s.frames[:, 3:6]
    grad = (mid[..., 1:] - mid[..., :-1]).abs().mean((1, 2, 3)).view(3, 5)
    assert (grad[:, 0] > grad[:, 4]).all()
    again = contrast_set([source()], 3, (16, 16), seed=4, motion=motion, frames=3)
    assert torch.equal(again.frames, s.frames)


def test_knn_and_linear_probe_score_separable_and_random_embeddings() -> None:
    g = torch.Generator().manual_seed(0)
    levels = torch.arange(1, 6).repeat(20)
    groups = torch.arange(100) // 5  # one content = one group of 5 levels
    centres = F.normalize(torch.randn(5, 16, generator=g), dim=1)
    z = F.normalize(centres[levels - 1] + 0.05 * torch.randn(100, 16, generator=g), dim=1)
    assert knn_accuracy(z, levels, groups) == 1.0
    assert linear_probe_accuracy(z, levels, z, levels, steps=100) == 1.0
    noise = F.normalize(torch.randn(100, 16, generator=g), dim=1)
    assert knn_accuracy(noise, levels, groups) < 0.5
    # Content-only embeddings (equal within a group) carry no exposure: neighbours from other groups.
    content = F.normalize(torch.randn(20, 16, generator=g), dim=1)[groups]
    assert knn_accuracy(content, levels, groups) < 0.5


def test_three_frame_ete_keeps_the_parameter_names() -> None:
    one, three = ExposureEncoder(width=8), ExposureEncoder(width=8, frames=3)
    a, b = one.state_dict(), three.state_dict()
    assert list(a) == list(b)
    assert [k for k in a if a[k].shape != b[k].shape] == ["stem.0.weight"]
    assert three(torch.rand(2, 9, 40, 48)).shape == (2, 64)
    with pytest.raises(InputShapeError, match="9"):
        three(torch.rand(2, 3, 40, 48))
    with pytest.raises(ConfigError):
        ExposureEncoder(width=8, frames=2)


def test_train_ete_runs_and_leaves_the_encoder_frozen() -> None:
    s = contrast_set([source(1)], 4, (16, 16), seed=0)
    ete = ExposureEncoder(width=8)
    losses = train_ete(ete, s, steps=3, contents_per_batch=2, ce_weight=1.0)
    assert len(losses) == 3 and all(v > 0 for v in losses)
    assert not any(p.requires_grad for p in ete.parameters()) and not ete.training
    assert embed(ete, s.frames).shape == (20, 64)
