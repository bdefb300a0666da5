"""Losses of FMA-Net++ (paper Sec. 3.5 and Eq. 9-10, S1) and their per-stage assembly.

- ``supcon``: supervised contrastive loss (Khosla et al. 2020, paper Eq. S1) on exposure labels, used to
  pre-train the exposure encoder (ETE).
- ``degradation_loss`` (L_D, Eq. 9): l1 between the re-blurred LR frames and the input, plus ``lambda1``
  times the HR warping term (neighbouring sharp frames warped to frame ``i`` by Net_D's image flows) and
  ``lambda2`` times the flow term (image flows against a flow target: the true synthetic motion, a RAFT
  teacher, or nothing).
- ``joint_loss`` (Eq. 10): l1 of the restored frames plus ``lambda3 * L_D`` (``loss.pixel = "l2"`` swaps the
  l1 for the mean squared error, our option for a PSNR-oriented final stage).

Sequence ends: frame ``0`` has no ``i - 1`` and frame ``T - 1`` no ``i + 1``; the warping and flow terms
skip those entries (the model fills them by its edge rule, which is not motion).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fmanetpp_cli.errors import InputShapeError


def supcon(embeddings: Tensor, labels: Tensor, temperature: float = 0.5) -> Tensor:
    """Supervised contrastive loss, averaged over anchors that have at least one positive.

    For anchor ``q`` with positives ``P(q)`` (other samples of the same label) and all other samples
    ``A(q)``: ``-mean_{p in P(q)} log( exp(q.p / t) / sum_{a in A(q)} exp(q.a / t) )``.

    Shapes:
        embeddings: ``[N, D]`` (L2-normalised here, as in SupCon); labels: ``[N]``; returns a scalar.
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise InputShapeError(
            f"supcon needs [N, D] and [N], got {tuple(embeddings.shape)}, {tuple(labels.shape)}"
        )
    # In float32 even under autocast: a bf16 similarity matrix rounds the loss to a constant (3.8125 for
    # the whole ETE stage of the first small-v6 run) and its gradient to noise.
    with torch.autocast(embeddings.device.type, enabled=False):
        z = F.normalize(embeddings.float(), dim=1)
        logits = z @ z.T / temperature  # [N, N]
    N = z.shape[0]
    self_mask = torch.eye(N, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # [N, N]
    positive = (labels[:, None] == labels[None, :]) & ~self_mask  # [N, N]
    count = positive.sum(dim=1)
    has_pos = count > 0
    if not has_pos.any():
        return embeddings.sum() * 0.0
    pos_log_prob = log_prob.masked_fill(~positive, 0.0).sum(dim=1)  # [N]
    return -(pos_log_prob[has_pos] / count[has_pos]).mean()


def _inner(x: Tensor, which: str) -> Tensor:
    """Frames that have the neighbour: ``prev`` drops frame 0, ``next`` drops frame T-1 (axis 2)."""
    return x[:, :, 1:] if which == "prev" else x[:, :, :-1]


def degradation_loss(
    out: dict[str, Tensor],
    lr: Tensor,
    gt: Tensor,
    *,
    warp_weight: float,
    flow_weight: float,
    flow_prev: Tensor | None = None,
    flow_next: Tensor | None = None,
    flow_valid: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """L_D (paper Eq. 9) from the outputs of ``FMANetPP.forward(x, y)`` / ``forward_degradation``.

    Args:
        out: model outputs with ``recon``, ``hr_warp_prev/next``, ``image_flow_prev/next``.
        lr: the blurry LR input ``[B, 3, T, h, w]``.
        gt: the sharp HR frames ``[B, 3, T, 4h, 4w]``.
        warp_weight: lambda1.
        flow_weight: lambda2 (ignored without a flow target).
        flow_prev / flow_next: flow targets ``[B, 2, T, h, w]`` (frame i -> i -+ 1), or None.
        flow_valid: ``[B]`` bool, which clips have a real flow target.

    Returns:
        (loss, {"recon": ..., "warp": ..., "flow": ...} as floats for logging).
    """
    recon = F.l1_loss(out["recon"], lr)
    warp = 0.5 * (
        F.l1_loss(_inner(out["hr_warp_prev"], "prev"), _inner(gt, "prev"))
        + F.l1_loss(_inner(out["hr_warp_next"], "next"), _inner(gt, "next"))
    )
    loss = recon + warp_weight * warp
    parts = {"recon": recon.item(), "warp": warp.item()}
    if flow_weight > 0 and flow_prev is not None and flow_next is not None:
        valid = (
            torch.ones(lr.shape[0], dtype=torch.bool, device=lr.device) if flow_valid is None else flow_valid
        )
        if valid.any():
            v = valid.to(lr.device)
            flow = 0.5 * (
                F.l1_loss(_inner(out["image_flow_prev"][v], "prev"), _inner(flow_prev[v], "prev"))
                + F.l1_loss(_inner(out["image_flow_next"][v], "next"), _inner(flow_next[v], "next"))
            )
            loss = loss + flow_weight * flow
            parts["flow"] = flow.item()
    return loss, parts


def restoration_loss(output: Tensor, gt: Tensor, kind: str = "l1") -> Tensor:
    """Eq. 10's first term: l1 (the paper's) or mean squared error between the restored frames and the GT."""
    return F.mse_loss(output, gt) if kind == "l2" else F.l1_loss(output, gt)


def batch_psnr(output: Tensor, gt: Tensor) -> float:
    """Mean PSNR (dB) over frames of a batch, on clamped outputs (a quick training-time figure).

    Shapes:
        output, gt: ``[B, 3, T, H, W]``.
    """
    mse = ((output.detach().clamp(0, 1) - gt) ** 2).mean(dim=(1, 3, 4)).clamp_min(1e-10)  # [B, T]
    return (10 * torch.log10(1.0 / mse)).mean().item()
