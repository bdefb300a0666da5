"""An exponential moving average (EMA) of a model's weights, for validation and the saved weights.

Short CPU runs end on weights that still jitter from step to step; an average over the last few
hundred steps is usually a little better than the last step alone. ``decay`` sets the horizon (0.999:
about the last 1,000 steps). Early on the decay is capped at ``(1 + n) / (10 + n)`` after ``n`` updates,
so the average does not stay anchored to the weights the stage started from. Every floating-point
entry of the state dict is averaged (frozen parts stay equal to the model's); integer buffers are
copied. The trainer swaps the average in for validation and for writing weights, and keeps the raw
weights for the optimiser.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class WeightAverage:
    """EMA of ``model``'s state dict.

    Args:
        model: the network being trained (its current weights start the average).
        decay: the EMA decay in (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow: dict[str, Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards the model's current weights (call after each optimiser step)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.lerp_(v.detach(), 1.0 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, object]:
        """For checkpoints: the averaged tensors and the update count."""
        return {"shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` (keys must match the model's)."""
        if set(state["shadow"]) != set(self.shadow):
            raise KeyError("EMA state does not match the model's parameters")
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
        self.updates = int(state["updates"])

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block the model holds the averaged weights; its own come back afterwards."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.load_state_dict(raw)
