"""A cheap hard-cut detector, so that frames on either side of a cut never share a temporal context.

Each frame is reduced to a small signature: a coarse grid of mean colours (a thumbnail) and a joint colour
histogram of that thumbnail. A cut is declared between two frames when both change a lot at once:

* the histogram distance (half the L1 distance of the normalised histograms, in [0, 1]) exceeds
  ``threshold``; motion and panning move content around but keep the colour distribution, so this rejects
  them;
* the thumbnails' mean absolute difference (in [0, 1]) exceeds ``threshold / 4``; a global change of
  exposure or a fade shifts the histogram but changes each thumbnail cell only a little per frame.

The cost is sampling 64 x 64 pixels and a few hundred numbers per frame; nothing is kept but the last
signature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fmanetpp_cli.errors import ConfigError, InputShapeError

_GRID = 16  # thumbnail cells per side
_PER_CELL = 4  # sampled pixels per cell side
_BINS = 4  # histogram bins per channel (4**3 = 64 joint bins)


@dataclass(frozen=True, slots=True)
class FrameSignature:
    """The compact description of one frame that cut detection compares."""

    thumb: np.ndarray  # [_GRID, _GRID, 3] float32 in [0, 1]
    hist: np.ndarray  # [_BINS**3] float32, sums to 1


def signature(frame: np.ndarray) -> FrameSignature:
    """Reduce an ``[H, W, 3]`` uint8 / uint16 RGB frame to its signature.

    Raises:
        InputShapeError: the frame is not ``[H, W, 3]``.
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise InputShapeError(f"expected an [H, W, 3] frame, got shape {frame.shape}")
    peak = 65535.0 if frame.dtype == np.uint16 else 255.0
    H, W = frame.shape[:2]
    # Sample a regular grid of n x n pixels (small frames repeat pixels), then average it
    # down to the thumbnail: cost independent of the frame size.
    n = _GRID * _PER_CELL
    ys = ((np.arange(n) + 0.5) * H / n).astype(np.int64)
    xs = ((np.arange(n) + 0.5) * W / n).astype(np.int64)
    sub = frame[ys][:, xs].astype(np.float32) / peak  # [n, n, 3]
    thumb = sub.reshape(_GRID, _PER_CELL, _GRID, _PER_CELL, 3).mean(axis=(1, 3))  # [_GRID, _GRID, 3]
    q = np.minimum((sub * _BINS).astype(np.int64), _BINS - 1)  # [h, w, 3]
    codes = (q[..., 0] * _BINS + q[..., 1]) * _BINS + q[..., 2]
    hist = np.bincount(codes.ravel(), minlength=_BINS**3).astype(np.float32)
    hist /= hist.sum()
    return FrameSignature(thumb=thumb, hist=hist)


def cut_scores(a: FrameSignature, b: FrameSignature) -> tuple[float, float]:
    """(histogram distance, thumbnail mean absolute difference) between two signatures, both in [0, 1]."""
    hist_dist = 0.5 * float(np.abs(a.hist - b.hist).sum())
    thumb_diff = float(np.abs(a.thumb - b.thumb).mean())
    return hist_dist, thumb_diff


class SceneCutDetector:
    """Streams frames and says, for each, whether it starts a new scene.

    Args:
        threshold: histogram distance above which a change counts as a cut (0 < threshold <= 1);
            0.5 means half of the colour distribution moved to other bins.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"scene threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self._last: FrameSignature | None = None

    def is_cut(self, frame: np.ndarray) -> bool:
        """True when ``frame`` starts a new scene (never for the first frame)."""
        sig = signature(frame)
        last, self._last = self._last, sig
        if last is None:
            return False
        hist_dist, thumb_diff = cut_scores(last, sig)
        return hist_dist > self.threshold and thumb_diff > self.threshold / 4

    def reset(self) -> None:
        """Forget the previous frame (the next frame never counts as a cut)."""
        self._last = None
