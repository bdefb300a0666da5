"""numpy frames <-> float tensors: the one conversion every layer uses (no av, no I/O).

Frames are ``[H, W, 3]`` RGB arrays, ``uint8`` or ``uint16`` (16-bit full scale, as the video reader hands
out deep sources); tensors are float32 in [0, 1], channels first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def frames_to_tensor(frames: Sequence[np.ndarray] | np.ndarray, device: torch.device | None = None) -> Tensor:
    """Stack frames into one float batch in [0, 1] (moved to ``device`` before the float conversion).

    Shapes:
        frames: N arrays ``[H, W, 3]`` (or one array ``[N, H, W, 3]``), uint8 or uint16
        returns: ``[N, 3, H, W]`` float32
    """
    arr = np.ascontiguousarray(frames if isinstance(frames, np.ndarray) else np.stack(list(frames)))
    peak = 65535.0 if arr.dtype == np.uint16 else 255.0
    x = torch.from_numpy(arr)  # [N, H, W, 3]
    if device is not None:
        x = x.to(device)  # a quarter of the bytes of the floats cross to the device
    return x.permute(0, 3, 1, 2).float().div_(peak)  # [N, 3, H, W]


def tensor_to_frames(y: Tensor, dtype: type | np.dtype = np.uint8, *, overwrite: bool = False) -> np.ndarray:
    """Quantise floats (clamped to [0, 1], rounded) into frames of ``dtype`` (uint8 or uint16), on the host.

    Args:
        y: the images.
        dtype: ``np.uint8`` or ``np.uint16``.
        overwrite: ``y`` may be overwritten (saves a copy of a large float32 batch).

    Shapes:
        y: ``[N, 3, H, W]``
        returns: ``[N, H, W, 3]``
    """
    deep = np.dtype(dtype) == np.uint16
    q = y.float()
    q = q.clamp_(0, 1) if overwrite else q.clamp(0, 1)
    q = q.mul_(65535.0 if deep else 255.0).round_()  # [N, 3, H, W]
    # Quantise on the device: a quarter of the bytes cross to the host for 8-bit video.
    q = q.to(torch.int32 if deep else torch.uint8)
    arr = q.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # [N, H, W, 3]
    return arr.astype(np.uint16) if deep else arr
