"""One model pass over one temporal chunk: numpy frames in, restored numpy frames out.

``ChunkRestorer`` owns everything between the decoded frames and the model: conversion to float tensors on
the device, the channel order the weights expect, spatial padding and tiling, window batching (FMA-Net v1)
or sequence slicing (FMA-Net++), mixed precision, clamping, resampling to a non-native scale, and the
conversion back to ``uint8`` / ``uint16`` frames.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from fmanetpp_cli.errors import InputShapeError
from fmanetpp_cli.frames import frames_to_tensor as to_tensor
from fmanetpp_cli.frames import tensor_to_frames as to_frames
from fmanetpp_cli.pipeline.device import autocast
from fmanetpp_cli.pipeline.ensemble import mirror_ensemble
from fmanetpp_cli.pipeline.plan import ModelTraits, RestorePlan, model_traits
from fmanetpp_cli.pipeline.tiling import SizePadder, measure_peak_bytes, run_tiled

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


def frames_to_tensor(frames: Sequence[np.ndarray], device: torch.device) -> Tensor:
    """Stack ``[H, W, 3]`` uint8 / uint16 RGB frames into one float clip in [0, 1] (``frames.py``).

    Shapes:
        frames: T arrays ``[H, W, 3]``
        returns: ``[1, 3, T, H, W]``
    """
    return rearrange(to_tensor(frames, device), "t c h w -> 1 c t h w")


def forward_chunk(model: nn.Module, traits: ModelTraits, x: Tensor, offset: int, count: int) -> Tensor:
    """The model on one (tile of a) chunk, returning only the ``count`` outputs from ``offset``.

    Shapes:
        x: ``[1, 3, L, h, w]``
        returns: ``[count, 3, s*h, s*w]``
    """
    if traits.temporal_mode == "window":
        n = traits.num_seq
        windows = x[0].unfold(1, n, 1)  # [3, L-T+1, h, w, T]
        windows = rearrange(windows, "c k h w t -> k c t h w")  # [K, 3, T, h, w]
        out = model(windows[offset - n // 2 : offset - n // 2 + count])["output"]  # [count, 3, sh, sw]
    else:
        out = model(x)["output"]  # [1, 3, L, sh, sw]
        out = rearrange(out[:, :, offset : offset + count], "1 c t h w -> t c h w")  # [count, 3, sh, sw]
    return out.float()


def measure_bytes_per_pixel(
    model: nn.Module, chunk_len: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> float:
    """Working memory of one pass over ``chunk_len`` frames, per input pixel (measured on a probe).

    The probe is a ``PROBE_SIDE``-sided square of mid-grey frames, ``PROBE_OUTPUTS`` output frames
    long; the result is scaled linearly to the chunk's outputs. Fixed costs (parameters' views,
    channel-attention matrices) are included and scaled too, which keeps the estimate conservative. The
    model must already be on ``device``.
    """
    traits = model_traits(model)
    multiple = traits.size_multiple
    side = -(-max(PROBE_SIDE, multiple) // multiple) * multiple
    offset = traits.num_seq // 2 if traits.temporal_mode == "window" else 0
    outputs = max(1, chunk_len - 2 * offset)
    count = min(outputs, PROBE_OUTPUTS)
    probe = torch.full((1, 3, count + 2 * offset, side, side), 0.5, device=device)  # [1, 3, L, p, p]

    def run() -> None:
        with autocast(device, dtype):
            forward_chunk(model, traits, probe, offset, count)

    peak = measure_peak_bytes(run, [*model.parameters(), *model.buffers(), probe])
    return peak * outputs / count / (side * side)


class ChunkRestorer:
    """Runs a restoration model on temporal chunks of frames of one fixed size, as a ``RestorePlan`` says.

    Args:
        model: a network with ``scale``, ``temporal_mode``, ``num_seq``, ``temporal_radius`` and
            ``channel_order`` (moved to ``plan.device`` and put in eval mode here).
        plan: the sizes, tile, device, precision and ensemble (``plan.plan_restore``).
    """

    def __init__(self, model: nn.Module, plan: RestorePlan) -> None:
        traits = model_traits(model)
        self.traits = traits
        self.plan = plan
        self.model = model.to(plan.device).eval()
        self.scale = traits.scale
        self.window = traits.temporal_mode == "window"
        self.num_seq = traits.num_seq
        self.bgr = traits.channel_order == "BGR"
        self.device = plan.device
        self.dtype = plan.dtype
        self.multiple = traits.size_multiple
        self.padder = SizePadder(plan.height, plan.width, multiple=self.multiple, min_size=traits.min_size)
        # The out-of-memory fallback shrinks these two for the rest of the run (``tile_retries`` counts it).
        self.tile = plan.tile
        self.tile_overlap = plan.tile_overlap
        self.model_seconds = 0.0
        self.tile_retries = 0

    @property
    def height(self) -> int:
        """Input frame height."""
        return self.plan.height

    @property
    def width(self) -> int:
        """Input frame width."""
        return self.plan.width

    def _forward(self, x: Tensor, offset: int, count: int) -> Tensor:
        """``forward_chunk`` with this restorer's model."""
        return forward_chunk(self.model, self.traits, x, offset, count)

    def restore(self, frames: Sequence[np.ndarray], offset: int, count: int) -> list[np.ndarray]:
        """Restore ``count`` frames of a chunk, starting at input position ``offset``.

        Args:
            frames: the chunk's input frames ``[H, W, 3]`` (uint8 or uint16), end padding included.
            offset: position of the first output frame inside ``frames``.
            count: number of output frames.

        Returns:
            ``count`` frames ``[round(s'H), round(s'W), 3]`` of the input dtype (``s'`` = ``out_scale``).

        Raises:
            InputShapeError: frames of another size than the plan's (checked once per chunk, on the stacked
                tensor; the runner checks each decoded frame and names the file), or too few frames
                around a window centre.
            MemoryError: out of memory even with tiles of ``MIN_RETRY_TILE`` pixels.
        """
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
            return list(to_frames(y, frames[0].dtype, overwrite=True))

    def _run(self, x: Tensor, offset: int, count: int) -> Tensor:
        """One pass over a padded chunk, tiled when ``self.tile`` is set.

        Shapes:
            x: ``[1, 3, L, Hp, Wp]``
            returns: ``[count, 3, s*Hp, s*Wp]``
        """

        def forward(t: Tensor) -> Tensor:
            return mirror_ensemble(lambda m: self._forward(m, offset, count), t, self.plan.ensemble)

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
        size = (self.plan.out_height, self.plan.out_width)
        if tuple(y.shape[-2:]) == size:
            return y
        down = size[0] < y.shape[-2] or size[1] < y.shape[-1]
        return F.interpolate(y, size=size, mode="bicubic", align_corners=False, antialias=down)

    def bytes_per_pixel(self, chunk_len: int) -> float:
        """``measure_bytes_per_pixel`` for this restorer's model, device and precision."""
        return measure_bytes_per_pixel(self.model, chunk_len, self.device, self.dtype)

    def output_size(self) -> tuple[int, int]:
        """(height, width) of the output frames."""
        return self.plan.out_height, self.plan.out_width
