"""One model pass over one temporal chunk: numpy frames in, restored numpy frames out.

``ChunkRestorer`` owns everything between the decoded frames and the model: conversion to float tensors on
the device, the channel order the weights expect, spatial padding and tiling, window batching (FMA-Net v1)
or sequence slicing (FMA-Net++), mixed precision, clamping, resampling to a non-native scale, and the
conversion back to ``uint8`` / ``uint16`` frames.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from fmanetpp_cli.errors import ConfigError, InputShapeError
from fmanetpp_cli.pipeline.device import autocast
from fmanetpp_cli.pipeline.ensemble import MIRRORS, mirror_ensemble
from fmanetpp_cli.pipeline.tiling import SizePadder, auto_tile_size, measure_peak_bytes, run_tiled

# Smallest tile side the out-of-memory fallback tries before giving up.
MIN_RETRY_TILE = 16


def _is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA out-of-memory errors and for the CPU allocator's "can't allocate memory"."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error)
    return "can't allocate memory" in text or "out of memory" in text.lower()


# Size of the probe pass that measures a model's memory per pixel: side, and output frames.
PROBE_SIDE = 32
PROBE_OUTPUTS = 4


# Frames smaller than this are padded up (and cropped back): attention and 3x3 stacks misbehave on specks,
# and FMA-Net refuses frames below 2x2.
DEFAULT_MIN_SIZE = 8


@dataclass(frozen=True, slots=True)
class ModelTraits:
    """What the pipeline reads from a model (``docs/design.md``), checked and typed once.

    ``size_multiple`` and ``min_size`` are optional model attributes (defaults 1 and ``DEFAULT_MIN_SIZE``).
    """

    scale: int
    temporal_mode: str
    num_seq: int
    temporal_radius: int
    channel_order: str = "RGB"
    size_multiple: int = 1
    min_size: int = DEFAULT_MIN_SIZE


def model_traits(model: nn.Module) -> ModelTraits:
    """Read and check a model's pipeline attributes.

    Raises:
        ConfigError: a required attribute is missing, or a mode / channel order is unknown.
    """
    required = ("scale", "temporal_mode", "num_seq", "temporal_radius")
    optional = ("channel_order", "size_multiple", "min_size")
    values: dict[str, Any] = {k: getattr(model, k) for k in (*required, *optional) if hasattr(model, k)}
    missing = [k for k in required if k not in values]
    if missing:
        raise ConfigError(f"{type(model).__name__} is not a restoration model (no {', '.join(missing)})")
    traits = ModelTraits(
        scale=int(values["scale"]),
        temporal_mode=str(values["temporal_mode"]),
        num_seq=int(values["num_seq"]),
        temporal_radius=int(values["temporal_radius"]),
        channel_order=str(values.get("channel_order", "RGB")),
        size_multiple=int(values.get("size_multiple", 1)),
        min_size=int(values.get("min_size", DEFAULT_MIN_SIZE)),
    )
    if traits.temporal_mode not in ("window", "sequence"):
        raise ConfigError(f"unknown temporal_mode {traits.temporal_mode!r}")
    if traits.channel_order not in ("RGB", "BGR"):
        raise ConfigError(f"unknown channel_order {traits.channel_order!r}")
    return traits


def frames_to_tensor(frames: Sequence[np.ndarray], device: torch.device) -> Tensor:
    """Stack ``[H, W, 3]`` uint8 / uint16 RGB frames into one float clip in [0, 1].

    Shapes:
        frames: T arrays ``[H, W, 3]``
        returns: ``[1, 3, T, H, W]``
    """
    peak = 65535.0 if frames[0].dtype == np.uint16 else 255.0
    stack = torch.from_numpy(np.stack(frames)).to(device)  # [T, H, W, 3]
    x = rearrange(stack, "t h w c -> 1 c t h w")  # [1, 3, T, H, W]
    return x.float().div_(peak)


def tensor_to_frames(y: Tensor, dtype: np.dtype) -> list[np.ndarray]:
    """Quantise ``[T, 3, H, W]`` floats (clamped to [0, 1]) into ``[H, W, 3]`` frames of ``dtype``."""
    deep = dtype == np.uint16
    q = y.float().clamp_(0, 1).mul_(65535.0 if deep else 255.0).round_()  # [T, 3, H, W]
    # Quantise on the device: a quarter of the bytes cross to the host for 8-bit video.
    q = q.to(torch.int32 if deep else torch.uint8)
    arr = rearrange(q, "t c h w -> t h w c").contiguous().cpu().numpy()  # [T, H, W, 3]
    return [f.astype(dtype, copy=deep) for f in arr]


class ChunkRestorer:
    """Runs a restoration model on temporal chunks of frames of one fixed size.

    Args:
        model: a network with ``scale``, ``temporal_mode``, ``num_seq``, ``temporal_radius`` and
            ``channel_order`` (moved to ``device`` and put in eval mode here).
        height: frame height ``H``.
        width: frame width ``W``.
        device: where the model runs.
        dtype: compute precision (fp32, or bf16 / fp16 under autocast).
        out_scale: output size over input size; differs from ``model.scale`` only when resampling.
        tile: tile side in input pixels, 0 for no tiling.
        tile_overlap: overlap between tiles in input pixels.
        ensemble: model passes over mirrored copies of each chunk, averaged (1, 2 or 4; ``ensemble.py``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        height: int,
        width: int,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        out_scale: float | None = None,
        tile: int = 0,
        tile_overlap: int = 16,
        ensemble: int = 1,
    ) -> None:
        traits = model_traits(model)
        self.traits = traits
        self.model = model.to(device).eval()
        self.scale = traits.scale
        self.window = traits.temporal_mode == "window"
        self.num_seq = traits.num_seq
        self.bgr = traits.channel_order == "BGR"
        self.device = device
        self.dtype = dtype
        multiple, min_size = traits.size_multiple, traits.min_size
        self.multiple = multiple
        self.padder = SizePadder(height, width, multiple=multiple, min_size=min_size)
        self.out_scale = float(self.scale if out_scale is None else out_scale)
        self.out_height = max(1, round(height * self.out_scale))
        self.out_width = max(1, round(width * self.out_scale))
        if tile and tile % multiple:
            raise ConfigError(f"--tile {tile} must be a multiple of {multiple} for this model")
        self.tile = tile
        self.tile_overlap = tile_overlap
        if ensemble not in MIRRORS:
            raise ConfigError(f"--ensemble must be one of {', '.join(map(str, MIRRORS))}, got {ensemble}")
        self.ensemble = ensemble
        self.model_seconds = 0.0
        self.tile_retries = 0

    @property
    def height(self) -> int:
        """Input frame height."""
        return self.padder.height

    @property
    def width(self) -> int:
        """Input frame width."""
        return self.padder.width

    def _forward(self, x: Tensor, offset: int, count: int) -> Tensor:
        """The model on one (tile of a) chunk, returning only the ``count`` outputs from ``offset``.

        Shapes:
            x: ``[1, 3, L, h, w]``
            returns: ``[count, 3, s*h, s*w]``
        """
        if self.window:
            h = self.num_seq // 2
            windows = x[0].unfold(1, self.num_seq, 1)  # [3, L-T+1, h, w, T]
            windows = rearrange(windows, "c k h w t -> k c t h w")  # [K, 3, T, h, w]
            out = self.model(windows[offset - h : offset - h + count])["output"]  # [count, 3, sh, sw]
        else:
            out = self.model(x)["output"]  # [1, 3, L, sh, sw]
            out = rearrange(out[:, :, offset : offset + count], "1 c t h w -> t c h w")  # [count, 3, sh, sw]
        return out.float()

    def restore(self, frames: Sequence[np.ndarray], offset: int, count: int) -> list[np.ndarray]:
        """Restore ``count`` frames of a chunk, starting at input position ``offset``.

        Args:
            frames: the chunk's input frames ``[H, W, 3]`` (uint8 or uint16), end padding included.
            offset: position of the first output frame inside ``frames``.
            count: number of output frames.

        Returns:
            ``count`` frames ``[round(s'H), round(s'W), 3]`` of the input dtype (``s'`` = ``out_scale``).

        Raises:
            InputShapeError: a frame of the wrong size, or too few frames around a window centre.
            MemoryError: out of memory even with tiles of ``MIN_RETRY_TILE`` pixels.
        """
        if any(f.shape != (self.height, self.width, 3) for f in frames):
            shapes = sorted({f.shape for f in frames})
            raise InputShapeError(f"expected frames of {(self.height, self.width, 3)}, got {shapes}")
        if self.window and (offset < self.num_seq // 2 or offset + count + self.num_seq // 2 > len(frames)):
            raise InputShapeError(
                f"windows of {self.num_seq} frames do not fit the chunk at {offset}+{count}"
            )
        with torch.inference_mode():
            x = frames_to_tensor(frames, self.device)  # [1, 3, L, H, W]
            if self.bgr:
                x = x.flip(1)
            x = self.padder.pad(x)  # [1, 3, L, Hp, Wp]
            started = time.perf_counter()
            y = self._run_shrinking(x, offset, count)  # [count, 3, s*Hp, s*Wp]
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.model_seconds += time.perf_counter() - started
            y = self.padder.crop(y, self.scale)  # [count, 3, sH, sW]
            if self.bgr:
                y = y.flip(1)
            y = self.resample(y.clamp(0, 1))  # [count, 3, s'H, s'W]
            return tensor_to_frames(y, frames[0].dtype)

    def _run(self, x: Tensor, offset: int, count: int) -> Tensor:
        """One pass over a padded chunk, tiled when ``self.tile`` is set.

        Shapes:
            x: ``[1, 3, L, Hp, Wp]``
            returns: ``[count, 3, s*Hp, s*Wp]``
        """

        def forward(t: Tensor) -> Tensor:
            return mirror_ensemble(lambda m: self._forward(m, offset, count), t, self.ensemble)

        with autocast(self.device, self.dtype):
            if not self.tile:
                return forward(x)
            return run_tiled(
                forward,
                x,
                tile=self.tile,
                overlap=self.tile_overlap,
                scale=self.scale,
            )

    def _run_shrinking(self, x: Tensor, offset: int, count: int) -> Tensor:
        """``_run``, retried with tiles of half the side after each out-of-memory error.

        The memory estimate is only an estimate (and other programs share the device): rather than fail
        on a long video, the restorer keeps the smaller tile for the rest of the run (``tile_retries``
        counts the halvings). Below ``MIN_RETRY_TILE`` it gives up with a ``MemoryError``.
        """
        while True:
            try:
                return self._run(x, offset, count)
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:
                if not _is_out_of_memory(e):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                side = (self.tile or max(x.shape[-2:])) // 2 // self.multiple * self.multiple
                if side < max(MIN_RETRY_TILE, self.multiple):
                    raise MemoryError(
                        f"out of memory even with {self.tile or 'no'} px tiles on {self.device}"
                    ) from e
                self.tile = side
                self.tile_overlap = min(self.tile_overlap, side // 4)
                self.tile_retries += 1

    def resample(self, y: Tensor) -> Tensor:
        """Resize native-scale frames to ``out_scale`` (antialiased bicubic); identity at the native scale.

        Shapes:
            y: ``[N, 3, sH, sW]``
            returns: ``[N, 3, round(s'H), round(s'W)]``
        """
        size = (self.out_height, self.out_width)
        if tuple(y.shape[-2:]) == size:
            return y
        down = size[0] < y.shape[-2] or size[1] < y.shape[-1]
        return F.interpolate(y, size=size, mode="bicubic", align_corners=False, antialias=down)

    def bytes_per_pixel(self, chunk_len: int) -> float:
        """Working memory of one pass over ``chunk_len`` frames, per input pixel (measured on a probe).

        The probe is a ``PROBE_SIDE``-sided square of mid-grey frames, ``PROBE_OUTPUTS`` output frames
        long; the result is scaled linearly to the chunk's outputs. Fixed costs (parameters' views,
        channel-attention matrices) are included and scaled too, which keeps the estimate conservative.
        """
        side = max(PROBE_SIDE, self.multiple)
        side = -(-side // self.multiple) * self.multiple
        offset = self.num_seq // 2 if self.window else 0
        outputs = max(1, chunk_len - 2 * offset)
        count = min(outputs, PROBE_OUTPUTS)
        probe = torch.full((1, 3, count + 2 * offset, side, side), 0.5, device=self.device)  # [1, 3, L, p, p]

        def run() -> None:
            with autocast(self.device, self.dtype):
                self._forward(probe, offset, count)

        params = [*self.model.parameters(), *self.model.buffers(), probe]
        peak = measure_peak_bytes(run, params)
        return peak * outputs / count / (side * side)

    def output_frame_bytes(self) -> int:
        """Bytes of one blended float32 output frame at the native scale (plus its blending weights)."""
        pixels = self.scale**2 * self.padder.padded_height * self.padder.padded_width
        return pixels * (3 * 4 + (8 if self.tile else 0))

    def choose_tile(self, chunk_len: int, budget_bytes: int) -> int:
        """Tile side for a memory budget: 0 (no tiling) when the whole padded frame fits."""
        per_pixel = self.bytes_per_pixel(chunk_len)
        side = auto_tile_size(per_pixel, budget_bytes, multiple=self.multiple, min_tile=64)
        full = self.padder.padded_height * self.padder.padded_width
        if per_pixel * full <= budget_bytes:
            return 0
        if side >= max(self.padder.padded_height, self.padder.padded_width):
            return 0
        return side

    def output_size(self) -> tuple[int, int]:
        """(height, width) of the output frames."""
        return self.out_height, self.out_width
