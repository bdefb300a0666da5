"""Self-ensemble at inference: the mean of the model's outputs over mirrored copies of the input.

Restoration networks are trained on randomly flipped clips but are not exactly mirror-equivariant, so
the outputs for a clip and its mirror image differ a little; their mean is usually closer to the ground
truth than either (the "x8 self-ensemble" of image super-resolution, here without the transposes so that
frame sizes stay fixed). ``passes`` picks the mirrors: 1 = the input only, 2 = also left-right, 4 = also
up-down and both. Each pass costs one more model run; the memory of one run is unchanged (the passes run
one after the other and only their running sum is kept).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

# passes -> the spatial axes flipped in each pass (counted from the end: -1 = width, -2 = height)
MIRRORS: dict[int, tuple[tuple[int, ...], ...]] = {
    1: ((),),
    2: ((), (-1,)),
    4: ((), (-1,), (-2,), (-2, -1)),
}


def mirror_ensemble(run: Callable[[Tensor], Tensor], x: Tensor, passes: int) -> Tensor:
    """Mean of ``run`` over mirrored copies of ``x``, each output mirrored back.

    Args:
        run: the model call; its output's last two axes are the (scaled) spatial axes of its input's.
        x: the input, spatial axes last (e.g. ``[1, 3, T, h, w]``).
        passes: 1, 2 or 4, a key of :data:`MIRRORS` (``RestoreOptions`` checks ``--ensemble`` against it).

    Returns:
        ``run(x)``'s shape, e.g. ``[T, 3, s*h, s*w]``.
    """
    total: Tensor | None = None
    for axes in MIRRORS[passes]:
        y = run(x.flip(axes)) if axes else run(x)
        y = y.flip(axes) if axes else y
        total = y if total is None else total.add_(y)
    assert total is not None
    return total / passes if passes > 1 else total
