"""Out of memory while restoring a chunk: retry with shorter passes, down to a floor, then fail clearly.

`ChunkRestorer` already answers an allocation failure by halving its tile side (down to
``engine.MIN_RETRY_TILE``) and keeping the smaller tile for the rest of the run. When even the smallest tile
does not fit, it raises ``MemoryError``; `restore_in_passes` then restores the chunk's outputs in two halves,
each with the same temporal context on both sides as a chunk seam gets, halving again as needed down to
``floor`` output frames per pass. With context at least the model's temporal radius (the default overlap),
a shorter pass gives the same frames as the long one, exactly as a smaller ``--chunk`` would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmanetpp_cli.pipeline.engine import ChunkRestorer


@dataclass
class PassStats:
    """What the fallback did over a run: chunks split, and the shortest pass (outputs) it needed."""

    split_chunks: int = 0
    shortest: int = 0

    def warning(self) -> str | None:
        """The one line for the report, or None when no chunk had to be split."""
        if not self.split_chunks:
            return None
        return (
            f"ran out of memory even with the smallest tiles; restored {self.split_chunks} chunk(s) in "
            f"shorter passes (down to {self.shortest} frame(s); use a smaller --chunk next time)"
        )


def restore_in_passes(
    restorer: ChunkRestorer,
    frames: Sequence[np.ndarray],
    offset: int,
    count: int,
    *,
    context: int,
    stats: PassStats,
    floor: int = 1,
    nested: int = 0,
) -> list[np.ndarray]:
    """``restorer.restore(frames, offset, count)``, split into shorter passes after a ``MemoryError``.

    Args:
        restorer: the chunk restorer.
        frames: the chunk's input frames (context and end padding included).
        offset: position of the first output frame inside ``frames``.
        count: number of output frames.
        context: frames of context to keep on each side of a shorter pass (the chunk overlap; window
            models need ``num_seq // 2``, which their padded chunks always hold).
        stats: updated when a chunk is split.
        floor: the fewest outputs per pass; a pass of that length that still fails raises.
        nested: recursion depth, set by the recursion (a chunk split many times counts once).

    Returns:
        The ``count`` restored frames, as ``ChunkRestorer.restore`` returns them.

    Raises:
        MemoryError: a pass of ``floor`` outputs with the smallest tiles does not fit, with a message that
            says what was tried.
    """
    try:
        return restorer.restore(frames, offset, count)
    except MemoryError as e:
        if count <= max(1, floor):
            raise MemoryError(
                f"out of memory on {restorer.device} even for {count} frame(s) per pass with "
                f"{restorer.tile or 'no'} px tiles; free memory or use a smaller model"
            ) from e
    if not nested:
        stats.split_chunks += 1
    first = count // 2
    out: list[np.ndarray] = []
    for start, n in ((0, first), (first, count - first)):
        lo = max(0, offset + start - context)
        hi = min(len(frames), offset + start + n + context)
        stats.shortest = n if stats.shortest == 0 else min(stats.shortest, n)
        part, at = frames[lo:hi], offset + start - lo
        out += restore_in_passes(restorer, part, at, n, context=context, stats=stats, floor=floor, nested=1)
    return out
