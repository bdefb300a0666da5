"""Spatial padding and tiling: any frame size in, exactly ``scale x`` that size out, in bounded memory.

* ``SizePadder`` pads the bottom and right edges (replicating the border) up to the size a model accepts,
  and crops the upscaled result back to ``scale x`` the original size (the RAFT ``InputPadder`` idea).
* ``run_tiled`` cuts a frame into overlapping tiles, runs a function on each and blends the upscaled tiles
  with weights that ramp smoothly across every overlap. Blending is a running weighted mean
  (``acc += w / W_total * (tile - acc)``): it equals the usual ``sum(w * tile) / sum(w)`` but leaves a pixel
  bit-identical when every tile agrees on it, so an identity model through the tiler returns its input
  exactly.
* ``measure_peak_bytes`` runs a function once while tracking the bytes of every tensor it creates, on any
  device; ``auto_tile_size`` turns a per-pixel cost and a memory budget into a tile side.

FMA-Net++'s channel attention is global over the frame, so tiles change its result slightly; large tiles
with generous overlap keep the difference small (the specification, ``../shared/docs/fmanetpp-paper.md``,
section 4 "Inference on a long video").
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from fmanetpp_cli.errors import ConfigError, InputShapeError

TileFn = Callable[[Tensor], Tensor]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True, slots=True)
class SizePadder:
    """Pads ``[..., H, W]`` tensors on the bottom / right to a size the model accepts, and crops back.

    Args:
        height: original height ``H``.
        width: original width ``W``.
        multiple: the padded height and width are multiples of this.
        min_size: the padded height and width are at least this.
    """

    height: int
    width: int
    multiple: int = 1
    min_size: int = 1

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise InputShapeError(f"frame size {self.width}x{self.height} is empty")
        if self.multiple < 1 or self.min_size < 1:
            raise ConfigError(f"multiple ({self.multiple}) and min_size ({self.min_size}) must be >= 1")

    @property
    def padded_height(self) -> int:
        """Height after padding."""
        return _round_up(max(self.height, self.min_size), self.multiple)

    @property
    def padded_width(self) -> int:
        """Width after padding."""
        return _round_up(max(self.width, self.min_size), self.multiple)

    def pad(self, x: Tensor) -> Tensor:
        """Replicate the last row / column until the frame has the padded size.

        Shapes:
            x: ``[B, C, T, H, W]`` (or any 3-D to 5-D tensor ending in ``H, W``)
            returns: ``[B, C, T, Hp, Wp]``
        """
        if x.shape[-2:] != (self.height, self.width):
            raise InputShapeError(f"expected frames of {self.width}x{self.height}, got {tuple(x.shape)}")
        ph, pw = self.padded_height - self.height, self.padded_width - self.width
        if ph == 0 and pw == 0:
            return x
        if x.ndim == 5:
            return F.pad(x, (0, pw, 0, ph, 0, 0), mode="replicate")  # [B, C, T, Hp, Wp]
        return F.pad(x, (0, pw, 0, ph), mode="replicate")  # [B, C, Hp, Wp]

    def crop(self, y: Tensor, scale: int) -> Tensor:
        """Crop an upscaled result back to ``scale x`` the original size.

        Shapes:
            y: ``[..., s*Hp, s*Wp]``
            returns: ``[..., s*H, s*W]``
        """
        return y[..., : self.height * scale, : self.width * scale]  # [..., sH, sW]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``range(size)`` with at least ``overlap`` shared.

    The last tile is moved back to end exactly at ``size``, so every tile has the full length.
    """
    if tile >= size:
        return [0]
    if overlap >= tile:
        raise ConfigError(f"tile overlap ({overlap}) must be smaller than the tile ({tile})")
    step = tile - overlap
    count = math.ceil((size - tile) / step) + 1
    # Spread the tiles evenly so the overlaps are as equal (and as large) as possible.
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def _ramp(length: int, before: int, after: int) -> Tensor:
    """1-D blending weights: rising over ``before`` samples, flat, falling over ``after`` samples."""
    w = torch.ones(length, dtype=torch.float64)
    if before > 0:
        # Strictly positive everywhere, so each pixel keeps a defined weight.
        w[:before] = torch.minimum(w[:before], (torch.arange(before, dtype=torch.float64) + 0.5) / before)
    if after > 0:
        fall = (torch.arange(after, 0, -1, dtype=torch.float64) - 0.5) / after
        w[length - after :] = torch.minimum(w[length - after :], fall)
    # Smoothstep on the linear ramp: continuous slope at both ends of the overlap.
    return w * w * (3.0 - 2.0 * w)


