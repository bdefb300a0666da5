"""FMA-Net++'s fast inference path against a frozen, direct copy of its maths (issue 14).

The reference below is the network as it computed before the speed work, written the plain way: official
RDB / RRDB concatenations, Restormer's attention and GDFN on whole tensors, the K^D head and the kernel
encoder as two convolutions, every frame of the sequence at once. It reads the module's parameters only,
so any reformulation of the model's forward (fusions, per-frame pieces, folded norms) is checked against
it on seeded random weights and on the bundled weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file
from torch import Tensor

from fmanetpp_cli.checkpoints import load_model
from fmanetpp_cli.models import layers
from fmanetpp_cli.models.fmanetpp import PRESETS, FMANetPP

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def _conv(m: torch.nn.Module, x: Tensor) -> Tensor:
    w = m.weight if m.weight.ndim == 4 else m.weight[:, :, 0]  # FrameConv3d keeps a 5-D weight
    groups = getattr(m, "groups", 1)
    return F.conv2d(x, w, m.bias, padding=w.shape[-1] // 2, groups=groups)


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2)


def ref_rdb(rdb: torch.nn.Module, x: Tensor) -> Tensor:
    h = x
    for layer in rdb.layer:
        h = torch.cat((h, _lrelu(_conv(layer.conv, h))), dim=1)
    return _conv(rdb.conv, h) + x


def ref_rrdb(rrdb: torch.nn.Module, x: Tensor) -> Tensor:
    outs, h = [], x
    for rdb in rrdb.RDBs:
        h = ref_rdb(rdb, h)
        outs.append(h)
    return _conv(rrdb.conv[1], _conv(rrdb.conv[0], torch.cat(outs, dim=1))) + x


def ref_extractor(seq: torch.nn.Sequential, x: Tensor) -> Tensor:
    return ref_rrdb(seq[2], _lrelu(_conv(seq[0], x)))


def ref_layernorm(norm: torch.nn.Module, x: Tensor) -> Tensor:
    body = norm.body
    t = x.permute(0, 2, 3, 1)
    var = t.var(-1, keepdim=True, unbiased=False)
    if hasattr(body, "bias"):
        t = (t - t.mean(-1, keepdim=True)) / torch.sqrt(var + 1e-5) * body.weight + body.bias
    else:
        t = t / torch.sqrt(var + 1e-5) * body.weight
    return t.permute(0, 3, 1, 2)


def ref_attention(att: torch.nn.Module, x: Tensor, query: Tensor | None) -> Tensor:
    _, _, H, W = x.shape
    heads = att.num_heads
    q = _conv(att.q_dwconv, _conv(att.q, x if query is None else query))
    k, v = _conv(att.kv_dwconv, _conv(att.kv_conv, x)).chunk(2, dim=1)
    q, k, v = (rearrange(t, "b (head c) h w -> b head c (h w)", head=heads) for t in (q, k, v))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    attn = ((q @ k.transpose(-2, -1)) * att.temperature).softmax(dim=-1)
    out = rearrange(attn @ v, "b head c (h w) -> b (head c) h w", h=H, w=W)
    return _conv(att.project_out, out)


def ref_ffn(ffn: torch.nn.Module, x: Tensor) -> Tensor:
    gate, value = _conv(ffn.dwconv, _conv(ffn.project_in, x)).chunk(2, dim=1)
    return _conv(ffn.project_out, F.gelu(gate) * value)


def ref_attention_layer(layer: torch.nn.Module, x: Tensor, query: Tensor | None) -> Tensor:
    x = x + ref_attention(layer.attn, ref_layernorm(layer.norm1, x), None)
    x = x + ref_ffn(layer.ffn1, ref_layernorm(layer.norm2, x))
    if layer.degradation_aware:
        x = x + ref_attention(layer.da_attn, ref_layernorm(layer.norm3, x), query)
        x = x + ref_ffn(layer.ffn2, ref_layernorm(layer.norm4, x))
    return x


def ref_warp(x: Tensor, flow_mask: Tensor, n: int) -> Tensor:
    """Backward warp of ``n`` channel groups, each by its (dx, dy, logit) triplet."""
    N, C, H, W = x.shape
    out = []
    for g, feat in enumerate(x.chunk(n, dim=1)):
        dx, dy, logit = flow_mask[:, 3 * g], flow_mask[:, 3 * g + 1], flow_mask[:, 3 * g + 2]
        gx = torch.linspace(-1, 1, W).view(1, 1, W) + dx * 2 / (W - 1)
        gy = torch.linspace(-1, 1, H).view(1, H, 1) + dy * 2 / (H - 1)
        grid = torch.stack((gx.expand(N, H, W), gy.expand(N, H, W)), dim=-1)
        warped = F.grid_sample(feat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out.append(warped * torch.sigmoid(logit)[:, None])
    return torch.cat(out, dim=1)


def ref_block(block: torch.nn.Module, feats: Tensor, fm: Tensor, T: int, u: Tensor | None, kf: Tensor | None):  # type: ignore[no-untyped-def]
    if block.rdb is not None:
        feats = ref_rdb(block.rdb, feats)
    n = block.num_flow
    f = feats.unflatten(0, (-1, T))
    m = fm.unflatten(0, (-1, T))
    edge = f if block.edge_mode == "replicate" else torch.zeros_like(f)
    prev, nxt = [], []
    for t in range(T):
        prev.append(edge[:, t] if t == 0 else ref_warp(f[:, t - 1], m[:, t, : 3 * n], n))
        nxt.append(edge[:, t] if t == T - 1 else ref_warp(f[:, t + 1], m[:, t, 3 * n :], n))
    from_prev, from_next = torch.stack(prev, 1).flatten(0, 1), torch.stack(nxt, 1).flatten(0, 1)
    fused = _conv(block.conv_fuse, torch.cat((feats, from_prev, from_next), dim=1))
    if block.conv_f is not None:
        c = block.conv_f
        fm = fm + _conv(c[2], _lrelu(_conv(c[0], torch.cat((fm, fused), dim=1))))
    query = None if block.conv_kd is None else _conv(block.conv_kd, kf)
    out = fused
    for layer in block.attn_layers:
        out = ref_attention_layer(layer, out, query)
    if block.etm is not None:
        alpha, beta = block.etm.mlp(u).chunk(2, dim=1)
        out = out * (1 + alpha[:, :, None, None]) + beta[:, :, None, None]
    return out, fm


def reference_forward(model: FMANetPP, x: Tensor) -> Tensor:
    """``model(x)["output"]`` computed directly. Shapes: x ``[B, 3, T, H, W]`` -> ``[B, 3, T, 4H, 4W]``."""
    T = x.shape[2]
    frames = rearrange(x, "b c t h w -> (b t) c h w")
    u = None if model.ete is None else model.ete(frames)
    net_d, net_r = model.degradation_learning_network, model.restoration_network
    feats = ref_extractor(net_d.feature_extractor, frames)
    fm = net_d.initial_flow_mask(feats, frames, T)
    for block in net_d.hrbp_blocks:
        feats, fm = ref_block(block, feats, fm, T, u, None)
    d = net_d.d_conv
    kernels = _conv(d[2], _lrelu(_conv(d[0], feats)))
    e = net_r.kernel_encoder
    kf = _conv(e[2], _lrelu(_conv(e[0], kernels)))
    r = ref_extractor(net_r.feature_extractor, torch.cat((frames, feats), dim=1))
    for block in net_r.hrbp_blocks:
        r, fm = ref_block(block, r, fm, T, u, kf)
    res = _lrelu(_conv(net_r.res_conv1, r))
    if model.config.upsampler == "pixelshuffle":
        up = net_r.upsample
        res = F.pixel_shuffle(_lrelu(_conv(up.conv1, res)), 2)
        res = F.pixel_shuffle(_lrelu(_conv(up.conv2, res)), 2)
        res = _conv(net_r.res_conv2, _lrelu(_conv(up.conv3, res)))
    else:
        res = F.pixel_shuffle(_conv(net_r.res_conv2[0], res), 4)
    base = F.interpolate(frames, scale_factor=4.0, mode=model.config.base_upsampler, align_corners=False)
    return rearrange(res + base, "(b t) c h w -> b c t h w", t=T)


def _clip(T: int, H: int, W: int, seed: int = 1) -> Tensor:
    return torch.rand(1, 3, T, H, W, generator=torch.Generator().manual_seed(seed))


def _check(model: FMANetPP, x: Tensor, tol: float) -> None:
    with torch.no_grad():
        ref = reference_forward(model, x)
        fast = model(x)["output"]
    assert fast.shape == ref.shape
    torch.testing.assert_close(fast, ref, rtol=tol, atol=tol)


@pytest.fixture(params=[None, 40], ids=["whole-frame-bands", "bands-of-2-rows"])
def band_pixels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run each case with the default bands (one band at these sizes) and with bands of 2-3 rows."""
    if request.param is not None:
        monkeypatch.setattr(layers, "BAND_PIXELS", request.param)


