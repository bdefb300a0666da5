"""Backward warping with optical flow, occlusion masks and LR -> HR flow upsampling (FMA-Net).

Conventions (those of the official FMA-Net, which its weights were trained with):

- A flow is given in **pixels of the image being warped**, channel 0 horizontal (x), channel 1 vertical (y),
  and warping is backward: ``out(p) = in(p + flow(p))``, bilinear, zero outside the image,
  ``align_corners=True`` (pixel centres at -1 and +1 of the normalised grid).
- A *flow-mask* is a triplet of channels ``(dx, dy, mask logit)``; the occlusion mask is
  ``sigmoid(logit)`` and multiplies the warped result.
- LR flows are upsampled to HR bilinearly with ``align_corners=False`` and multiplied by the scale; the
  mask is upsampled *after* the sigmoid.

All functions take per-frame tensors ``[N, C, H, W]`` (time folded into the batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from fmanetpp_cli.errors import InputShapeError


def base_grid(height: int, width: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The identity sampling grid of ``grid_sample`` with ``align_corners=True``.

    Returns:
        ``[1, 2, H, W]``: channel 0 runs from -1 to 1 along the width, channel 1 along the height.
    """
    xs = torch.linspace(-1.0, 1.0, width, dtype=dtype, device=device)
    ys = torch.linspace(-1.0, 1.0, height, dtype=dtype, device=device)
    return torch.stack(
        (xs.view(1, width).expand(height, width), ys.view(height, 1).expand(height, width))
    ).unsqueeze(0)  # [1, 2, H, W]


def backward_warp(x: Tensor, flow: Tensor) -> Tensor:
    """Sample ``x`` at ``p + flow(p)`` (bilinear, zero padding, ``align_corners=True``).

    Args:
        x: the image or features to warp.
        flow: displacement in pixels of ``x``; channel 0 = x (horizontal), 1 = y (vertical).

    Returns:
        The warped tensor.

    Raises:
        InputShapeError: ``x`` and ``flow`` disagree in size, or an image is 1 pixel high or wide (the
            normalisation divides by ``H - 1`` and ``W - 1``).

    Shapes:
        x: ``[N, C, H, W]``.
        flow: ``[N, 2, H, W]``.
        return: ``[N, C, H, W]``.
    """
    N, _, H, W = x.shape
    if flow.ndim != 4 or flow.shape[0] != N or flow.shape[1] != 2 or flow.shape[2:] != x.shape[2:]:
        raise InputShapeError(
            f"flow of shape {tuple(flow.shape)} does not fit an image of shape {tuple(x.shape)}"
        )
    if H < 2 or W < 2:
        raise InputShapeError(
            f"cannot warp an image of shape {tuple(x.shape)}: height and width must be >= 2"
        )
    to_unit = torch.tensor([2.0 / (W - 1.0), 2.0 / (H - 1.0)], dtype=flow.dtype, device=flow.device)
    grid = base_grid(H, W, dtype=flow.dtype, device=flow.device) + flow * to_unit.view(1, 2, 1, 1)
    return F.grid_sample(
        x, grid.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros", align_corners=True
    )


def upsample_flow_mask(flow_mask: Tensor, *, scale: int) -> tuple[Tensor, Tensor]:
    """Bring an LR flow-mask to HR: flow bilinearly upsampled and scaled, mask sigmoid-ed then upsampled.

    Args:
        flow_mask: ``(dx, dy, mask logit)`` in LR pixels.
        scale: integer upsampling factor.

    Returns:
        ``(flow, mask)``: flow in HR pixels and the occlusion mask in ``(0, 1)``.

    Shapes:
        flow_mask: ``[N, 3, H, W]``.
        return: ``([N, 2, sH, sW], [N, 1, sH, sW])``.
    """
    flow, mask = flow_mask[:, :2], torch.sigmoid(flow_mask[:, 2:3])
    if scale == 1:
        return flow, mask
    factor = (float(scale), float(scale))
    flow = scale * F.interpolate(
        flow, scale_factor=factor, mode="bilinear", align_corners=False
    )  # [N, 2, sH, sW]
    mask = F.interpolate(mask, scale_factor=factor, mode="bilinear", align_corners=False)  # [N, 1, sH, sW]
    return flow, mask


def flow_mask_warp(
    x: Tensor, flow_mask: Tensor, *, scale: int = 1, with_coverage: bool = False
) -> tuple[Tensor, Tensor | None]:
    """Warp an image with one flow-mask and multiply it by the occlusion mask (FMA-Net ``ImageBWarp``).

    With ``scale > 1`` the flow-mask is at LR and ``x`` at HR (``scale`` times larger).

    Args:
        x: image to warp.
        flow_mask: ``(dx, dy, mask logit)``, in pixels of the flow-mask's own resolution.
        scale: size ratio of ``x`` to ``flow_mask``.
        with_coverage: also return the masked warp of an all-ones image (the normaliser of dynamic
            downsampling); it is the same for every channel, so one channel is returned.

    Returns:
        ``(mask * warp(x), mask * warp(ones) or None)``.

    Shapes:
        x: ``[N, C, sH, sW]``.
        flow_mask: ``[N, 3, H, W]``.
        return: ``([N, C, sH, sW], [N, 1, sH, sW] | None)``.
    """
    if x.shape[2] != flow_mask.shape[2] * scale or x.shape[3] != flow_mask.shape[3] * scale:
        raise InputShapeError(
            f"image of shape {tuple(x.shape)} is not {scale}x the flow-mask of shape {tuple(flow_mask.shape)}"
        )
    flow, mask = upsample_flow_mask(flow_mask, scale=scale)
    warped = backward_warp(x, flow) * mask
    if not with_coverage:
        return warped, None
    ones = torch.ones_like(x[:, :1])
    return warped, backward_warp(ones, flow) * mask


def multi_flow_warp(features: Tensor, flow_mask: Tensor, *, num_flow: int) -> Tensor:
    """Warp ``num_flow`` channel groups of features, each with its own flow-mask (FMA-Net ``MultiFlowBWarp``).

    Group ``n`` is channels ``[n*c, (n+1)*c)`` with ``c = C / num_flow``; its flow-mask is channels
    ``3n .. 3n+2`` of ``flow_mask``.

    Shapes:
        features: ``[N, C, H, W]``, ``C`` divisible by ``num_flow``.
        flow_mask: ``[N, 3*num_flow, H, W]``.
        return: ``[N, C, H, W]``.
    """
    if features.shape[1] % num_flow or flow_mask.shape[1] != 3 * num_flow:
        raise InputShapeError(
            f"features {tuple(features.shape)} / flow-mask {tuple(flow_mask.shape)} do not split into "
            f"{num_flow} flows"
        )
    groups = rearrange(features, "b (n c) h w -> (b n) c h w", n=num_flow)  # [N*n, C/n, H, W]
    fm = rearrange(flow_mask, "b (n c) h w -> (b n) c h w", n=num_flow)  # [N*n, 3, H, W]
    warped = backward_warp(groups, fm[:, :2]) * torch.sigmoid(fm[:, 2:3])
    return rearrange(warped, "(b n) c h w -> b (n c) h w", n=num_flow)  # [N, C, H, W]
