"""Shared blocks (models/layers.py) and warping (models/warp.py): invariants and direct formulations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from fmanetpp_cli.errors import ConfigError, InputShapeError
from fmanetpp_cli.models.layers import (
    RRDB,
    Attention,
    FeedForward,
    FrameConv3d,
    LayerNorm,
    PixelShuffleBlock,
)
from fmanetpp_cli.models.warp import backward_warp, flow_mask_warp, multi_flow_warp, upsample_flow_mask


def test_frame_conv_matches_conv3d_on_both_layouts() -> None:
    torch.manual_seed(0)
    conv = FrameConv3d(in_channels=4, out_channels=5, kernel_size=3, bias=True)
    assert conv.weight.shape == (5, 4, 1, 3, 3)
    x = torch.randn(2, 4, 3, 6, 7)
    expect = F.conv3d(x, conv.weight, conv.bias, padding=(0, 1, 1))
    torch.testing.assert_close(conv(x), expect)
    folded = conv(rearrange(x, "b c t h w -> (b t) c h w"))
    torch.testing.assert_close(
        rearrange(folded, "(b t) c h w -> b c t h w", t=3), expect, rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ConfigError):
        FrameConv3d(in_channels=1, out_channels=1, kernel_size=2)


@pytest.mark.parametrize("kind", ["WithBias", "BiasFree"])
def test_layernorm_per_pixel_over_channels(kind: str) -> None:
    torch.manual_seed(1)
    norm = LayerNorm(dim=6, layernorm_type=kind)
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 6, 4, 5) * 3 + 1
    mu = x.mean(1, keepdim=True)
    var = ((x - mu) ** 2).mean(1, keepdim=True)  # biased variance
    w = norm.body.weight.view(1, 6, 1, 1)
    if kind == "WithBias":
        expect = (x - mu) / torch.sqrt(var + 1e-5) * w + norm.body.bias.view(1, 6, 1, 1)
    else:
        expect = x / torch.sqrt(var + 1e-5) * w
    torch.testing.assert_close(norm(x), expect, rtol=1e-5, atol=1e-5)
    assert sorted(k for k, _ in norm.named_parameters()) == (
        ["body.bias", "body.weight"] if kind == "WithBias" else ["body.weight"]
    )
    with pytest.raises(ConfigError):
        LayerNorm(dim=6, layernorm_type="Other")


@pytest.mark.parametrize("bias", [True, False])
def test_rdb_stacked_contributions_equal_dense_concatenation(bias: bool) -> None:
    from fmanetpp_cli.models.layers import RDB

    torch.manual_seed(5)
    rdb = RDB(dim=10, growth_rate=4, num_dense_layer=3, bias=bias)
    x = torch.randn(3, 10, 6, 7)
    direct = rdb.conv(rdb.layer(x)) + x  # the official formulation: dense layers concatenate their input
    torch.testing.assert_close(rdb(x), direct, rtol=1e-5, atol=1e-5)
    x5 = rearrange(x, "(b t) c h w -> b c t h w", t=3)
    torch.testing.assert_close(
        rdb(x5), rearrange(direct, "(b t) c h w -> b c t h w", t=3), rtol=1e-5, atol=1e-5
    )
    assert [tuple(layer.conv.weight.shape) for layer in rdb.layer] == [
        (4, 10, 1, 3, 3),
        (4, 14, 1, 3, 3),
        (4, 18, 1, 3, 3),
    ]
    assert (rdb.layer[0].conv.bias is not None) == bias and rdb.conv.bias is not None


def test_rrdb_running_fusion_equals_concatenation() -> None:
    torch.manual_seed(2)
    block = RRDB(dim=8, num_rdb=3, growth_rate=4, num_dense_layer=2, bias=True)
    x = torch.randn(3, 8, 5, 6)
    # direct formulation: concatenate every RDB output, then the 1x1 and 3x3 convs
    outs, h = [], x
    for rdb in block.RDBs:
        h = rdb(h)
        outs.append(h)
    expect = block.conv[1](block.conv[0](torch.cat(outs, dim=1))) + x
    torch.testing.assert_close(block(x), expect, rtol=1e-5, atol=1e-5)
    x5 = rearrange(x, "(b t) c h w -> b c t h w", t=3)
    torch.testing.assert_close(
        block(x5), rearrange(expect, "(b t) c h w -> b c t h w", t=3), rtol=1e-5, atol=1e-5
    )
    keys = dict(block.state_dict())
    assert keys["RDBs.0.layer.1.conv.weight"].shape == (4, 12, 1, 3, 3)
    assert keys["RDBs.2.conv.weight"].shape == (8, 16, 1, 1, 1) and "RDBs.2.conv.bias" in keys
    assert keys["conv.0.weight"].shape == (8, 24, 1, 1, 1) and keys["conv.1.weight"].shape == (8, 8, 1, 3, 3)


def test_attention_self_and_cross() -> None:
    torch.manual_seed(3)
    attn = Attention(dim=8, num_heads=2, bias=False)
    x, q = torch.randn(2, 8, 5, 4), torch.randn(2, 8, 5, 4)
    torch.testing.assert_close(attn(x), attn(x, x))
    cross = attn(x, q)
    assert cross.shape == x.shape and not torch.allclose(cross, attn(x))
    # a query only changes which value channels each output channel mixes: permuting pixels of both
    # inputs permutes the output the same way (attention is over channels, not positions)
    perm = torch.randperm(20)

    def shuffle(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(2)[:, :, perm].view_as(t)

    attn_1x1 = Attention(dim=8, num_heads=2, bias=False)
    with torch.no_grad():
        for conv in (attn_1x1.q_dwconv, attn_1x1.kv_dwconv):
            conv.weight.zero_()
            conv.weight[:, :, 1, 1] = 1.0  # identity depthwise conv so only channel mixing remains
    torch.testing.assert_close(
        attn_1x1(shuffle(x), shuffle(q)), shuffle(attn_1x1(x, q)), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ConfigError):
        Attention(dim=9, num_heads=2, bias=False)


def test_feedforward_and_pixel_shuffle_shapes() -> None:
    ffn = FeedForward(dim=90, ffn_expansion_factor=2.66, bias=False)
    assert ffn.project_in.weight.shape == (478, 90, 1, 1)
    assert ffn(torch.randn(1, 90, 3, 4)).shape == (1, 90, 3, 4)
    up = PixelShuffleBlock(channels=6, bias=False)
    assert up(torch.randn(2, 6, 3, 5)).shape == (2, 6, 12, 20)


def test_zero_flow_warp_is_identity() -> None:
    x = torch.rand(2, 3, 5, 7)
    torch.testing.assert_close(backward_warp(x, torch.zeros(2, 2, 5, 7)), x)


def test_integer_flow_shifts_with_zero_padding() -> None:
    x = torch.rand(1, 2, 6, 8)
    flow = torch.zeros(1, 2, 6, 8)
    flow[:, 0] = 2.0  # out(p) = in(p + 2 px to the right)
    flow[:, 1] = -1.0  # and 1 px up
    out = backward_warp(x, flow)
    torch.testing.assert_close(out[:, :, 1:, :-2], x[:, :, :-1, 2:], rtol=1e-5, atol=1e-5)
    assert out[:, :, 0].abs().max() < 1e-6 and out[:, :, :, -2:].abs().max() < 1e-6
    with pytest.raises(InputShapeError):
        backward_warp(torch.rand(1, 1, 1, 5), torch.zeros(1, 2, 1, 5))
    with pytest.raises(InputShapeError):
        backward_warp(x, torch.zeros(1, 2, 6, 7))


def test_flow_mask_warp_scales_flow_and_mask() -> None:
    fm = torch.zeros(1, 3, 4, 5)
    fm[:, 0] = 1.0  # 1 LR px = 4 HR px to the right
    fm[:, 2] = 20.0  # mask ~ 1
    flow, mask = upsample_flow_mask(fm, scale=4)
    assert flow.shape == (1, 2, 16, 20) and mask.shape == (1, 1, 16, 20)
    torch.testing.assert_close(flow[:, 0], torch.full((1, 16, 20), 4.0))
    hr = torch.rand(1, 3, 16, 20)
    warped, cover = flow_mask_warp(hr, fm, scale=4, with_coverage=True)
    assert cover is not None
    torch.testing.assert_close(warped[..., :-4], hr[..., 4:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cover[..., :-4], torch.ones_like(cover[..., :-4]), rtol=1e-5, atol=1e-5)
    assert cover[..., -3:].abs().max() == 0
    fm[:, 2] = 0.0  # mask = sigmoid(0) = 0.5 multiplies the result
    warped, none = flow_mask_warp(hr, fm, scale=4)
    assert none is None
    torch.testing.assert_close(warped[..., :-4], 0.5 * hr[..., 4:], rtol=1e-5, atol=1e-5)


def test_multi_flow_warp_uses_one_flow_per_group() -> None:
    feats = torch.rand(2, 6, 5, 6)  # 3 groups of 2 channels
    fm = torch.zeros(2, 9, 5, 6)
    fm[:, 2::3] = 30.0  # masks ~ 1
    fm[:, 3] = 1.0  # group 1 looks one pixel to the right
    out = multi_flow_warp(feats, fm, num_flow=3)
    torch.testing.assert_close(out[:, 0:2], feats[:, 0:2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 2:4, :, :-1], feats[:, 2:4, :, 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[:, 4:6], feats[:, 4:6], rtol=1e-5, atol=1e-5)
    with pytest.raises(InputShapeError):
        multi_flow_warp(feats, fm[:, :6], num_flow=3)
