"""Global-motion flow initialisation (models/global_motion.py and ``initial_flow = "global"``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fmanetpp_cli.errors import ConfigError
from fmanetpp_cli.models.fmanetpp import PRESETS, FMANetPP, FMANetPPConfig
from fmanetpp_cli.models.global_motion import neighbour_shifts, phase_correlation


def texture(H: int = 160, W: int = 200, seed: int = 0) -> torch.Tensor:
    """A smooth random RGB image ``[1, 3, H, W]``."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(1, 3, H // 6, W // 6, generator=g), size=(H, W), mode="bicubic").clamp(
        0, 1
    )


def shifted(img: torch.Tensor, dx: float, dy: float, size: tuple[int, int]) -> torch.Tensor:
    """A ``size`` crop of ``img`` whose content has moved by ``(dx, dy)`` (bilinear, sub-pixel)."""
    _, _, H, W = img.shape
    h, w = size
    ys = torch.arange(h, dtype=torch.float32) + (H - h) / 2 - dy
    xs = torch.arange(w, dtype=torch.float32) + (W - w) / 2 - dx
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack((2 * gx / (W - 1) - 1, 2 * gy / (H - 1) - 1), dim=-1)[None]
    return F.grid_sample(img, grid, mode="bilinear", align_corners=True)


@pytest.mark.parametrize(("dx", "dy"), [(0.0, 0.0), (3.0, 0.0), (-2.0, 5.0), (1.5, -2.25), (-9.0, 7.0)])
def test_phase_correlation_finds_the_translation(dx: float, dy: float) -> None:
    img = texture()
    ref = shifted(img, 0.0, 0.0, (40, 48))
    mov = shifted(img, dx, dy, (40, 48))  # mov(p + d) = ref(p)
    est = phase_correlation(ref, mov)[0]
    assert est.tolist() == pytest.approx([dx, dy], abs=0.3)


def test_shifts_beyond_the_limit_are_dropped() -> None:
    img = texture()
    ref, mov = shifted(img, 0, 0, (40, 48)), shifted(img, 6.0, 0, (40, 48))
    assert phase_correlation(ref, mov, max_shift=10)[0, 0] == pytest.approx(6.0, abs=0.3)
    assert phase_correlation(ref, mov, max_shift=4).abs().max() == 0


def test_neighbour_shifts_point_at_each_neighbour_and_are_zero_at_the_ends() -> None:
    img = texture()
    # A camera pan: frame t is the texture moved by (2t, -t).
    frames = torch.cat([shifted(img, 2.0 * t, -1.0 * t, (36, 44)) for t in range(5)])  # [5, 3, h, w]
    to_prev, to_next = neighbour_shifts(torch.cat([frames, frames.flip(0)]), num_frames=5)  # two clips
    assert to_prev.shape == (10, 2) and to_next.shape == (10, 2)
    # frame t -> t - 1: frame_{t-1}(p + d) = frame_t(p) with content moving by +(2, -1) per frame: d = (-2, 1)
    torch.testing.assert_close(to_prev[1:5], torch.tensor([[-2.0, 1.0]] * 4), atol=0.3, rtol=0)
    torch.testing.assert_close(to_next[0:4], torch.tensor([[2.0, -1.0]] * 4), atol=0.3, rtol=0)
    torch.testing.assert_close(to_prev[6:10], torch.tensor([[2.0, -1.0]] * 4), atol=0.3, rtol=0)  # reversed
    assert to_prev[0].abs().max() == 0 and to_next[4].abs().max() == 0
    assert to_prev[5].abs().max() == 0 and to_next[9].abs().max() == 0


def test_global_initial_flows_fill_every_flow_of_a_direction() -> None:
    cfg = dataclasses.replace(PRESETS["fmanetpp-tiny"], initial_flow="global")
    net_d = FMANetPP(cfg).degradation_learning_network
    img = texture()
    frames = torch.cat([shifted(img, 2.0 * t, 0.0, (16, 20)) for t in range(3)])  # [3, 3, 16, 20]
    fm = net_d.initial_flow_mask(frames, frames, num_frames=3).view(3, 2 * cfg.num_flow, 3, 16, 20)
    n = cfg.num_flow
    assert torch.allclose(fm[1, :n, 0], torch.full_like(fm[1, :n, 0], fm[1, 0, 0, 0, 0].item()))
    assert fm[1, :n, 0].mean().item() == pytest.approx(-2.0, abs=0.3)  # towards the previous frame
    assert fm[1, n:, 0].mean().item() == pytest.approx(2.0, abs=0.3)  # towards the next frame
    assert (fm[:, :, 2] == cfg.init_mask_logit).all()
    zero = FMANetPP(PRESETS["fmanetpp-tiny"]).degradation_learning_network
    assert zero.initial_flow_mask(frames, frames, num_frames=3)[:, :2].abs().max() == 0


def test_static_clip_gives_the_same_output_with_either_start() -> None:
    torch.manual_seed(0)
    base = FMANetPP(PRESETS["fmanetpp-tiny"]).eval()
    glob = FMANetPP(dataclasses.replace(PRESETS["fmanetpp-tiny"], initial_flow="global")).eval()
    glob.load_state_dict(base.state_dict())
    still = texture(16, 20)[:, :, None].expand(1, 3, 4, 16, 20).contiguous()  # no motion: zero shifts
    moving = torch.stack([shifted(texture(), 2.0 * t, 0.0, (16, 20))[0] for t in range(4)], dim=1)[None]
    with torch.no_grad():
        torch.testing.assert_close(glob(still)["output"], base(still)["output"])
        assert (glob(moving)["output"] - base(moving)["output"]).abs().max() > 1e-4


def test_initial_flow_is_validated() -> None:
    with pytest.raises(ConfigError, match="initial_flow"):
        FMANetPPConfig(initial_flow="raft")
    assert PRESETS["fmanetpp-small-v2g"].initial_flow == "global"
    assert PRESETS["fmanetpp-small-v2"].initial_flow == "zero"
