"""Toy restoration models honouring the model contract (``docs/design.md``), shared by the pipeline tests.

Each has a known temporal reach, so stitching errors show up: ``ToySequence`` mixes ``radius`` neighbours,
``ToyWindow`` weighs a window of ``num_seq`` frames, ``Identity4`` (and ``CountingIdentity4``, which counts
its calls) returns its input x4 nearest, exactly. ``DiesOnce`` kills its own process part way through a
restore, once (a worker lost mid-task).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ToySequence(nn.Module):
    """x4 nearest upsampler plus ``radius`` rounds of random temporal mixing (radius exactly ``radius``).

    The ends replicate the edge frame, as a real sequence model handles its own ends.
    """

    scale = 4
    temporal_mode = "sequence"
    num_seq = 1
    channel_order = "RGB"

    def __init__(self, radius: int = 2, seed: int = 0) -> None:
        super().__init__()
        self.temporal_radius = radius
        g = torch.Generator().manual_seed(seed)
        self.mix = nn.Parameter(torch.rand(radius, 3, generator=g) * 0.5)
        self.spatial = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Shapes: x ``[B, 3, T, H, W]`` -> output ``[B, 3, T, 4H, 4W]``."""
        h = x
        for k in range(self.temporal_radius):
            p = F.pad(h, (0, 0, 0, 0, 1, 1), mode="replicate")  # [B, 3, T+2, H, W]
            w = self.mix[k]
            h = (1 - w[1] - w[2]) * h + w[1] * p[:, :, :-2] + w[2] * p[:, :, 2:]  # [B, 3, T, H, W]
        B, C, T, H, W = h.shape
        flat = h.transpose(1, 2).reshape(B * T, C, H, W)  # [B*T, 3, H, W]
        flat = flat + 0.01 * self.spatial(flat)
        up = F.interpolate(flat, scale_factor=4, mode="nearest")  # [B*T, 3, 4H, 4W]
        return {"output": up.reshape(B, T, C, 4 * H, 4 * W).transpose(1, 2)}  # [B, 3, T, 4H, 4W]


class ToyWindow(nn.Module):
    """A window model: weighted sum of the ``num_seq`` frames, x4 nearest upsampled."""

    scale = 4
    temporal_mode = "window"
    channel_order = "RGB"

    def __init__(self, num_seq: int = 3) -> None:
        super().__init__()
        self.num_seq = num_seq
        self.temporal_radius = num_seq // 2
        self.w = nn.Parameter(torch.linspace(0.1, 0.9, num_seq))

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Shapes: x ``[B, 3, T, H, W]`` -> output ``[B, 3, 4H, 4W]``."""
        assert x.shape[2] == self.num_seq
        mixed = (x * (self.w / self.w.sum())[None, None, :, None, None]).sum(2)  # [B, 3, H, W]
        return {"output": F.interpolate(mixed, scale_factor=4, mode="nearest")}


class Identity4(nn.Module):
    """Sequence model whose output is its input, x4 nearest (exact)."""

    scale = 4
    temporal_mode = "sequence"
    num_seq = 1
    temporal_radius = 0
    channel_order = "RGB"

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Shapes: x ``[B, 3, T, H, W]`` -> output ``[B, 3, T, 4H, 4W]``."""
        return {"output": x.repeat_interleave(4, -1).repeat_interleave(4, -2)}


class CountingIdentity4(Identity4):
    """``Identity4`` that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Shapes: x ``[B, 3, T, H, W]`` -> output ``[B, 3, T, 4H, 4W]``."""
        self.calls += 1
        return super().forward(x)


class DiesOnce(ToySequence):
    """``ToySequence`` whose process kills itself (SIGKILL) at its ``at``-th forward pass, once only.

    ``marker`` is created just before the kill: it says the kill happened and keeps every later process
    (the retry) alive. With ``after``, the kill waits (up to 60 s) until that file exists (the marker then
    ends with ``after=1``).
    """

    def __init__(self, marker: Path, at: int = 2, radius: int = 2, after: Path | None = None) -> None:
        super().__init__(radius=radius)
        self.marker = str(marker)
        self.after = str(after) if after is not None else None
        self.at = at
        self.calls = 0

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Shapes: as ``ToySequence``."""
        self.calls += 1
        if self.calls >= self.at and not os.path.exists(self.marker):
            deadline = time.monotonic() + 60
            while self.after is not None and not os.path.exists(self.after) and time.monotonic() < deadline:
                time.sleep(0.05)
            waited = "" if self.after is None else f" after={int(os.path.exists(self.after))}"
            Path(self.marker).write_text(f"{os.getpid()}{waited}")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)
