"""Global translation between neighbouring frames by phase correlation (an optional flow initialisation).

Camera shake and pans move the whole frame. Net_D's HRBP blocks refine flows with 3x3 convolutions
starting from zero, so a small network cannot reach shifts of several LR pixels; with
``FMANetPPConfig.initial_flow = "global"`` every flow starts at the frame pair's global translation
instead and the blocks refine the residual. This is our addition, not the paper's (which starts from
zero flows); it has no parameters, needs no gradient and costs two small FFTs per frame.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _peak_offset(left: Tensor, centre: Tensor, right: Tensor) -> Tensor:
    """Sub-pixel offset in ``[-0.5, 0.5]`` of a parabola through three samples around a peak."""
    denom = left - 2 * centre + right
    curved = denom.abs() > 1e-12  # a flat top has no vertex: offset 0
    offset = 0.5 * (left - right) / torch.where(curved, denom, torch.ones_like(denom))
    return torch.where(curved, offset, torch.zeros_like(offset)).clamp(-0.5, 0.5)


@torch.no_grad()
def phase_correlation(reference: Tensor, moving: Tensor, max_shift: float | None = None) -> Tensor:
    """The translation ``d`` with ``moving(p + d) ~ reference(p)`` for each pair, in pixels.

    A Hann-windowed, whitened cross-power spectrum; the integer peak is refined by a parabola along
    each axis. A shift larger than ``max_shift`` (default: half the smaller side, the most the cyclic
    correlation can tell) is returned as zero. There is no confidence test: on featureless or pure-noise
    frames the estimate is arbitrary, and Net_D's blocks must refine it like any other start.

    Shapes:
        reference, moving: ``[N, C, H, W]`` (channels are averaged).
        return: ``[N, 2]``, ``(dx, dy)``.
    """
    N, _, H, W = reference.shape
    a = reference.float().mean(1)  # [N, H, W]
    b = moving.float().mean(1)
    window = torch.hann_window(H, periodic=False, device=a.device)[:, None] * torch.hann_window(
        W, periodic=False, device=a.device
    )
    fa = torch.fft.fft2((a - a.mean((-2, -1), keepdim=True)) * window)
    fb = torch.fft.fft2((b - b.mean((-2, -1), keepdim=True)) * window)
    cross = fb * fa.conj()
    corr = torch.fft.ifft2(cross / (cross.abs() + 1e-9)).real  # [N, H, W], peak at the shift
    flat = corr.flatten(1).argmax(1)
    iy, ix = flat // W, flat % W
    rows = torch.arange(N, device=a.device)
    dx = _peak_offset(corr[rows, iy, (ix - 1) % W], corr[rows, iy, ix], corr[rows, iy, (ix + 1) % W])
    dy = _peak_offset(corr[rows, (iy - 1) % H, ix], corr[rows, iy, ix], corr[rows, (iy + 1) % H, ix])
    sx = torch.where(ix > W // 2, ix - W, ix).float() + dx  # wrap to signed shifts
    sy = torch.where(iy > H // 2, iy - H, iy).float() + dy
    limit = max_shift if max_shift is not None else min(H, W) / 2
    shift = torch.stack((sx, sy), dim=1)
    return torch.where(shift.abs().amax(1, keepdim=True) <= limit, shift, torch.zeros_like(shift))


def neighbour_shifts(frames: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
    """Global translations from every frame towards its previous and next frame (zero at the ends).

    Shapes:
        frames: ``[B*T, C, H, W]`` (``T = num_frames`` consecutive frames per clip).
        return: ``([B*T, 2], [B*T, 2])``: towards ``i - 1`` and towards ``i + 1``.
    """
    BT, C, H, W = frames.shape
    x = frames.view(BT // num_frames, num_frames, C, H, W)
    to_prev = frames.new_zeros(BT // num_frames, num_frames, 2, dtype=torch.float32)
    to_next = torch.zeros_like(to_prev)
    if num_frames > 1:
        cur, prev = x[:, 1:].flatten(0, 1), x[:, :-1].flatten(0, 1)
        to_prev[:, 1:] = phase_correlation(cur, prev).view(-1, num_frames - 1, 2)
        to_next[:, :-1] = phase_correlation(prev, cur).view(-1, num_frames - 1, 2)
    return to_prev.flatten(0, 1), to_next.flatten(0, 1)
