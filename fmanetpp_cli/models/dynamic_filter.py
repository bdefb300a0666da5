"""Flow-guided dynamic filtering (FGDF) of FMA-Net: per-pixel kernels for down- and upsampling.

A dynamic filter gives every output pixel its own kernel over a ``T x k x k`` neighbourhood spanning all
frames of the (already flow-warped) window. The straightforward formulation unfolds the input into one
``T*k*k`` vector per output pixel and multiplies it with the broadcast kernels; for FMA-Net's x4
upsampling at a 180x320 input that product alone is ``3 * 16 * 75 * 57600`` floats (0.83 GB), and the
unfolded input of the downsampling is as large. Both filters here run over bands of rows (``CHUNK_BYTES``
of temporaries each), never forming the broadcast product: the upsampling's sum over taps is one batched
matrix product (``einsum``) of the band's unfolded input and normalised kernels; the strided downsampling
pixel-unshuffles the band so that its taps become a few shifted views and is never unfolded at all.

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
from torch import Tensor

from fmanetpp_cli.errors import InputShapeError

DOWNSAMPLE_EPS = 1e-8
# memory budget of the temporaries of one band of rows in the dynamic filters
CHUNK_BYTES = 32 * 2**20


def _check(cond: bool, what: str, *shapes: Tensor) -> None:
    if not cond:
        got = ", ".join(str(tuple(t.shape)) for t in shapes)
        raise InputShapeError(f"{what}; got shapes {got}")


def _rows_per_chunk(height: int, bytes_per_row: int, chunk_bytes: int) -> int:
    return max(1, min(height, chunk_bytes // max(1, bytes_per_row)))


def dynamic_downsample(
    x: Tensor,
    kernel_logits: Tensor,
    *,
    kernel_size: int,
    scale: int,
    coverage: Tensor | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Tensor:
    """Flow-guided dynamic downsampling (FMA-Net's re-degradation of a warped HR window).

    Each LR pixel ``(h, w)`` is ``sum_t,i,j K[t,i,j,h,w] * x_pad[t, s*h + i, s*w + j]`` with ``K`` the
    softmax over all ``T*k*k`` taps of ``kernel_logits`` and ``x_pad`` the input replicate-padded by
    ``(k - s) / 2``. With ``coverage`` (the masked warp of an all-ones image), the result is divided by the
    same filter applied to ``coverage`` (plus 1e-8), which undoes the darkening by occlusion masks.

    Computed over bands of LR rows of about ``chunk_bytes`` of temporaries. Within a band the padded HR
    input is pixel-unshuffled by ``s``, so the ``k x k`` taps of all LR pixels become ``ceil(k / s)^2``
    shifted views, each contracting ``T s^2`` taps at once (25 views for ``k = 20``): no unfolded copy of
    the input (``k^2 / s^2`` times its size) is ever made (``docs/fmanetpp-design.md`` has the timings against
    the ``unfold`` + ``einsum`` form this replaced).

    Args:
        x: warped HR frames.
        kernel_logits: per-LR-pixel kernel logits.
        kernel_size: ``k``; ``k - scale`` must be even and non-negative.
        scale: downsampling factor ``s`` (the stride).
        coverage: optional normaliser, one channel or as many as ``x``.
        chunk_bytes: memory budget of one band's temporaries.

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
    _, Q, _, H, W = kernel_logits.shape
    _check(
        k * k == Q
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
    Cx = x.shape[1]
    A = -(-k // s)  # LR offsets per axis that a k-tap window reaches
    pad = (k - s) // 2
    extra = s * (A - 1) - pad  # right / bottom padding: both padded sides are s * (H - 1 + A)
    padded = F.pad(x.reshape(B, Cx * T, sH, sW), (pad, extra, pad, extra), mode="replicate")
    out = x.new_empty(B, Cx, H, W)
    # per LR row: the unshuffled input band, one weighted product, the weights before and after padding
    row_bytes = x.element_size() * B * T * s * s * (2 * Cx * (W + A) + 2 * A * A * W)
    rows = _rows_per_chunk(H, row_bytes, chunk_bytes)
    for r0 in range(0, H, rows):
        r1 = min(H, r0 + rows)
        hc = r1 - r0
        band = padded[:, :, s * r0 : s * (r1 - 1 + A)]  # [B, Cx*T, s*(hc-1+A), s*(W-1+A)]
        # tap (a s + r1, b s + r2) of LR pixel (h, w) is channel (r1, r2) at LR position (h + a, w + b)
        blocks = F.pixel_unshuffle(band, s).view(B, Cx, T, s, s, hc - 1 + A, W - 1 + A)
        weights = torch.softmax(kernel_logits[:, :, :, r0:r1].reshape(B, Q * T, hc, W), dim=1)
        weights = F.pad(weights.view(B, k, k, T, hc, W), (0, 0, 0, 0, 0, 0, 0, A * s - k, 0, A * s - k))
        weights = rearrange(weights, "b (a r1) (c r2) t h w -> b a c t r1 r2 h w", r1=s, r2=s)
        acc = x.new_zeros(B, Cx, hc, W)
        for a in range(A):
            for c in range(A):
                view = blocks[..., a : a + hc, c : c + W]  # [B, Cx, T, s, s, hc, W]
                acc = acc + (view * weights[:, a, c].unsqueeze(1)).sum(dim=(2, 3, 4))
        out[:, :, r0:r1] = acc
    if coverage is None:
        return out
    return out[:, :C] / (out[:, C:] + DOWNSAMPLE_EPS)


def dynamic_upsample(
    x: Tensor, kernel: Tensor, *, kernel_size: int, scale: int, chunk_bytes: int = CHUNK_BYTES
) -> Tensor:
    """Flow-guided dynamic upsampling (FMA-Net's restoration filter).

    HR pixel ``(s*h + a, s*w + b)`` is ``sum_t,i,j K'[a,b,t,i,j,h,w] * x_pad[t, h + i, w + j]`` with
    ``K' = K - mean_taps(K) + 1/(T*k*k)`` and ``x_pad`` the LR input replicate-padded by ``k // 2``.

    Per LR pixel this is a ``[C, T*k*k] @ [T*k*k, s*s]`` matrix product; it runs as one batched product
    (``einsum``) per band of LR rows, so the normalised kernels and the unfolded input exist only for one
    band of about ``chunk_bytes``.

    Args:
        x: warped LR frames.
        kernel: per-LR-pixel kernels, channel order ``(s_row, s_col, k_row, k_col)``.
        kernel_size: odd ``k``.
        scale: upsampling factor ``s``.
        chunk_bytes: memory budget of one band's temporaries.

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
    S, Q = s * s, k * k
    _check(
        kernel.shape == (B, S * Q, T, H, W),
        f"dynamic_upsample expects kernels [B, {S * Q}, T, H, W] matching the input [B, C, T, H, W]",
        x,
        kernel,
    )
    _check(k % 2 == 1, f"dynamic_upsample kernel_size must be odd, got {k}", x)
    taps = kernel.view(B, S, Q, T, H, W)
    inv_n = 1.0 / (T * Q)
    pad = k // 2
    padded = F.pad(x.reshape(B, C * T, H, W), (pad, pad, pad, pad), mode="replicate")  # [B, C*T, H+2p, W+2p]
    out = x.new_empty(B, C, H, s, W, s)
    # per LR row: normalised kernels and their einsum copy, the unfolded input and its copy, the result
    row_bytes = x.element_size() * B * W * (2 * S * Q * T + 2 * C * T * Q + C * S)
    rows = _rows_per_chunk(H, row_bytes, chunk_bytes)
    for r0 in range(0, H, rows):
        r1 = min(H, r0 + rows)
        hc = r1 - r0
        band = padded[:, :, r0 : r1 + 2 * pad]  # [B, C*T, hc+2p, W+2p]
        cols = F.unfold(band.reshape(B * C * T, 1, hc + 2 * pad, W + 2 * pad), k)
        cols = cols.view(B, C, T, Q, hc * W)  # [B, C, T, k*k, hc*W]
        kern = taps[..., r0:r1, :]  # [B, S, Q, T, hc, W]
        kern = (kern - kern.mean(dim=(2, 3), keepdim=True)) + inv_n
        res = torch.einsum("bctqp,bsqtp->bcsp", cols, kern.reshape(B, S, Q, T, hc * W))  # [B, C, S, hc*W]
        out[:, :, r0:r1] = rearrange(res, "b c (sr sc) (h w) -> b c h sr w sc", sr=s, h=hc)
    return out.view(B, C, H * s, W * s)