def run_tiled(fn: TileFn, x: Tensor, *, tile: int, overlap: int, scale: int) -> Tensor:
    """Run ``fn`` on overlapping spatial tiles of ``x`` and blend the upscaled tiles.

    Args:
        fn: maps ``[..., h, w]`` to ``[..., s*h, s*w]`` (leading dimensions may change, e.g. the time
            axis disappears for window models; every tile must give the same leading shape).
        x: the input, already padded to the model's size requirements.
        tile: tile side in input pixels (a multiple of the model's size multiple); ``>=`` the frame size
            means one pass.
        overlap: minimum overlap between neighbouring tiles, in input pixels.
        scale: the spatial factor ``s`` of ``fn``.

    Shapes:
        x: ``[B, C, T, H, W]``
        returns: ``fn``'s leading shape followed by ``[s*H, s*W]``

    Raises:
        ConfigError: a non-positive tile or an overlap not smaller than the tile.
    """
    H, W = x.shape[-2:]
    if tile < 1:
        raise ConfigError(f"tile size must be >= 1, got {tile}")
    if tile >= H and tile >= W:
        return fn(x)
    ys, xs = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    th, tw = min(tile, H), min(tile, W)
    out: Tensor | None = None
    weight: Tensor | None = None
    for i, y0 in enumerate(ys):
        for j, x0 in enumerate(xs):
            piece = fn(x[..., y0 : y0 + th, x0 : x0 + tw])  # [..., s*th, s*tw]
            if out is None:
                out = piece.new_zeros((*piece.shape[:-2], H * scale, W * scale))  # [..., sH, sW]
                weight = torch.zeros((H * scale, W * scale), dtype=torch.float64, device=piece.device)
            assert weight is not None
            # Ramp only towards a neighbouring tile, by the overlap actually shared with it.
            up = (ys[i - 1] + th - y0) * scale if i > 0 else 0
            down = (y0 + th - ys[i + 1]) * scale if i + 1 < len(ys) else 0
            left = (xs[j - 1] + tw - x0) * scale if j > 0 else 0
            right = (x0 + tw - xs[j + 1]) * scale if j + 1 < len(xs) else 0
            wy = _ramp(th * scale, up, down).to(piece.device)
            wx = _ramp(tw * scale, left, right).to(piece.device)
            w = wy[:, None] * wx[None, :]  # [s*th, s*tw]
            sy, sx = slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale)
            total = weight[sy, sx] + w
            frac = (w / total).to(piece.dtype)
            region = out[..., sy, sx]
            out[..., sy, sx] = region + frac * (piece - region)
            weight[sy, sx] = total
    assert out is not None
    return out


class _LiveBytes(TorchDispatchMode):
    """Tracks the bytes held by tensors created inside the mode, and their peak."""

    def __init__(self, external: set[int]) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._external = external  # storages that existed before (inputs, parameters): not counted
        self._owners: dict[int, int] = {}  # storage pointer -> tensors alive on it

    def _release(self, ptr: int, nbytes: int) -> None:
        self._owners[ptr] -= 1
        if self._owners[ptr] == 0:
            del self._owners[ptr]
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        result = func(*args, **(kwargs or {}))
        for t in tree_flatten(result)[0]:
            if not isinstance(t, Tensor):
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if ptr == 0 or ptr in self._external:
                continue
            if ptr not in self._owners:
                self._owners[ptr] = 0
                self.live += nbytes
                self.peak = max(self.peak, self.live)
            self._owners[ptr] += 1
            weakref.finalize(t, self._release, ptr, nbytes)
        return result


def measure_peak_bytes(fn: Callable[[], object], existing: Iterable[Tensor] = ()) -> int:
    """Peak bytes of the tensors alive at once among those created while ``fn()`` runs (any device).

    Args:
        fn: the work to measure (run once, under ``torch.no_grad()``).
        existing: tensors that exist before the call (inputs, parameters); views of them are not counted.
    """
    external = {t.untyped_storage().data_ptr() for t in existing}
    with torch.no_grad(), _LiveBytes(external) as tracker:
        fn()
    return tracker.peak


def auto_tile_size(
    bytes_per_pixel: float, budget_bytes: int, *, multiple: int = 1, min_tile: int = 16
) -> int:
    """Largest square tile side (in input pixels) whose estimated working memory fits the budget.

    Args:
        bytes_per_pixel: measured working memory per input pixel of one model pass.
        budget_bytes: memory the pass may use.
        multiple: the side is rounded down to a multiple of this.
        min_tile: lower bound (the tile never gets smaller than this, even if the budget is tiny).
    """
    if bytes_per_pixel <= 0:
        raise ConfigError(f"bytes per pixel must be positive, got {bytes_per_pixel}")
    side = int(math.sqrt(max(budget_bytes, 0) / bytes_per_pixel))
    side = side // multiple * multiple
    return max(side, _round_up(min_tile, multiple))
