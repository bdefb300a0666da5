"""Shared building blocks of FMA-Net (CVPR 2024) and FMA-Net++ (arXiv 2512.04390).

Every block here works on *per-frame* tensors ``[N, C, H, W]`` (callers fold time into the batch,
``N = B*T``), because all FMA-Net convolutions except one are per-frame. Convolutions that the official
FMA-Net declares as ``Conv3d`` with a ``1 x k x k`` kernel are :class:`FrameConv3d`: the parameter keeps the
official 5-D shape ``[out, in, 1, k, k]`` (so official state dicts load unchanged) while the forward pass
runs a 2-D convolution on folded frames, which is cheaper on CPU and lets FMA-Net++ reuse the blocks.
``FrameConv3d`` also accepts 5-D ``[B, C, T, H, W]`` input.

Attribute names that reach ``state_dict`` keys (``body``, ``layer``, ``RDBs``, ``conv``, ``q_dwconv``,
``project_in``, ...) follow the official FMA-Net module tree and must not be renamed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from fmanetpp_cli.errors import ConfigError

LAYERNORM_TYPES = ("WithBias", "BiasFree")
LAYERNORM_EPS = 1e-5


class FrameConv3d(nn.Conv3d):
    """A ``Conv3d`` with a ``1 x k x k`` kernel, i.e. the same 2-D convolution applied to every frame.

    The parameter shapes are those of ``nn.Conv3d`` (``weight [out, in, 1, k, k]``), so FMA-Net's official
    weights load as they are. Zero padding of ``k // 2`` keeps the spatial size.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd spatial kernel size (1 or 3 in FMA-Net).
        bias: whether the convolution has a bias.
    """

    def __init__(
        self, *, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True
    ) -> None:
        if kernel_size % 2 != 1:
            raise ConfigError(f"FrameConv3d kernel_size must be odd, got {kernel_size}")
        pad = kernel_size // 2
        super().__init__(
            in_channels,
            out_channels,
            kernel_size=(1, kernel_size, kernel_size),
            padding=(0, pad, pad),
            bias=bias,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Convolve each frame.

        Shapes:
            x: ``[N, C_in, H, W]`` (frames folded into the batch) or ``[B, C_in, T, H, W]``.
            return: ``[N, C_out, H, W]`` or ``[B, C_out, T, H, W]`` (same layout as ``x``).
        """
        if x.ndim == 4:
            if self.kernel_size[1] == 1:
                return pointwise(x, self.weight, self.bias)
            return F.conv2d(x, self.weight.squeeze(2), self.bias, padding=self.padding[1:])
        return super().forward(x)


INFERENCE_CHUNK = 1
"""Frames per piece of the per-frame parts of FMA-Net++ when autograd is off (see :func:`per_frame`)."""


def per_frame(fn: Callable[..., Tensor], *tensors: Tensor | None, chunk: int = INFERENCE_CHUNK) -> Tensor:
    """Apply a per-frame function to tensors with frames folded into the batch, in pieces without autograd.

    Without autograd nothing needs the full-sequence intermediates, so only ``chunk`` frames of them exist
    at a time: the ``3 k_d^2``-channel kernels and the HR maps of the upsampler stay small, and the
    working set of a piece (one 64x64 frame of a 478-channel GDFN hidden map is 7.8 MB) stays in the
    CPU caches, which made the paper-size FMA-Net++ about twice as fast at 64x64 (docs/benchmarks.md).
    ``fn`` must treat batch elements independently (every convolution, attention and norm here does).
    ``None`` entries are passed through as they are.

    Shapes:
        tensors: each ``[B*T, ...]`` (the same ``B*T``) or None.
        return: ``[B*T, ...]``.
    """
    N = next(t.shape[0] for t in tensors if t is not None)
    if torch.is_grad_enabled() or chunk >= N:
        return fn(*tensors)
    pieces = [fn(*(None if t is None else t[i : i + chunk] for t in tensors)) for i in range(0, N, chunk)]
    return torch.cat(pieces, dim=0)


