"""Optional RAFT teacher for Net_D's image-flow loss (``loss.flow_target = "raft"``).

The paper supervises Net_D's image flows with RAFT pseudo-ground-truth. Synthetic camera motion knows
its true flow, so the bundled recipe uses that (``"synthetic"``); for real high-frame-rate footage
(``data.recipe = "hfr"``) the flow is unknown and this teacher estimates it: torchvision's RAFT (small)
runs on consecutive sharp HR ground-truth frames, and its flow is averaged down to the LR grid (LR
pixels), matching the ``f^Y`` convention (frame ``i`` towards ``i - 1`` / ``i + 1``, backward warping).

RAFT's weights are not fetched here: torchvision must be installed and the weights already in its cache
(``torch.hub``); otherwise :class:`RaftTeacher` raises ``ConfigError`` with the reason.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from fmanetpp_cli.errors import ConfigError


class RaftTeacher:
    """Frozen RAFT (small) from torchvision that labels clips with LR flows.

    Args:
        device: where RAFT runs.
        scale: HR / LR factor (4).

    Raises:
        ConfigError: torchvision is missing or its RAFT weights are not in the local cache.
    """

    def __init__(self, device: torch.device, scale: int = 4) -> None:
        try:
            from torchvision.models.optical_flow import Raft_Small_Weights, raft_small
        except ImportError as e:
            raise ConfigError("loss.flow_target = 'raft' needs torchvision (pip install torchvision)") from e
        try:
            self.net = raft_small(weights=Raft_Small_Weights.DEFAULT, progress=False).to(device).eval()
        except Exception as e:  # noqa: BLE001 - no network here: a missing cache shows up as a URL error
            raise ConfigError(
                f"RAFT weights are not available offline ({type(e).__name__}: {e}); put them in the torch "
                "hub cache or use loss.flow_target = 'synthetic' / 'none'"
            ) from e
        self.net.requires_grad_(False)
        self.scale = scale

    @torch.no_grad()
    def _flow(self, a: Tensor, b: Tensor) -> Tensor:
        """RAFT flow from frames ``a`` to ``b`` (``[N, 3, H, W]`` in [0, 1]) at LR size, in LR pixels."""
        H, W = a.shape[-2:]
        ph, pw = (-H) % 8, (-W) % 8  # RAFT needs sizes divisible by 8
        pad = (0, pw, 0, ph)
        a8, b8 = F.pad(a * 2 - 1, pad, mode="replicate"), F.pad(b * 2 - 1, pad, mode="replicate")
        flow = self.net(a8, b8)[-1][..., :H, :W]  # [N, 2, H, W], HR pixels
        return F.avg_pool2d(flow, self.scale) / self.scale  # [N, 2, H/s, W/s]

    def __call__(self, gt: Tensor) -> tuple[Tensor, Tensor]:
        """Flows of every frame towards its previous and next frame (zero at the sequence ends).

        Shapes:
            gt: ``[B, 3, T, H, W]`` sharp HR frames.
            returns: (flow_prev, flow_next), each ``[B, 2, T, H / s, W / s]``.
        """
        B, _, T, H, W = gt.shape
        frames = rearrange(gt, "b c t h w -> b t c h w")
        zeros = torch.zeros(B, 1, 2, H // self.scale, W // self.scale, device=gt.device)
        if T < 2:
            z = rearrange(zeros, "b t c h w -> b c t h w")
            return z, z
        cur, nxt = frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)  # [B*(T-1), 3, H, W]
        fwd = self._flow(cur, nxt).unflatten(0, (B, T - 1))  # i -> i+1 for i < T-1
        bwd = self._flow(nxt, cur).unflatten(0, (B, T - 1))  # i+1 -> i
        flow_next = torch.cat([fwd, zeros], dim=1)  # [B, T, 2, h, w]
        flow_prev = torch.cat([zeros, bwd], dim=1)
        return rearrange(flow_prev, "b t c h w -> b c t h w"), rearrange(flow_next, "b t c h w -> b c t h w")
