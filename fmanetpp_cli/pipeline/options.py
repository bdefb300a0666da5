"""``RestoreOptions``: every knob of a restore, validated once, before any file is touched."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmanetpp_cli.errors import ConfigError
from fmanetpp_cli.pipeline.device import check_device_spec, check_precision_spec
from fmanetpp_cli.pipeline.ensemble import MIRRORS


@dataclass(frozen=True)
class RestoreOptions:
    """Runtime options of ``restore_video`` (architecture settings live in the model's config).

    Attributes:
        scale: output size over input size. 4 is the models' native factor; any other value resamples the
            x4 result with an antialiased bicubic filter (output size rounded to whole pixels).
        chunk: input frames per model pass (padding included); None picks the measured default of the
            model kind (``DEFAULT_CHUNK`` in ``plan.py``).
        overlap: context frames shared by neighbouring chunks on each side; None uses the model's
            ``temporal_radius``, which makes chunked output equal to one pass over the whole clip. Smaller
            values trade exactness for speed (reported in ``RestoreReport.exact_stitching``).
        tile: spatial tile side in input pixels; None picks one from ``memory_budget``, 0 disables tiling.
        tile_overlap: overlap between neighbouring tiles, in input pixels.
        memory_budget: bytes one model pass may use; None = a share of the device's free memory.
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA only); reduced precision runs under autocast.
        ensemble: model passes per chunk over mirrored copies, averaged: 1 (off), 2 or 4; each pass
            costs one more model run (``pipeline/ensemble.py``).
        scene_detect: reset the temporal context at hard cuts.
        scene_threshold: histogram distance in (0, 1] above which a frame change is a cut.
        start: restore from this time (seconds), None = from the first frame.
        end: restore up to this time (seconds, exclusive), None = to the last frame.
        compare: also write a side-by-side (bicubic | restored) video to this path.
        overwrite: replace an existing output (never the input).
        encode: the video layer's ``EncodeOptions`` (codec, quality, pixel format); None = its defaults.
        io_threads: decode ahead of the model and encode behind it on background threads
            (``pipeline/stream.py``); False does both in the model's thread. The output is the same.
        queue_depth: frames each background queue holds (decoded frames waiting for the model, restored
            frames waiting for the encoder); bounds their memory. None: one chunk (``--chunk``), which lets
            the decoder read the whole next chunk and the encoder take a whole pass's outputs while the
            model runs.
        resume: continue an interrupted run from the segments kept in the output's work folder
            (``pipeline/resume.py``); not with ``compare``.
    """

    scale: float = 4.0
    chunk: int | None = None
    overlap: int | None = None
    tile: int | None = None
    tile_overlap: int = 16
    memory_budget: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    ensemble: int = 1
    scene_detect: bool = False
    scene_threshold: float = 0.5
    start: float | None = None
    end: float | None = None
    compare: Path | None = None
    overwrite: bool = False
    encode: Any = field(default=None)
    io_threads: bool = True
    queue_depth: int | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.scale <= 16:
            raise ConfigError(f"--scale must be in (0, 16], got {self.scale}")
        if self.chunk is not None and self.chunk < 1:
            raise ConfigError(f"--chunk must be >= 1, got {self.chunk}")
        if self.overlap is not None and self.overlap < 0:
            raise ConfigError(f"--overlap must be >= 0, got {self.overlap}")
        if self.tile is not None and self.tile < 0:
            raise ConfigError(f"--tile must be >= 0 (0 = no tiling), got {self.tile}")
        if self.tile_overlap < 0:
            raise ConfigError(f"--tile-overlap must be >= 0, got {self.tile_overlap}")
        if self.tile and self.tile_overlap >= self.tile:
            raise ConfigError(
                f"--tile-overlap ({self.tile_overlap}) must be smaller than --tile ({self.tile})"
            )
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise ConfigError(f"memory budget must be positive, got {self.memory_budget}")
        check_device_spec(self.device)
        check_precision_spec(self.precision, self.device)
        if self.ensemble not in MIRRORS:
            raise ConfigError(
                f"--ensemble must be one of {', '.join(map(str, MIRRORS))}, got {self.ensemble}"
            )
        if not 0 < self.scene_threshold <= 1:
            raise ConfigError(f"scene threshold must be in (0, 1], got {self.scene_threshold}")
        if self.start is not None and self.start < 0:
            raise ConfigError(f"--start must be >= 0 seconds, got {self.start}")
        if self.end is not None and self.end <= (self.start or 0):
            raise ConfigError(f"--end ({self.end}) must be after --start ({self.start or 0})")
        if self.queue_depth is not None and self.queue_depth < 1:
            raise ConfigError(f"--queue-depth must be >= 1, got {self.queue_depth}")
        if self.resume and self.compare is not None:
            raise ConfigError("--compare cannot be resumed: use --resume without --compare")
        if self.compare is not None:
            object.__setattr__(self, "compare", Path(self.compare))


def default_compare_path(output: str | Path) -> Path:
    """Where ``--compare`` writes its side-by-side video: ``<output stem>.compare<suffix>``."""
    out = Path(output)
    return out.with_name(f"{out.stem}.compare{out.suffix or '.mp4'}")
