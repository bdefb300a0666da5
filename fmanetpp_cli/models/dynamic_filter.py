"""Flow-guided dynamic filtering (FGDF) of FMA-Net: per-pixel kernels for down- and upsampling.

A dynamic filter gives every output pixel its own kernel over a ``T x k x k`` neighbourhood spanning all
frames of the (already flow-warped) window. The straightforward formulation unfolds the input into one
``T*k*k`` vector per output pixel and multiplies it with the broadcast kernels; for FMA-Net's x4
upsampling at a 180x320 input that product alone is ``3 * 16 * 75 * 57600`` floats (0.83 GB), and the
unfolded input of the downsampling is as large. Here the sum over taps is accumulated tap by tap instead:
each step reads one shifted (strided) view of the padded input and one kernel plane and adds their
product into an output-sized accumulator, so the extra memory is one output plus one kernel plane.

Layouts follow the official code (and therefore its weights):

- downsampling kernels ``[B, k*k, T, H, W]``: channel ``i*k + j`` is tap ``(row i, col j)`` of frame ``t``;
  the ``T*k*k`` taps of a pixel are softmax-normalised jointly;
- upsampling kernels ``[B, s*s*k*k, T, H, W]``: channel order ``(s_row, s_col, k_row, k_col)``;
  kernels are normalised by subtracting their mean over the ``T*k*k`` taps and adding ``1/(T*k*k)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from fmanetpp_cli.errors import InputShapeError

DOWNSAMPLE_EPS = 1e-8


def _check(cond: bool, what: str, *shapes: Tensor) -> None:
    if not cond:
        got = ", ".join(str(tuple(t.shape)) for t in shapes)
        raise InputShapeError(f"{what}; got shapes {got}")


def dynamic_downsample(
    x: Tensor, kernel_logits: Tensor, *, kernel_size: int, scale: int, coverage: Tensor | None = None
) -> Tensor:
    """Flow-guided dynamic downsampling (FMA-Net's re-degradation of a warped HR window).

    Each LR pixel ``(h, w)`` is ``sum_t,i,j K[t,i,j,h,w] * x_pad[t, s*h + i, s*w + j]`` with ``K`` the
    softmax over all ``T*k*k`` taps of ``kernel_logits`` and ``x_pad`` the input replicate-padded by
    ``(k - s) / 2``. With ``coverage`` (the masked warp of an all-ones image), the result is divided by the
    same filter applied to ``coverage`` (plus 1e-8), which undoes the darkening by occlusion masks.

    Args:
        x: warped HR frames.
        kernel_logits: per-LR-pixel kernel logits.
        kernel_size: ``k``; ``k - scale`` must be even and non-negative.
        scale: downsampling factor ``s`` (the stride).
        coverage: optional normaliser, one channel or as many as ``x``.

    Returns:
        The downsampled centre estimate.

    Raises:
        InputShapeError: inconsistent shapes or sizes.

    Shapes:
        x: ``[B, C, T, sH, sW]``.
        kernel_logits: ``[B, k*k, T, H, W]``.
        coverage: ``[B, 1 or C, T, sH, sW]``.
        return: ``[B, C, H, W]``.
    """
    k, s = kernel_size, scale
    _check(x.ndim == 5 and kernel_logits.ndim == 5, "dynamic_downsample needs 5-D inputs", x, kernel_logits)
    B, C, T, sH, sW = x.shape
    _, KK, _, H, W = kernel_logits.shape
    _check(
        k * k == KK
        and kernel_logits.shape[0] == B
        and kernel_logits.shape[2] == T
        and (sH, sW) == (s * H, s * W),
        f"dynamic_downsample expects kernels [B, {k * k}, T, H, W] for an input [B, C, T, {s}H, {s}W]",
        x,
        kernel_logits,
    )
    _check((k - s) >= 0 and (k - s) % 2 == 0, f"kernel_size - scale must be even and >= 0 (k={k}, s={s})", x)
    if coverage is not None:
        _check(
            coverage.ndim == 5 and coverage.shape[2:] == x.shape[2:] and coverage.shape[1] in (1, C),
            "coverage must match the input's frames and size",
            x,
            coverage,
        )
        x = torch.cat([x, coverage], dim=1)  # [B, C+c, T, sH, sW]
    weights = torch.softmax(kernel_logits.reshape(B, KK * T, H, W), dim=1).view(B, KK, T, H, W)

    pad = (k - s) // 2
    Cx = x.shape[1]
    padded = F.pad(x.reshape(B, Cx * T, sH, sW), (pad, pad, pad, pad), mode="replicate")
    padded = padded.view(B, Cx, T, sH + 2 * pad, sW + 2 * pad)
    acc = x.new_zeros(B, Cx, H, W)
    rows, cols = s * (H - 1) + 1, s * (W - 1) + 1
    for t in range(T):
        for i in range(k):
            for j in range(k):
                tap = padded[:, :, t, i : i + rows : s, j : j + cols : s]  # [B, Cx, H, W]
                acc.addcmul_(tap, weights[:, i * k + j, t].unsqueeze(1))
    if coverage is None:
        return acc
    return acc[:, :C] / (acc[:, C:] + DOWNSAMPLE_EPS)


def dynamic_upsample(x: Tensor, kernel: Tensor, *, kernel_size: int, scale: int) -> Tensor:
    """Flow-guided dynamic upsampling (FMA-Net's restoration filter).

    HR pixel ``(s*h + a, s*w + b)`` is ``sum_t,i,j K'[a,b,t,i,j,h,w] * x_pad[t, h + i, w + j]`` with
    ``K' = K - mean_taps(K) + 1/(T*k*k)`` and ``x_pad`` the LR input replicate-padded by ``k // 2``.

    Args:
        x: warped LR frames.
        kernel: per-LR-pixel kernels, channel order ``(s_row, s_col, k_row, k_col)``.
        kernel_size: odd ``k``.
        scale: upsampling factor ``s``.

    Returns:
        The upsampled centre estimate.

    Raises:
        InputShapeError: inconsistent shapes.

    Shapes:
        x: ``[B, C, T, H, W]``.
        kernel: ``[B, s*s*k*k, T, H, W]``.
        return: ``[B, C, sH, sW]``.
    """
    k, s = kernel_size, scale
    _check(x.ndim == 5 and kernel.ndim == 5, "dynamic_upsample needs 5-D inputs", x, kernel)
    B, C, T, H, W = x.shape
    _check(
        kernel.shape == (B, s * s * k * k, T, H, W),
        f"dynamic_upsample expects kernels [B, {s * s * k * k}, T, H, W] matching the input [B, C, T, H, W]",
        x,
        kernel,
    )
    _check(k % 2 == 1, f"dynamic_upsample kernel_size must be odd, got {k}", x)
    taps = kernel.view(B, s * s, k * k, T, H, W)
    mean = taps.mean(dim=(2, 3))  # [B, s*s, H, W]
    inv_n = 1.0 / (T * k * k)

    pad = k // 2
    padded = F.pad(x.reshape(B, C * T, H, W), (pad, pad, pad, pad), mode="replicate")
    padded = padded.view(B, C, T, H + 2 * pad, W + 2 * pad)
    acc = x.new_zeros(B, C, s * s, H, W)
    for t in range(T):
        for i in range(k):
            for j in range(k):
                weight = (taps[:, :, i * k + j, t] - mean) + inv_n  # [B, s*s, H, W]
                tap = padded[:, :, t, i : i + H, j : j + W]  # [B, C, H, W]
                acc.addcmul_(tap.unsqueeze(2), weight.unsqueeze(1))
    return rearrange(acc, "b c (sr sc) h w -> b c (h sr) (w sc)", sr=s)  # [B, C, sH, sW]


class DynamicDownsampling(nn.Module):
    """Module form of :func:`dynamic_downsample` (no parameters).

    Args:
        kernel_size: ``k``.
        scale: stride ``s``.
    """

    def __init__(self, *, kernel_size: int, scale: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.scale = scale

    def forward(self, x: Tensor, kernel_logits: Tensor, coverage: Tensor | None = None) -> Tensor:
        """Shapes: x ``[B, C, T, sH, sW]``, kernel_logits ``[B, k*k, T, H, W]`` -> ``[B, C, H, W]``."""
        return dynamic_downsample(
            x, kernel_logits, kernel_size=self.kernel_size, scale=self.scale, coverage=coverage
        )


class DynamicUpsampling(nn.Module):
    """Module form of :func:`dynamic_upsample` (no parameters).

    Args:
        kernel_size: odd ``k``.
        scale: factor ``s``.
    """

    def __init__(self, *, kernel_size: int, scale: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.scale = scale

    def forward(self, x: Tensor, kernel: Tensor) -> Tensor:
        """Shapes: x ``[B, C, T, H, W]``, kernel ``[B, s*s*k*k, T, H, W]`` -> ``[B, C, sH, sW]``."""
        return dynamic_upsample(x, kernel, kernel_size=self.kernel_size, scale=self.scale)