@pytest.mark.usefixtures("band_pixels")
@pytest.mark.parametrize("preset", ["fmanetpp-small", "fmanetpp-small-v2", "fmanetpp-tiny"])
def test_fast_inference_equals_reference_maths_small_presets(preset: str) -> None:
    torch.manual_seed(3)
    model = FMANetPP(PRESETS[preset]).eval()
    _check(model, _clip(5, 12, 17), tol=1e-4)


@pytest.mark.usefixtures("band_pixels")
def test_fast_inference_equals_reference_maths_paper_structure() -> None:
    # The paper network's every part (RRDB depth, 9 flows, k_d = 20, pixel-shuffle upsampler, bilinear
    # base) at reduced width (C = 18 keeps n = 9 and the 6 heads) on a tiny input.
    config = dataclasses.replace(PRESETS["fmanetpp-paper"], dim=18, num_rdb=2, ete_width=8, etm_hidden=16)
    torch.manual_seed(4)
    model = FMANetPP(config).eval()
    _check(model, _clip(4, 14, 15), tol=1e-4)


@pytest.mark.slow
def test_fast_inference_equals_reference_maths_full_paper_size() -> None:
    torch.manual_seed(5)
    model = FMANetPP(PRESETS["fmanetpp-paper"]).eval()
    _check(model, _clip(3, 12, 16), tol=2e-4)


@pytest.mark.parametrize("name", sorted(p.name for p in WEIGHTS.glob("fmanetpp-*.safetensors")))
def test_bundled_weights_give_the_reference_output(name: str) -> None:
    model = load_model(WEIGHTS / name)  # strict: the file's key names are the model's
    assert isinstance(model, FMANetPP)
    assert set(model.state_dict()) == set(load_file(str(WEIGHTS / name)))
    _check(model, _clip(5, 16, 20), tol=1e-4)
