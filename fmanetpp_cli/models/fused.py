"""The inference shortcut both networks take: two linear convolutions run as one composed convolution.

Where two convolutions meet with no nonlinearity in between, their composition is one convolution with a
larger kernel (``layers.compose_kernels``): about half the arithmetic, and the wide tensor between them is
never built. Two pieces are the same in every model that does this, and live here:

* ``ComposedKernelCache`` keeps the composed kernel until the weights it came from change (an in-place
  update bumps a tensor's version; ``load_state_dict`` or ``.to()`` give it new storage);
* ``redo_border`` recomputes the thin border ring where the inner convolution's zero padding makes the
  composed convolution differ from the two-step one.

Both are for inference only (the cache is not differentiated through).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import torch
from torch import Tensor

V = TypeVar("V")


class ComposedKernelCache(Generic[V]):
    """A value computed (without autograd) from some weights, recomputed only when one of them changes."""

    def __init__(self) -> None:
        self._key: tuple[tuple[int, int], ...] | None = None
        self._value: V | None = None

    def get(self, weights: Sequence[Tensor], compute: Callable[[], V]) -> V:
        """``compute()``'s result for the current ``weights`` (their versions and storage are the key)."""
        key = tuple((w._version, w.data_ptr()) for w in weights)
        if self._value is None or self._key != key:
            with torch.no_grad():
                self._value = compute()
            self._key = key
        return self._value


def redo_border(
    out: Tensor, hidden: Tensor, two_step: Callable[[Tensor], Tensor], ring: int, slab: int
) -> None:
    """Overwrite the ``ring``-pixel border of ``out`` with ``two_step`` on ``slab``-wide strips of ``hidden``.

    Shapes:
        out: ``[N, C, H, W]`` (written in place); hidden: ``[N, C', H, W]``, the composed convolution's input.
    """
    out[:, :, :ring] = two_step(hidden[:, :, :slab])[:, :, :ring]
    out[:, :, -ring:] = two_step(hidden[:, :, -slab:])[:, :, -ring:]
    out[:, :, :, :ring] = two_step(hidden[:, :, :, :slab])[:, :, :, :ring]
    out[:, :, :, -ring:] = two_step(hidden[:, :, :, -slab:])[:, :, :, -ring:]
