"""``plan_restore``: every size of a restore (chunk, context, tile, memory budget, output size), decided once.

The plan is a pure function of the model's traits, the frame size, the options, the device and precision
and the memory budget; the one measurement it may need (the model's working memory per pixel, for an
automatic tile) is handed in as a callable and run at most once. ``ChunkRestorer`` takes the finished
``RestorePlan`` and the runner reads its sizes from it: nothing is decided in two places, and nothing is
set on the engine from outside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fmanetpp_cli.errors import ConfigError
from fmanetpp_cli.pipeline.options import RestoreOptions
from fmanetpp_cli.pipeline.tiling import SizePadder, auto_tile_size

# Input frames per model pass when --chunk is not given, per temporal mode; measured with
# benchmarks/bench_restore.py (docs/benchmarks.md, "restore"). Bigger is faster on both kinds (window models
# batch their windows; sequence models recompute 2 x temporal_radius context frames per pass); memory is
# kept in check by fit_chunk() and the automatic tile size.
DEFAULT_CHUNK = {"window": 10, "sequence": 32}

# Smallest automatic tile side.
MIN_AUTO_TILE = 64

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


@dataclass(frozen=True, slots=True)
class RestorePlan:
    """How a restore runs: the output of :func:`plan_restore`, read by the engine and the runner.

    Attributes:
        height: input frame height ``H``.
        width: input frame width ``W``.
        padded_height: ``H`` padded to what the model accepts (``SizePadder``).
        padded_width: ``W`` padded likewise.
        out_height: output frame height (even when resampling, for 4:2:0 encoders).
        out_width: output frame width.
        out_scale: output size over input size (the model's native scale unless resampling).
        chunk: input frames per model pass (padding included).
        overlap: context frames at each chunk seam.
        pad: copies of the end frames added at each segment end (window models).
        exact: True when the overlap covers the model's temporal radius.
        tile: initial spatial tile side in input pixels (0 = whole frames).
        tile_overlap: overlap between tiles in input pixels.
        memory_budget: bytes a restore may use; half of it goes to one model pass, half to the chunk's
            outputs.
        device: where the model runs.
        dtype: compute precision (fp32, or bf16 / fp16 under autocast).
        ensemble: model passes per chunk over mirrored copies (1, 2 or 4).
        warnings: one line per option the plan had to override or could not honour exactly.
    """

    height: int
    width: int
    padded_height: int
    padded_width: int
    out_height: int
    out_width: int
    out_scale: float
    chunk: int
    overlap: int
    pad: int
    exact: bool
    tile: int
    tile_overlap: int
    memory_budget: int
    device: torch.device
    dtype: torch.dtype
    ensemble: int
    warnings: tuple[str, ...] = ()


def plan_parameters(traits: ModelTraits, options: RestoreOptions) -> tuple[int, int, int, bool]:
    """(chunk, overlap, pad, exact) for a model and the options, before the memory budget is applied.

    Window models always take ``num_seq // 2`` frames of context and end padding (a window needs exactly
    that); sequence models take ``--overlap`` (default: their temporal radius) and no padding, since the
    network handles its own sequence ends.
    """
    mode, radius = traits.temporal_mode, traits.temporal_radius
    if mode == "window":
        half = traits.num_seq // 2
        overlap, pad = half, half
    else:
        overlap = radius if options.overlap is None else options.overlap
        pad = 0
    chunk = options.chunk if options.chunk is not None else max(DEFAULT_CHUNK[mode], 4 * overlap + 1)
    return chunk, overlap, pad, overlap >= radius


def fit_chunk(chunk: int, overlap: int, frame_bytes: int, budget: int) -> int:
    """Shrink a default chunk until the float outputs it keeps fit ``budget`` (never below one output).

    At x4 an output frame is 16 times the input's pixels in float32 (a 1080p frame: 400 MB), so the
    outputs of a chunk, not the model's activations, can dominate memory on large frames.
    """
    keep = max(1, budget // max(frame_bytes, 1))
    return max(2 * overlap + 1, min(chunk, keep + 2 * overlap))


def output_frame_bytes(scale: int, padded_height: int, padded_width: int, tiled: bool) -> int:
    """Bytes of one blended float32 output frame at the native scale (plus its blending weights)."""
    return scale**2 * padded_height * padded_width * (3 * 4 + (8 if tiled else 0))


def choose_tile(
    bytes_per_pixel: float, budget_bytes: int, padded_height: int, padded_width: int, multiple: int = 1
) -> int:
    """Tile side for a memory budget: 0 (no tiling) when the whole padded frame fits."""
    side = auto_tile_size(bytes_per_pixel, budget_bytes, multiple=multiple, min_tile=MIN_AUTO_TILE)
    if bytes_per_pixel * padded_height * padded_width <= budget_bytes:
        return 0
    return 0 if side >= max(padded_height, padded_width) else side


def plan_restore(
    traits: ModelTraits,
    *,
    height: int,
    width: int,
    options: RestoreOptions,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    memory_budget: int,
    bytes_per_pixel: Callable[[int], float] | None = None,
    even: bool = True,
) -> RestorePlan:
    """Decide every size of a restore.

    Args:
        traits: the model's pipeline attributes (``model_traits``).
        height: input frame height.
        width: input frame width.
        options: the restore's options (already validated).
        device: the device chosen for the model (``resolve_compute``).
        dtype: the compute precision chosen with it.
        memory_budget: bytes the restore may use (``--memory-budget`` or ``default_memory_budget``).
        bytes_per_pixel: ``bytes_per_pixel(chunk)`` measures one pass's working memory per input pixel
            (``engine.measure_bytes_per_pixel``); called once, and only when ``options.tile`` is None.
        even: round a resampled output up to even sides, as 4:2:0 encoders need (the native x4 output
            always has them); False keeps ``round(scale * size)``.

    Raises:
        ConfigError: a tile that is not a multiple of the model's size multiple, or an automatic tile
            without a way to measure.
    """
    multiple = traits.size_multiple
    if options.tile and options.tile % multiple:
        raise ConfigError(f"--tile {options.tile} must be a multiple of {multiple} for this model")
    padder = SizePadder(height, width, multiple=multiple, min_size=traits.min_size)
    ph, pw = padder.padded_height, padder.padded_width

    chunk, overlap, pad, exact = plan_parameters(traits, options)
    warnings: list[str] = []
    if traits.temporal_mode == "window" and options.overlap is not None and options.overlap != overlap:
        warnings.append(f"--overlap is ignored by window models (they always use num_seq // 2 = {overlap})")
    if not exact:
        warnings.append(
            f"--overlap {overlap} is below the model's temporal radius {traits.temporal_radius}: "
            "chunk seams differ slightly from a single pass"
        )
    if options.chunk is None:
        frame_bytes = output_frame_bytes(traits.scale, ph, pw, tiled=bool(options.tile))
        chunk = fit_chunk(chunk, overlap, frame_bytes, memory_budget // 2)

    out_h, out_w = max(1, round(height * options.scale)), max(1, round(width * options.scale))
    if even and options.scale != traits.scale:
        out_h, out_w = out_h + out_h % 2, out_w + out_w % 2

    if options.tile is not None:
        tile = options.tile
    elif bytes_per_pixel is None:
        raise ConfigError("an automatic tile size needs a memory measurement (or give --tile)")
    else:
        tile = choose_tile(bytes_per_pixel(chunk), memory_budget // 2, ph, pw, multiple)

    return RestorePlan(
        height=height,
        width=width,
        padded_height=ph,
        padded_width=pw,
        out_height=out_h,
        out_width=out_w,
        out_scale=float(options.scale),
        chunk=chunk,
        overlap=overlap,
        pad=pad,
        exact=exact,
        tile=tile,
        tile_overlap=options.tile_overlap,
        memory_budget=memory_budget,
        device=device,
        dtype=dtype,
        ensemble=options.ensemble,
        warnings=tuple(warnings),
    )