BAND_PIXELS = 4096
"""Pixels per row band of the banded inference forms of :class:`Attention` and :class:`FeedForward`.

About one 64x64 frame: a band's 478-channel GDFN hidden map (7.8 MB for the paper network) then stays in
the CPU caches. At 180x320, FMA-Net++'s GDFN step ran about twice as fast in bands of 8-16 rows as on
whole frames (docs/benchmarks.md)."""


def row_bands(height: int, width: int, pixels: int | None = None) -> list[tuple[int, int]]:
    """Split rows ``[0, height)`` into bands ``[r0, r1)`` of about ``pixels`` (default :data:`BAND_PIXELS`)
    pixels, at least one row each."""
    rows = max(1, (BAND_PIXELS if pixels is None else pixels) // max(1, width))
    return [(r, min(height, r + rows)) for r in range(0, height, rows)]


def pointwise(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """A ``1x1`` convolution as a matrix product over the pixels of channels-last memory.

    PyTorch 2.13 on the CPU sends a ``1x1`` ``conv2d`` on channels-last input to its slow reference
    kernel (``_slow_conv2d_forward``): 12.4 ms for ``[1, 90, 64, 64] -> 239`` channels against 3.6 ms for
    the same product through ``F.linear`` (1 thread). Other layouts use ``conv2d``.

    Shapes:
        x: ``[N, I, H, W]``; weight: ``[O, I]`` or ``[O, I, 1, 1]``; bias: ``[O]``.
        return: ``[N, O, H, W]`` (channels last when ``x`` is).
    """
    w = weight.reshape(weight.shape[0], -1)  # [O, I]
    pixels = x.permute(0, 2, 3, 1)  # [N, H, W, I]
    if pixels.stride(-1) == 1 and pixels[0].is_contiguous():
        return F.linear(pixels, w, bias).permute(0, 3, 1, 2)  # [N, O, H, W], channels last
    return F.conv2d(x, w[:, :, None, None], bias)


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------


class WithBiasLayerNorm(nn.Module):
    """LayerNorm over the last axis with weight and bias (biased variance, eps 1e-5 inside the root)."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: x ``[..., C]`` -> ``[..., C]``."""
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, LAYERNORM_EPS)


class BiasFreeLayerNorm(nn.Module):
    """Restormer's bias-free LayerNorm: ``x / sqrt(var + eps) * weight``; the mean is not subtracted."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: x ``[..., C]`` -> ``[..., C]``."""
        var = x.var(-1, keepdim=True, unbiased=False)
        return x / torch.sqrt(var + LAYERNORM_EPS) * self.weight


class LayerNorm(nn.Module):
    """Per-pixel LayerNorm over the channels of an image tensor (Restormer / FMA-Net).

    Args:
        dim: number of channels.
        layernorm_type: ``"WithBias"`` (weight and bias) or ``"BiasFree"`` (weight only).
    """

    def __init__(self, *, dim: int, layernorm_type: str = "WithBias") -> None:
        super().__init__()
        if layernorm_type not in LAYERNORM_TYPES:
            raise ConfigError(f"layernorm_type must be one of {LAYERNORM_TYPES}, got {layernorm_type!r}")
        self.body: nn.Module = (
            WithBiasLayerNorm(dim=dim) if layernorm_type == "WithBias" else BiasFreeLayerNorm(dim=dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        """Normalise every pixel's channel vector.

        Shapes:
            x: ``[N, C, H, W]``.
            return: ``[N, C, H, W]`` (a channels-last strided view; convolutions accept it directly).
        """
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [N, C, H, W]


# --------------------------------------------------------------------------------------------------
# Residual dense blocks
# --------------------------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """``3x3`` convolution + LeakyReLU(0.2) whose output is appended to its input (dense connection).

    Args:
        dim: input channels.
        growth_rate: channels added.
        bias: convolution bias.
    """

    def __init__(self, *, dim: int, growth_rate: int, bias: bool) -> None:
        super().__init__()
        self.conv = FrameConv3d(in_channels=dim, out_channels=growth_rate, kernel_size=3, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: x ``[N, C, H, W]`` -> ``[N, C + growth_rate, H, W]``."""
        return torch.cat((x, F.leaky_relu(self.conv(x), 0.2)), dim=1)  # [N, C+G, H, W]


class RDB(nn.Module):
    """Residual dense block: ``num_dense_layer`` dense layers, a ``1x1`` fusion conv and a skip.

    The fusion conv always has a bias (as in the official code, whatever ``bias`` says).

    Args:
        dim: channels in and out.
        growth_rate: channels each dense layer adds.
        num_dense_layer: number of dense layers.
        bias: bias of the dense-layer convolutions.
    """

    def __init__(self, *, dim: int, growth_rate: int, num_dense_layer: int, bias: bool) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                DenseLayer(dim=dim + growth_rate * i, growth_rate=growth_rate, bias=bias)
                for i in range(num_dense_layer)
            ]
        )
        self.conv = FrameConv3d(
            in_channels=dim + growth_rate * num_dense_layer, out_channels=dim, kernel_size=1, bias=True
        )

    def forward(self, x: Tensor) -> Tensor:
        """Dense layers, fusion, skip.

        Computed without re-concatenating the growing input of every dense layer: a convolution over a
        concatenation is the sum of convolutions over its parts, so each part (the block input, then
        each layer's output) is convolved once with the slices of *all* later layers' kernels stacked
        along the output channels. This gives wider convolutions (e.g. 90 -> 72 channels instead of four
        90+ -> 18 ones), which run markedly faster on CPU, and skips the copies; same result up to float
        rounding.

        Shapes:
            x: ``[N, dim, H, W]`` (or ``[B, dim, T, H, W]``, folded internally).
            return: same as ``x``.
        """
        if x.ndim == 5:
            T = x.shape[2]
            out = self.forward(rearrange(x, "b c t h w -> (b t) c h w"))
            return rearrange(out, "(b t) c h w -> b c t h w", t=T)  # [B, dim, T, H, W]
        convs: list[FrameConv3d] = [layer.conv for layer in self.layer]  # type: ignore[misc]
        L = len(convs)
        G = convs[0].out_channels if L else 0
        parts = [x]
        acc: Tensor | None = None  # pre-activations of the layers not yet computed, [N, (L-p)*G, H, W]
        lo = 0
        for p in range(L):
            hi = lo + parts[p].shape[1]
            weight = torch.cat([convs[i].weight[:, lo:hi, 0] for i in range(p, L)])  # [(L-p)*G, c_p, 3, 3]
            if acc is None:
                bias = None if convs[0].bias is None else torch.cat([c.bias for c in convs])  # type: ignore[misc]
                acc = F.conv2d(parts[p], weight, bias, padding=1)  # [N, L*G, H, W]
            else:
                acc = acc[:, G:] + F.conv2d(parts[p], weight, padding=1)  # drops the layer already done
            parts.append(F.leaky_relu(acc[:, :G], 0.2))  # [N, G, H, W]
            lo = hi
        return self.conv(torch.cat(parts, dim=1)) + x


class RRDB(nn.Module):
    """A chain of ``num_rdb`` RDBs whose outputs are all fused by ``1x1`` then ``3x3`` convs, plus a skip.

    The official block concatenates all ``num_rdb`` outputs (``num_rdb * dim`` channels: 746 MB at
    180x320x3 frames for the full FMA-Net) before the ``1x1`` conv. A ``1x1`` conv over a concatenation is
    the sum of ``1x1`` convs over its parts, so here each RDB output is folded into a running sum as soon
    as it exists and only one ``dim``-channel accumulator is kept.

    Args:
        dim: channels in and out.
        num_rdb: number of RDBs.
        growth_rate: RDB growth rate.
        num_dense_layer: dense layers per RDB.
        bias: bias of every conv except the RDB fusion convs (which always have one).
    """

    def __init__(self, *, dim: int, num_rdb: int, growth_rate: int, num_dense_layer: int, bias: bool) -> None:
        super().__init__()
        self.RDBs = nn.ModuleList(
            [
                RDB(dim=dim, growth_rate=growth_rate, num_dense_layer=num_dense_layer, bias=bias)
                for _ in range(num_rdb)
            ]
        )
        self.conv = nn.Sequential(
            FrameConv3d(in_channels=dim * num_rdb, out_channels=dim, kernel_size=1, bias=bias),
            FrameConv3d(in_channels=dim, out_channels=dim, kernel_size=3, bias=bias),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: x ``[N, dim, H, W]`` -> ``[N, dim, H, W]`` (per-frame; 5-D input is folded internally)."""
        if x.ndim == 5:
            T = x.shape[2]
            out = self.forward(rearrange(x, "b c t h w -> (b t) c h w"))
            return rearrange(out, "(b t) c h w -> b c t h w", t=T)  # [B, dim, T, H, W]
        fuse: FrameConv3d = self.conv[0]  # type: ignore[assignment]
        dim = x.shape[1]
        weights = fuse.weight.flatten(1).split(dim, dim=1)  # num_rdb x [dim, dim]
        acc: Tensor | None = None
        h = x
        for rdb, w in zip(self.RDBs, weights, strict=True):
            h = rdb(h)
            part = pointwise(h, w)  # [N, dim, H, W]
            acc = part if acc is None else acc.add_(part)
        assert acc is not None  # num_rdb >= 1 (checked by the configs)
        if fuse.bias is not None:
            acc = acc + fuse.bias[:, None, None]
        return self.conv[1](acc) + x


# --------------------------------------------------------------------------------------------------
# Transformer parts (Restormer-style)
# --------------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head transposed (channel) attention (Restormer MDTA), as FMA-Net uses it.

    Keys and values come from ``x``; queries come from ``query`` when given (cross-attention, as in
    FMA-Net's FRMA blocks where the query is the centre-frame feature or the degradation kernels) and
    from ``x`` otherwise (self-attention). Attention maps are ``[C/heads, C/heads]`` per head, so the cost
    is linear in the number of pixels.

    Args:
        dim: channels (divisible by ``num_heads``).
        num_heads: attention heads; each head has a learnable temperature.
        bias: bias of the projections.
    """

    def __init__(self, *, dim: int, num_heads: int, bias: bool) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"Attention dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)
        self.q_dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=bias)
        self.kv_conv = nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias)
        self.kv_dwconv = nn.Conv2d(dim * 2, dim * 2, kernel_size=3, padding=1, groups=dim * 2, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def _heads(self, t: Tensor) -> Tensor:
        """``[N, C, H, W]`` -> ``[N, head, C/head, H*W]``; a view (no copy) of channels-last memory."""
        N, C, H, W = t.shape
        t = t.permute(0, 2, 3, 1).reshape(N, H * W, self.num_heads, C // self.num_heads)  # [N, H*W, head, c]
        return t.permute(0, 2, 3, 1)  # [N, head, c, H*W]

    def forward(self, x: Tensor, query: Tensor | None = None) -> Tensor:
        """Attend.

        Shapes:
            x: ``[N, C, H, W]`` (keys and values).
            query: ``[N, C, H, W]`` or None (then ``x``).
            return: ``[N, C, H, W]``.
        """
        N, C, H, W = x.shape
        q_in = x if query is None else query
        q = self._heads(self.q_dwconv(pointwise(q_in, self.q.weight, self.q.bias)))  # [N, head, c, H*W]
        kv = self.kv_dwconv(pointwise(x, self.kv_conv.weight, self.kv_conv.bias))
        k, v = (self._heads(t) for t in kv.chunk(2, dim=1))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature  # [N, head, c, c]
        # (attn @ v) computed transposed, so that the result lands in channels-last order for the 1x1 conv
        out = v.transpose(-2, -1) @ attn.softmax(dim=-1).transpose(-2, -1)  # [N, head, H*W, c]
        out = out.transpose(1, 2).reshape(N, H, W, C)  # [N, H, W, C]
        proj = self.project_out
        return pointwise(out.permute(0, 3, 1, 2), proj.weight, proj.bias)  # [N, C, H, W]

    def residual(self, x: Tensor, norm: nn.Module, query: Tensor | None = None) -> Tensor:
        """``x + self(norm(x), query)``; without autograd in row bands, in two passes.

        Attention over a whole frame needs every pixel, but only through sums over pixels: the first
        pass accumulates, band by band (one row of halo for the depthwise convs), the per-head Gram
        matrix ``q k^T`` and the squared norms of ``q`` and ``k`` (so ``normalize(q) normalize(k)^T`` is
        ``q k^T / (|q| |k|^T)``) and keeps ``v``; the second applies the softmax-ed map to ``v`` and the
        output projection band by band. Same maths as :meth:`forward`, up to float rounding; the large
        per-pixel intermediates exist one band at a time.

        Shapes:
            x: ``[N, C, H, W]``; query: ``[N, C, H, W]`` or None (self-attention).
            return: ``[N, C, H, W]``.
        """
        if torch.is_grad_enabled():
            return x + self(norm(x), query)
        N, C, H, W = x.shape
        heads, c = self.num_heads, C // self.num_heads
        bands = row_bands(H, W)
        gram = x.new_zeros(N, heads, c, c)
        q_sq = x.new_zeros(N, heads, c, 1)
        k_sq = x.new_zeros(N, heads, 1, c)
        v_all = x.new_empty(N, H, W, C)  # values, channels last
        for r0, r1 in bands:
            lo, hi = max(0, r0 - 1), min(H, r1 + 1)
            inner = slice(r0 - lo, r1 - lo)
            xn = norm(x[:, :, lo:hi])
            q_in = xn if query is None else query[:, :, lo:hi]
            q = self.q_dwconv(pointwise(q_in, self.q.weight, self.q.bias))[:, :, inner]
            kv = self.kv_dwconv(pointwise(xn, self.kv_conv.weight, self.kv_conv.bias))
            k, v = kv[:, :, inner].chunk(2, dim=1)
            qh, kh = self._heads(q), self._heads(k)  # [N, head, c, P]
            gram += qh @ kh.transpose(-2, -1)
            q_sq += qh.square().sum(-1, keepdim=True)
            k_sq += kh.square().sum(-1).unsqueeze(-2)
            v_all[:, r0:r1] = v.permute(0, 2, 3, 1)
        eps = 1e-12  # F.normalize's floor on the norms
        attn = gram / (q_sq.sqrt().clamp_min(eps) * k_sq.sqrt().clamp_min(eps)) * self.temperature
        attn_t = attn.softmax(dim=-1).transpose(-2, -1)  # [N, head, c, c]
        out = torch.empty_like(x)
        for r0, r1 in bands:
            P = (r1 - r0) * W
            vh = v_all[:, r0:r1].reshape(N, P, heads, c).transpose(1, 2)  # [N, head, P, c]
            o = (vh @ attn_t).transpose(1, 2).reshape(N, r1 - r0, W, C)  # [N, rows, W, C]
            proj = self.project_out
            out[:, :, r0:r1] = x[:, :, r0:r1] + pointwise(o.permute(0, 3, 1, 2), proj.weight, proj.bias)
        return out


class FeedForward(nn.Module):
    """Gated-Dconv feed-forward (Restormer GDFN): ``1x1`` -> depthwise ``3x3`` -> GELU gate -> ``1x1``.

    Args:
        dim: channels in and out.
        ffn_expansion_factor: hidden width is ``int(dim * ffn_expansion_factor)``.
        bias: convolution bias.
    """

    def __init__(self, *, dim: int, ffn_expansion_factor: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(
            hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias
        )
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: x ``[N, C, H, W]`` -> ``[N, C, H, W]``."""
        h = self.dwconv(pointwise(x, self.project_in.weight, self.project_in.bias))
        gate, value = h.chunk(2, dim=1)  # 2 x [N, hidden, H, W]
        return pointwise(F.gelu(gate) * value, self.project_out.weight, self.project_out.bias)

    def residual(self, x: Tensor, norm: nn.Module) -> Tensor:
        """``x + self(norm(x))``; without autograd in row bands (one row of halo for the depthwise conv).

        Shapes:
            x: ``[N, C, H, W]``.
            return: ``[N, C, H, W]``.
        """
        if torch.is_grad_enabled():
            return x + self(norm(x))
        H, W = x.shape[2:]
        out = torch.empty_like(x)
        for r0, r1 in row_bands(H, W):
            lo, hi = max(0, r0 - 1), min(H, r1 + 1)
            out[:, :, r0:r1] = x[:, :, r0:r1] + self._split(norm(x[:, :, lo:hi]))[:, :, r0 - lo : r1 - lo]
        return out

    def _split(self, x: Tensor) -> Tensor:
        """:meth:`forward` with the gate and value halves convolved separately.

        Each half is then a dense tensor, so the GELU and the product run on contiguous memory instead
        of channel slices of one channels-last tensor (about 30 % faster on a 64x64 band, 1 thread).

        Shapes:
            x: ``[N, C, H, W]``.
            return: ``[N, C, H, W]``.
        """
        hidden = self.project_out.in_channels
        w_in, b_in = self.project_in.weight, self.project_in.bias
        w_dw, b_dw = self.dwconv.weight, self.dwconv.bias

        def half(part: slice) -> Tensor:
            h = pointwise(x, w_in[part], None if b_in is None else b_in[part])  # [N, hidden, H, W]
            return F.conv2d(h, w_dw[part], None if b_dw is None else b_dw[part], padding=1, groups=hidden)

        gate, value = half(slice(0, hidden)), half(slice(hidden, 2 * hidden))
        return pointwise(F.gelu(gate).mul_(value), self.project_out.weight, self.project_out.bias)


# --------------------------------------------------------------------------------------------------
# Upsampling
# --------------------------------------------------------------------------------------------------


class PixelShuffleBlock(nn.Module):
    """x4 feature upsampler: (conv ``3x3`` to 4C, LeakyReLU, shuffle x2) twice, then conv + LeakyReLU.

    Args:
        channels: channels in and out.
        bias: convolution bias.
    """

    def __init__(self, *, channels: int, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels * 4, kernel_size=3, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(channels, channels * 4, kernel_size=3, padding=1, bias=bias)
        self.conv3 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: x ``[N, C, H, W]`` -> ``[N, C, 4H, 4W]``."""
        x = F.pixel_shuffle(F.leaky_relu(self.conv1(x), 0.2), 2)  # [N, C, 2H, 2W]
        x = F.pixel_shuffle(F.leaky_relu(self.conv2(x), 0.2), 2)  # [N, C, 4H, 4W]
        return F.leaky_relu(self.conv3(x), 0.2)


# --------------------------------------------------------------------------------------------------
# Frames folded into the batch: memory layout, temporal convolution, kernel composition
# --------------------------------------------------------------------------------------------------

# Run convolutions on channels-last (NHWC) tensors: oneDNN convolves them without reordering, and its NHWC
# kernels are markedly faster on CPU for FMA-Net's narrow (18- and 27-channel) convolutions.
CHANNELS_LAST = True


def to_channels_last(x: Tensor) -> Tensor:
    """``x`` in channels-last memory order (same values and shape)."""
    return x.contiguous(memory_format=torch.channels_last) if CHANNELS_LAST else x


def temporal_conv(
    frames: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int, int], T: int
) -> Tensor:
    """Apply a full ``kt x k x k`` 3-D kernel (zero padding in time) to frames folded into the batch.

    Output frame ``t`` sums the 2-D convolutions of input frames ``t + d - pt`` with the kernel's temporal
    slices ``d``: the same as ``F.conv3d`` on ``[B, C, T, H, W]``, without moving the input to that layout,
    without PyTorch's slow CPU ``conv3d`` kernel (which it picks for some shapes), and with no work spent
    on the zero padding in time (each slice sees only the input frames whose output frame exists).

    Args:
        frames: input frames folded into the batch.
        weight: the 3-D kernel.
        bias: optional bias.
        padding: ``(pt, ph, pw)`` zero padding.
        T: frames per window.

    Shapes:
        frames: ``[B*T, I, H, W]``; weight: ``[O, I, kt, kh, kw]``.
        return: ``[B*T, O, H', W']``.
    """
    pt = padding[0]
    x = frames.unflatten(0, (-1, T))  # [B, T, I, H, W]
    B = x.shape[0]
    out = F.conv2d(frames, weight[:, :, pt], bias, padding=padding[1:])  # [B*T, O, H, W]
    out = out.unflatten(0, (B, T))  # [B, T, O, H, W]
    for d in range(weight.shape[2]):
        shift = d - pt  # output frame t reads input frame t + shift
        lo, hi = max(0, -shift), min(T, T - shift)  # output frames that have that input frame
        if shift == 0 or lo >= hi:
            continue
        src = x[:, lo + shift : hi + shift].flatten(0, 1)  # [B*(hi-lo), I, H, W]
        out[:, lo:hi] += F.conv2d(src, weight[:, :, d], padding=padding[1:]).unflatten(0, (B, hi - lo))
    return to_channels_last(out.flatten(0, 1))  # [B*T, O, H, W]


def compose_kernels(outer: Tensor, inner: Tensor) -> Tensor:
    """The kernel of ``outer`` (a ``kt x 3 x 3`` Conv3d) applied after ``inner`` (a per-frame ``3 x 3`` conv).

    Two linear convolutions in a row are one convolution whose kernel is the (full) convolution of the
    two kernels, contracted over the middle channels; computed in float64 and cast back.

    Shapes:
        outer: ``[O, M, kt, 3, 3]``; inner: ``[M, I, 3, 3]``.
        return: ``[O, I, kt, 5, 5]``.
    """
    o64, i64 = outer.double(), inner.double()
    O, _, kt, ka, kb = outer.shape
    fused = o64.new_zeros(O, inner.shape[1], kt, ka + inner.shape[2] - 1, kb + inner.shape[3] - 1)
    for a in range(ka):
        for b in range(kb):
            fused[:, :, :, a : a + inner.shape[2], b : b + inner.shape[3]] += torch.einsum(
                "omt,micd->oitcd", o64[:, :, :, a, b], i64
            )
    return fused.to(outer.dtype)


def time_to_channels(x: Tensor, T: int) -> Tensor:
    """Fold frames into channels, channel ``c*T + t`` (the official order), in one copy.

    Equals ``rearrange(x, "(b t) c h w -> b (c t) h w")``, written straight into channels-last memory.

    Shapes:
        x: ``[B*T, C, H, W]``.
        return: ``[B, C*T, H, W]``.
    """
    BT, C, H, W = x.shape
    if not CHANNELS_LAST:
        return rearrange(x, "(b t) c h w -> b (c t) h w", t=T)
    out = x.new_empty(BT // T, H, W, C, T)
    out.copy_(x.view(BT // T, T, C, H, W).permute(0, 3, 4, 2, 1))
    return out.view(BT // T, H, W, C * T).permute(0, 3, 1, 2)  # [B, C*T, H, W]


def repeat_frames(x: Tensor, T: int) -> Tensor:
    """Repeat a per-window tensor for each of its T frames: ``[B, C, H, W]`` -> ``[B*T, C, H, W]``."""
    return to_channels_last(x.unsqueeze(1).expand(-1, T, -1, -1, -1).flatten(0, 1))  # [B*T, C, H, W]
