"""Optional sensor noise and compression applied to the blurry LR frames, after downsampling.

- Noise: additive white Gaussian noise with standard deviation ``sigma`` in 8-bit levels (0..255 scale),
  drawn from a seeded generator, then clipped to [0, 1].
- Compression: an H.264 round trip through FFmpeg's libx264 (via PyAV) at constant rate factor ``crf``
  (yuv420p; odd sizes are padded by edge replication and cropped back), i.e. the artefacts a real upload
  would carry. ``crf=None`` leaves frames untouched.

The paper trains without either (Sec. S6: noise is out of its scope); both are off by default.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import Tensor

from fmanetpp_cli.errors import ConfigError
from fmanetpp_cli.synth.exposure import from_uint8, to_uint8


def add_gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Add white Gaussian noise of ``sigma`` 8-bit levels and clip to [0, 1].

    Shapes:
        x: any shape, float in [0, 1]; returns the same shape.
    """
    if sigma < 0:
        raise ConfigError(f"noise sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype) * (sigma / 255.0)
    return (x + noise).clamp(0, 1)


def h264_roundtrip(frames: np.ndarray, crf: int, fps: int = 25) -> np.ndarray:
    """Encode frames with libx264 at ``crf`` and decode them back.

    Args:
        frames: ``[T, H, W, 3]`` uint8 RGB.
        crf: constant rate factor, 0 (lossless luma) .. 51 (worst).
        fps: nominal frame rate of the stream (affects rate control only).

    Returns:
        ``[T, H, W, 3]`` uint8 RGB with compression artefacts.
    """
    import av

    if not 0 <= crf <= 51:
        raise ConfigError(f"crf must be in 0..51, got {crf}")
    T, H, W, _ = frames.shape
    ph, pw = H % 2, W % 2
    padded = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else frames
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = W + pw, H + ph
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in padded:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            ):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    buf.seek(0)
    with av.open(buf, "r") as inp:
        decoded = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    return np.stack(decoded)[:, :H, :W]


def degrade_lr(
    lr: Tensor, *, noise_sigma: float = 0.0, crf: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Apply the optional noise, quantise to 8 bits, then the optional compression.

    Shapes:
        lr: ``[T, 3, h, w]`` float in [0, 1]; returns the same shape (values on the 8-bit grid).
    """
    x = add_gaussian_noise(lr, noise_sigma, generator)
    q = to_uint8(x)  # [T, h, w, 3]
    if crf is not None:
        q = h264_roundtrip(q, crf)
    return from_uint8(q)
