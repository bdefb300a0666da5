"""Exposure-aware flow-guided dynamic filtering of FMA-Net++ (arXiv 2512.04390, Sec. 3.5, Eqs. 6-7).

Net_D is trained by re-blurring the sharp HR frames into the blurry LR input: each frame ``i`` filters
``(Y_{i-1 -> i}, Y_i, Y_{i+1 -> i})`` (neighbours warped by Net_D's image flows) with its per-pixel
kernels ``K^D`` and stride 4. The operator is FMA-Net's dynamic downsampling; it is "exposure-aware"
because ``K^D`` comes from ETM-modulated features. Training only: inference never re-blurs.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from fmanetpp_cli.models.dynamic_filter import dynamic_downsample
from fmanetpp_cli.models.warp import flow_mask_warp


def exposure_aware_fgdf(
    hr: Tensor,
    image_flow_mask: Tensor,
    kernels: Tensor,
    *,
    num_frames: int,
    kernel_size: int,
    scale: int,
    edge_mode: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """Re-blur sharp HR frames into LR frames with Net_D's flows and kernels (Eqs. 6-7).

    ``X_i = sum_{t in (i-1, i, i+1)} sum_k K_i(t, k) * Y_{t->i}(s p + p_k)`` with ``Y_{i->i} = Y_i`` and
    ``Y_{i+-1 -> i}`` the occlusion-masked backward warp of ``Y_{i+-1}`` by ``f^Y`` (upsampled x s). The
    kernels are softmax-normalised over all ``3 k_d^2`` taps and the result is divided by the same filter
    applied to the warped coverage (FMA-Net v1). A missing neighbour at a sequence end is ``Y_i`` with full
    coverage (``edge_mode="replicate"``) or zero with zero coverage (``"mask"``).

    Returns:
        ``(recon, warped_from_prev, warped_from_next)``.

    Shapes:
        hr: ``[B*T, 3, sH, sW]``.
        image_flow_mask: ``[B*T, 6, H, W]``.
        kernels: ``[B*T, 3 k_d^2, H, W]`` (logits).
        return: ``([B*T, 3, H, W], [B*T, 3, sH, sW], [B*T, 3, sH, sW])``.
    """
    N, C, sH, sW = hr.shape
    T = num_frames
    B = N // T
    _, _, H, W = kernels.shape
    y = hr.view(B, T, C, sH, sW)
    fm = image_flow_mask.view(B, T, 6, H, W)
    if edge_mode == "replicate":
        edge, edge_cov = y, y.new_ones(B, T, 1, sH, sW)
    else:
        edge, edge_cov = torch.zeros_like(y), y.new_zeros(B, T, 1, sH, sW)
    prev, prev_cov, nxt, nxt_cov = edge, edge_cov, edge, edge_cov
    if T > 1:
        M = B * (T - 1)
        wp, cp = flow_mask_warp(
            y[:, :-1].reshape(M, C, sH, sW),
            fm[:, 1:, :3].reshape(M, 3, H, W),
            scale=scale,
            with_coverage=True,
        )
        wn, cn = flow_mask_warp(
            y[:, 1:].reshape(M, C, sH, sW),
            fm[:, :-1, 3:].reshape(M, 3, H, W),
            scale=scale,
            with_coverage=True,
        )
        assert cp is not None and cn is not None
        prev = torch.cat((edge[:, :1], wp.view(B, T - 1, C, sH, sW)), dim=1)  # [B, T, 3, sH, sW]
        prev_cov = torch.cat((edge_cov[:, :1], cp.view(B, T - 1, 1, sH, sW)), dim=1)  # [B, T, 1, sH, sW]
        nxt = torch.cat((wn.view(B, T - 1, C, sH, sW), edge[:, -1:]), dim=1)  # [B, T, 3, sH, sW]
        nxt_cov = torch.cat((cn.view(B, T - 1, 1, sH, sW), edge_cov[:, -1:]), dim=1)  # [B, T, 1, sH, sW]
    window = torch.stack((prev, y, nxt), dim=3).view(N, C, 3, sH, sW)  # [B*T, 3, 3 src, sH, sW]
    cov = torch.stack((prev_cov, torch.ones_like(prev_cov), nxt_cov), dim=3).view(N, 1, 3, sH, sW)
    k2 = kernel_size * kernel_size
    taps = rearrange(kernels, "n (t kk) h w -> n kk t h w", t=3, kk=k2)  # [B*T, k_d^2, 3, H, W]
    recon = dynamic_downsample(window, taps, kernel_size=kernel_size, scale=scale, coverage=cov)
    return recon, prev.reshape(N, C, sH, sW), nxt.reshape(N, C, sH, sW)
