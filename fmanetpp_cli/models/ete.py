"""Exposure conditioning of FMA-Net++ (arXiv 2512.04390, Sec. 3.2-3.3): the ETE encoder and the ETM layer.

- :class:`ExposureEncoder` (the paper's *ETE*, Exposure Time-aware feature Extractor) maps one LR frame to
  one exposure embedding ``u``. The paper uses a ResNet-18 pre-trained with supervised contrastive learning
  on five exposure levels and then frozen. Here it is a ResNet-18-shaped encoder (a 7x7 stem, four stages
  of two basic blocks, global average pooling) whose width is configurable, so that CPU presets can use a
  slim copy. Two choices the paper leaves open:

  * **GroupNorm instead of BatchNorm.** A frozen encoder with BatchNorm gives different embeddings in
    ``train()`` and ``eval()`` mode and, in ``train()`` mode, embeddings that depend on the other frames in
    the batch; that would break "a chunk gives the same frames as the whole clip". GroupNorm (8 groups)
    is per-sample and mode-independent.
  * **L2-normalised output** (``normalize=True``, the default): SupCon works on unit vectors, and a unit
    vector keeps the scale of the ETM input fixed whatever the encoder width.

- :class:`ExposureModulation` (the paper's *ETM*) turns ``u_i`` into per-channel ``(alpha, beta)`` and
  applies ``(1 + alpha) * F + beta`` to every pixel of frame ``i`` (FiLM-like; the paper calls it an SFT
  layer and gives neither its depth nor whether ``alpha, beta`` are maps or vectors). Here: a two-layer MLP
  ``d_u -> hidden -> 2C`` with LeakyReLU(0.2), broadcast over ``H x W``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmanetpp_cli.errors import ConfigError, InputShapeError

ETE_GROUPS = 8
"""GroupNorm groups in the ETE; every stage width must be a multiple of it."""


class BasicBlock(nn.Module):
    """ResNet basic block: two ``3x3`` convs with GroupNorm, ReLU, and a (projected) skip.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first conv (2 halves the size; the skip is then a strided ``1x1`` conv).
    """

    def __init__(self, *, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(ETE_GROUPS, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(ETE_GROUPS, out_channels)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.GroupNorm(ETE_GROUPS, out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: x ``[N, C_in, H, W]`` -> ``[N, C_out, ceil(H / stride), ceil(W / stride)]``."""
        out = F.relu(self.norm1(self.conv1(x)))  # [N, C_out, H', W']
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.skip(x))


class ExposureEncoder(nn.Module):
    """ETE: a ResNet-18-shaped per-frame encoder giving one exposure embedding per frame.

    Stage widths are ``width * (1, 2, 4, 8)``; ``width = 64`` is ResNet-18 itself (11.2 M parameters
    without its classifier) and the embedding size is ``d_u = 8 * width`` (512 for ResNet-18).

    FMA-Net++ trains it alone first (supervised contrastive loss on exposure labels) and then freezes it.
    The network that owns it (:class:`~fmanetpp_cli.models.fmanetpp.FMANetPP`) sets ``requires_grad=False``
    on its parameters at construction; the pre-training stage turns that back on for this module only.

    With ``frames = 3`` the encoder sees frame ``i`` together with its neighbours ``i - 1`` and ``i + 1``
    (9 input channels, in that order). One frame cannot tell a short exposure of fast motion from a long
    exposure of slow motion (the blur length is speed x duty cycle); the motion between neighbours gives
    the speed, so the ratio, the duty cycle, becomes observable. The parameter names are the same; only
    the stem's input channels differ.

    Args:
        width: channels of the first stage (multiple of 8).
        normalize: L2-normalise the embedding.
        frames: frames per input, 1 (the frame alone) or 3 (with its two neighbours).
    """

    def __init__(self, *, width: int, normalize: bool = True, frames: int = 1) -> None:
        super().__init__()
        if width < ETE_GROUPS or width % ETE_GROUPS:
            raise ConfigError(f"ETE width must be a positive multiple of {ETE_GROUPS}, got {width}")
        if frames not in (1, 3):
            raise ConfigError(f"ETE frames must be 1 or 3, got {frames}")
        self.normalize = normalize
        self.frames = frames
        self.out_dim = 8 * width
        self.stem = nn.Sequential(
            nn.Conv2d(3 * frames, width, 7, stride=2, padding=3, bias=False),
            nn.GroupNorm(ETE_GROUPS, width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        in_ch = width
        for i, mult in enumerate((1, 2, 4, 8)):
            out_ch = width * mult
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(
                    BasicBlock(in_channels=in_ch, out_channels=out_ch, stride=stride),
                    BasicBlock(in_channels=out_ch, out_channels=out_ch, stride=1),
                )
            )
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)

    def forward(self, frames: Tensor) -> Tensor:
        """Embed each frame.

        Args:
            frames: RGB frames in ``[0, 1]``, any size (the encoder downsamples by 32 and pools globally);
                with ``self.frames = 3``, frames ``i - 1, i, i + 1`` stacked along the channels.

        Returns:
            One embedding per frame (unit length when ``normalize``).

        Raises:
            InputShapeError: not a batch of ``3 * self.frames``-channel images.

        Shapes:
            frames: ``[N, 3 * self.frames, H, W]``.
            return: ``[N, d_u]`` with ``d_u = 8 * width``.
        """
        c = 3 * self.frames
        if frames.ndim != 4 or frames.shape[1] != c:
            raise InputShapeError(f"ETE expects frames of shape [N, {c}, H, W], got {tuple(frames.shape)}")
        h = self.stages(self.stem(frames - 0.5))  # [N, 8*width, H/32, W/32]
        u = h.mean(dim=(2, 3))  # [N, d_u]
        return F.normalize(u, dim=1) if self.normalize else u


class ExposureModulation(nn.Module):
    """ETM: ``F <- (1 + alpha) * F + beta`` with ``(alpha, beta) = MLP(u)`` per frame and channel.

    The last layer is initialised at a tenth of PyTorch's default scale, so that a fresh network starts
    close to the identity modulation while every weight still receives a gradient.

    Args:
        exposure_dim: size ``d_u`` of the embedding.
        hidden: hidden width of the MLP; 0 means a single linear layer ``d_u -> 2C``.
        dim: feature channels ``C``.
    """

    def __init__(self, *, exposure_dim: int, hidden: int, dim: int) -> None:
        super().__init__()
        if hidden > 0:
            self.mlp = nn.Sequential(
                nn.Linear(exposure_dim, hidden),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Linear(hidden, 2 * dim),
            )
        else:
            self.mlp = nn.Sequential(nn.Linear(exposure_dim, 2 * dim))
        last: nn.Linear = self.mlp[-1]  # type: ignore[assignment]
        with torch.no_grad():
            last.weight.mul_(0.1)
            last.bias.mul_(0.1)

    def forward(self, x: Tensor, u: Tensor) -> Tensor:
        """Modulate each frame's features by its exposure embedding.

        Shapes:
            x: ``[N, C, H, W]`` (frames folded into the batch, ``N = B*T``).
            u: ``[N, d_u]`` (same folding).
            return: ``[N, C, H, W]``.
        """
        alpha, beta = self.mlp(u).chunk(2, dim=1)  # 2 x [N, C]
        return torch.addcmul(beta[:, :, None, None], x, 1.0 + alpha[:, :, None, None])
