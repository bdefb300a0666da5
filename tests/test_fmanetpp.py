"""FMA-Net++ (models/fmanetpp.py, hrbp.py, ete.py): config, presets, shapes, temporal receptive field,
exposure conditioning, gradients, safetensors round trip and the exposure-aware dynamic filtering."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fmanetpp_cli.errors import ConfigError, InputShapeError
from fmanetpp_cli.models import create_model, list_models
from fmanetpp_cli.models.fmanetpp import INFERENCE_CHUNK, PRESETS, FMANetPP, FMANetPPConfig
from fmanetpp_cli.models.reblur import exposure_aware_fgdf

TINY = PRESETS["fmanetpp-tiny"]
# Two blocks per network: temporal radius 4, so the chunking test exercises more than one block.
TINY_M2 = dataclasses.replace(TINY, num_blocks=2)


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def build(config: FMANetPPConfig, seed: int = 0) -> FMANetPP:
    torch.manual_seed(seed)
    return FMANetPP(config).eval()


def clip(T: int, H: int, W: int, seed: int = 1, scale: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, T, H * scale, W * scale, generator=g)


def trainable_count(model: FMANetPP) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("ete."))


# ------------------------------------------------------------------------------------------------
# Config and presets
# ------------------------------------------------------------------------------------------------


def test_config_round_trip_and_rejections() -> None:
    for cfg in PRESETS.values():
        assert FMANetPPConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown FMANetPPConfig keys: bogus"):
        FMANetPPConfig.from_dict({**TINY.to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="num_flow"):
        dataclasses.replace(TINY, dim=13)
    with pytest.raises(ConfigError, match="even"):
        dataclasses.replace(TINY, ds_kernel_size=7)
    with pytest.raises(ConfigError, match="edge_mode"):
        dataclasses.replace(TINY, edge_mode="reflect")


def test_presets_registered_with_interface_attributes() -> None:
    names = {"fmanetpp-paper", "fmanetpp-paper-m1", "fmanetpp-paper-m2", "fmanetpp-small", "fmanetpp-tiny"}
    assert names <= set(list_models())
    model = create_model("fmanetpp-small")
    assert isinstance(model, FMANetPP)
    assert model.config == PRESETS["fmanetpp-small"]
    assert (model.scale, model.temporal_mode, model.channel_order) == (4, "sequence", "RGB")
    assert model.temporal_radius == 2 * model.config.num_blocks == 4
    assert model.num_seq == model.config.num_seq
    assert model.ete is not None and not any(p.requires_grad for p in model.ete.parameters())


def test_paper_parameter_counts() -> None:
    # Paper: 12.8 M (M = 4), 7.7 M (M = 1), 9.4 M (M = 2), without the frozen ETE (spec section 9.2).
    counts = {name: trainable_count(FMANetPP(PRESETS[name])) for name in PRESETS if "paper" in name}
    assert abs(counts["fmanetpp-paper"] / 12.8e6 - 1) < 0.10
    assert abs(counts["fmanetpp-paper-m1"] / 7.7e6 - 1) < 0.10
    assert abs(counts["fmanetpp-paper-m2"] / 9.4e6 - 1) < 0.10
    # Each (Net_D, Net_R) block pair costs the same, so the counts are linear in M.
    step = counts["fmanetpp-paper-m2"] - counts["fmanetpp-paper-m1"]
    assert counts["fmanetpp-paper"] - counts["fmanetpp-paper-m2"] == 2 * step


# ------------------------------------------------------------------------------------------------
# Shapes
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("T", "H", "W"), [(1, 8, 8), (2, 9, 13), (5, 11, 8), (3, 8, 17)])
def test_output_shapes(T: int, H: int, W: int) -> None:
    model = build(TINY)
    with torch.no_grad():
        out = model(clip(T, H, W), clip(T, H, W, scale=4))
    d_u = TINY.exposure_dim
    k2 = TINY.ds_kernel_size**2
    expected = {
        "output": (1, 3, T, 4 * H, 4 * W),
        "exposure": (1, T, d_u),
        "recon": (1, 3, T, H, W),
        "hr_warp_prev": (1, 3, T, 4 * H, 4 * W),
        "hr_warp_next": (1, 3, T, 4 * H, 4 * W),
        "image_flow_prev": (1, 2, T, H, W),
        "image_flow_next": (1, 2, T, H, W),
        "image_mask_prev": (1, 1, T, H, W),
        "image_mask_next": (1, 1, T, H, W),
        "kernels": (1, 3 * k2, T, H, W),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(torch.isfinite(v).all() for v in out.values())
    with torch.no_grad():
        plain = model(clip(T, H, W))
    assert set(plain) == {"output", "exposure"}
    torch.testing.assert_close(plain["output"], out["output"])


def test_small_preset_batch_of_two_matches_single_clips() -> None:
    model = build(PRESETS["fmanetpp-small"])
    a, b = clip(3, 9, 10, seed=2), clip(3, 9, 10, seed=3)
    with torch.no_grad():
        both = model(torch.cat((a, b)))["output"]
        one = model(b)["output"]
    assert both.shape == (2, 3, 3, 36, 40)
    torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kernel_conv_size", "H", "W"), [(3, 8, 9), (3, 5, 11), (5, 13, 12), (1, 8, 8)])
def test_inference_path_equals_the_autograd_pass(kernel_conv_size: int, H: int, W: int) -> None:
    # Without autograd the upsampler runs INFERENCE_CHUNK frames at a time and the K^D head + kernel
    # encoder run as one fused convolution (border ring recomputed; small frames take the plain path).
    model = build(dataclasses.replace(TINY, kernel_conv_size=kernel_conv_size))
    x = clip(2 * INFERENCE_CHUNK + 1, H, W)
    with torch.no_grad():
        pieces = model(x)["output"]
    whole = model(x)["output"].detach()
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_input_shape_error() -> None:
    model = build(TINY)
    with pytest.raises(InputShapeError, match=r"\[B, 3, T, H, W\]"):
        model(torch.rand(1, 3, 8, 8))
    with pytest.raises(InputShapeError, match="H, W >= 2"):
        model(torch.rand(1, 3, 2, 1, 8))
    with pytest.raises(InputShapeError, match="y must be"):
        model(clip(2, 8, 8), torch.rand(1, 3, 2, 16, 16))
    with pytest.raises(InputShapeError, match="exposure must be"):
        model(clip(2, 8, 8), exposure=torch.rand(1, 3, TINY.exposure_dim))


# ------------------------------------------------------------------------------------------------
# Temporal receptive field and chunking
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [TINY, TINY_M2, dataclasses.replace(TINY_M2, initial_flow="global")],
    ids=["M1", "M2", "M2-global-flow"],
)
def test_receptive_field_is_exactly_two_blocks_per_side(config: FMANetPPConfig) -> None:
    model = build(config)
    r = model.temporal_radius
    T = r + 3
    x = clip(T, 8, 9)
    x2 = x.clone()
    x2[:, :, 0] = torch.rand_like(x2[:, :, 0])
    with torch.no_grad():
        a, b = model(x)["output"], model(x2)["output"]
    changed = [(a[:, :, t] - b[:, :, t]).abs().max().item() > 1e-6 for t in range(T)]
    # Frame 0 reaches frames 0..r and nothing beyond.
    assert changed == [True] * (r + 1) + [False] * (T - r - 1)


@pytest.mark.parametrize(
    ("edge_mode", "initial_flow"), [("replicate", "zero"), ("mask", "zero"), ("replicate", "global")]
)
def test_chunk_with_context_equals_whole_clip(edge_mode: str, initial_flow: str) -> None:
    model = build(dataclasses.replace(TINY_M2, edge_mode=edge_mode, initial_flow=initial_flow))
    r = model.temporal_radius
    T = 2 * r + 5
    x = clip(T, 8, 10, seed=4)
    with torch.no_grad():
        whole = model(x)["output"]
        # Chunk touching the true start: frames 0 .. r+2 are exact (the edge rule is a true edge here).
        head = model(x[:, :, : 2 * r + 3])["output"]
        # Interior chunk: frames lo + r .. hi - r - 1 have r frames of context on both sides.
        lo, hi = 2, T - 1
        mid = model(x[:, :, lo:hi])["output"]
    torch.testing.assert_close(head[:, :, : r + 3], whole[:, :, : r + 3], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mid[:, :, r : hi - lo - r], whole[:, :, lo + r : hi - r], rtol=1e-5, atol=1e-5)
    # Frames of the chunk with less context differ: the edge rule acted at a seam that is not a true end.
    assert (mid[:, :, 0] - whole[:, :, lo]).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------------
# Exposure conditioning
# ------------------------------------------------------------------------------------------------


def test_exposure_embeddings_change_the_output() -> None:
    model = build(TINY)
    x = clip(3, 8, 8)
    with torch.no_grad():
        own = model(x)
        same = model(x, exposure=own["exposure"])
        u = torch.nn.functional.normalize(torch.randn(1, 3, TINY.exposure_dim), dim=-1)
        other = model(x, exposure=u)
    torch.testing.assert_close(same["output"], own["output"])
    assert (other["output"] - own["output"]).abs().max() > 1e-4
    torch.testing.assert_close(other["exposure"], u)
    # The ETE itself: one unit-length embedding per frame, no gradient while frozen.
    emb = model.embed_exposure(x)
    assert emb.shape == (1, 3, TINY.exposure_dim) and not emb.requires_grad
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(1, 3))
    frames = torch.rand(4, 3, 20, 24)
    assert model.ete is not None and model.ete(frames).shape == (4, TINY.exposure_dim)


def test_without_exposure_conditioning_embeddings_do_nothing() -> None:
    cfg = dataclasses.replace(TINY, use_exposure=False)
    model = build(cfg)
    assert model.ete is None
    assert not any("etm" in name for name, _ in model.named_parameters())
    assert trainable_count(model) < trainable_count(build(TINY))
    x = clip(3, 8, 8)
    with torch.no_grad():
        plain = model(x)
        a = model(x, exposure=torch.randn(1, 3, 64))
        b = model(x, exposure=torch.randn(1, 3, 64))
    assert "exposure" not in plain
    assert torch.equal(a["output"], plain["output"]) and torch.equal(b["output"], plain["output"])
    with pytest.raises(ConfigError):
        model.embed_exposure(x)


# ------------------------------------------------------------------------------------------------
# Training path
# ------------------------------------------------------------------------------------------------


def test_gradients_reach_every_trainable_parameter() -> None:
    model = build(TINY).train()
    x, y = clip(3, 8, 8), clip(3, 8, 8, seed=5, scale=4)
    out = model(x, y)
    loss = sum(v.float().mean() for k, v in out.items() if k != "exposure")
    loss.backward()
    missing = [
        name
        for name, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)
    ]
    assert missing == []
    assert all(p.grad is None for p in model.ete.parameters())  # type: ignore[union-attr]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(name.startswith("ete.") for name in trainable)


def test_forward_degradation_matches_full_forward() -> None:
    model = build(TINY)
    x, y = clip(4, 8, 9), clip(4, 8, 9, seed=6, scale=4)
    with torch.no_grad():
        full = model(x, y)
        net_d = model.forward_degradation(x, y)
    assert "output" not in net_d
    assert set(net_d) == set(full) - {"output"}
    for key, value in net_d.items():
        torch.testing.assert_close(value, full[key])


def test_safetensors_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = build(TINY, seed=0)
    path = tmp_path / "tiny.safetensors"
    save_file(model.state_dict(), str(path))
    other = build(FMANetPPConfig.from_dict(model.config.to_dict()), seed=123)
    x = clip(3, 8, 11)
    with torch.no_grad():
        before = other(x)["output"]
    other.load_state_dict(load_file(str(path)), strict=True)
    with torch.no_grad():
        a, b = model(x)["output"], other(x)["output"]
    assert not torch.equal(before, a)
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# Exposure-aware FGDF against a direct implementation
# ------------------------------------------------------------------------------------------------


def reference_fgdf(
    hr: torch.Tensor,
    shifts: list[tuple[int, int, int, int]],
    logits: list[tuple[float, float]],
    kernels: torch.Tensor,
    k: int,
    s: int,
) -> torch.Tensor:
    """Eq. 6 pixel by pixel for constant integer LR flows and constant mask logits per frame.

    ``shifts[i] = (dx_prev, dy_prev, dx_next, dy_next)`` in LR pixels; the HR warp of a constant flow is a
    shift by ``s`` times it with zeros outside. Sources ``(i-1, i, i+1)``; a missing neighbour is ``Y_i``
    with full coverage. Taps are softmax-normalised over all ``3 k^2`` of them, the HR frame is
    replicate-padded by ``(k - s) / 2``, and the result is divided by the filtered coverage.
    """
    T, C, sH, sW = hr.shape
    H, W = sH // s, sW // s
    pad = (k - s) // 2

    def source(i: int, which: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = i + (-1 if which == 0 else 1)
        if j < 0 or j >= T:
            return hr[i], torch.ones(1, sH, sW, dtype=hr.dtype)
        dx, dy = shifts[i][2 * which], shifts[i][2 * which + 1]
        m = 1.0 / (1.0 + math.exp(-logits[i][which]))
        img = torch.zeros(C, sH, sW, dtype=hr.dtype)
        cov = torch.zeros(1, sH, sW, dtype=hr.dtype)
        for yy in range(sH):
            for xx in range(sW):
                sy, sx = yy + s * dy, xx + s * dx
                if 0 <= sy < sH and 0 <= sx < sW:
                    img[:, yy, xx] = hr[j, :, sy, sx] * m
                    cov[:, yy, xx] = m
        return img, cov

    out = torch.zeros(T, C, H, W, dtype=hr.dtype)
    for i in range(T):
        prev, cprev = source(i, 0)
        nxt, cnxt = source(i, 1)
        srcs = [(prev, cprev), (hr[i], torch.ones(1, sH, sW, dtype=hr.dtype)), (nxt, cnxt)]
        w = torch.softmax(kernels[i].reshape(-1, H, W), dim=0).reshape(3, k, k, H, W)
        for h in range(H):
            for x in range(W):
                num = torch.zeros(C, dtype=hr.dtype)
                den = torch.zeros(1, dtype=hr.dtype)
                for t, (img, cov) in enumerate(srcs):
                    for a in range(k):
                        for b in range(k):
                            py = min(max(s * h + a - pad, 0), sH - 1)
                            px = min(max(s * x + b - pad, 0), sW - 1)
                            num += w[t, a, b, h, x] * img[:, py, px]
                            den += w[t, a, b, h, x] * cov[:, py, px]
                out[i, :, h, x] = num / (den + 1e-8)
    return out


def test_exposure_aware_fgdf_matches_direct_reference() -> None:
    torch.manual_seed(7)
    T, H, W, k, s = 3, 3, 4, 6, 4
    hr = torch.rand(T, 3, s * H, s * W, dtype=torch.float64)
    shifts = [(1, 0, 0, -1), (0, 1, -1, 0), (1, 1, 0, 0)]
    logits = [(0.5, -1.0), (2.0, 0.0), (-0.5, 1.5)]
    fm = torch.zeros(T, 6, H, W, dtype=torch.float64)
    for i in range(T):
        fm[i, 0], fm[i, 1], fm[i, 3], fm[i, 4] = shifts[i]
        fm[i, 2], fm[i, 5] = logits[i]
    kernels = torch.randn(T, 3 * k * k, H, W, dtype=torch.float64)
    recon, _, _ = exposure_aware_fgdf(
        hr, fm, kernels, num_frames=T, kernel_size=k, scale=s, edge_mode="replicate"
    )
    expected = reference_fgdf(hr, shifts, logits, kernels, k, s)
    torch.testing.assert_close(recon, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_base_upsampler_is_the_output_of_a_zero_residual(mode: str) -> None:
    torch.manual_seed(0)
    model = FMANetPP(dataclasses.replace(TINY, base_upsampler=mode)).eval()
    head = model.restoration_network.res_conv2
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()
    x = torch.rand(1, 3, 3, 8, 10)
    with torch.no_grad():
        out = model(x)["output"]
    frames = x.transpose(1, 2).flatten(0, 1)  # [T, 3, 8, 10]
    want = torch.nn.functional.interpolate(frames, scale_factor=4.0, mode=mode, align_corners=False)
    other = "bicubic" if mode == "bilinear" else "bilinear"
    unwanted = torch.nn.functional.interpolate(frames, scale_factor=4.0, mode=other, align_corners=False)
    got = out.transpose(1, 2).flatten(0, 1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert (got - unwanted).abs().max() > 1e-3


def test_base_upsampler_defaults_to_bilinear_for_older_configs() -> None:
    old = {k: v for k, v in PRESETS["fmanetpp-small"].to_dict().items() if k != "base_upsampler"}
    assert FMANetPPConfig.from_dict(old).base_upsampler == "bilinear"  # files written before the field
    assert PRESETS["fmanetpp-small-v2"].base_upsampler == "bicubic"
    with pytest.raises(ConfigError, match="base_upsampler"):
        dataclasses.replace(TINY, base_upsampler="nearest")
