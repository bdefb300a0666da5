"""The streaming restore loop: reader -> scene cuts -> temporal chunks -> (tiles) -> model -> writer.

``restore_video`` is the one library call behind ``fmanetpp restore``. It decodes in-process (PyAV,
threaded) and holds at most one chunk of decoded frames plus two bounded queues: decoding runs ahead of
the model and encoding behind it on background threads (``stream.py``; ``io_threads=False`` keeps both
in the model's thread, with the same output). Each restored frame is written with its source
timestamp, so N frames in give N frames out, in order, with the same timing (variable frame rate
included); audio, subtitles and metadata are copied by the video layer, and the output is committed
atomically. Memory is bounded by the chunk and tile sizes, never by the video's length.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fmanetpp_cli.errors import UnsupportedVideoError
from fmanetpp_cli.frames import tensor_to_frames
from fmanetpp_cli.pipeline.device import check_precision, default_memory_budget, select_device
from fmanetpp_cli.pipeline.engine import ChunkRestorer, frames_to_tensor, measure_bytes_per_pixel
from fmanetpp_cli.pipeline.oom import PassStats, restore_in_passes
from fmanetpp_cli.pipeline.options import RestoreOptions
from fmanetpp_cli.pipeline.plan import model_traits, plan_restore
from fmanetpp_cli.pipeline.resume import SegmentSink, TileState, WorkFolder, fingerprint
from fmanetpp_cli.pipeline.scenes import SceneCutDetector
from fmanetpp_cli.pipeline.stream import BackgroundWriter, Prefetcher, StageTimes
from fmanetpp_cli.pipeline.windows import Chunk, ChunkPlanner
from fmanetpp_cli.video import (
    EncodeOptions,
    Frame,
    VideoInfo,
    VideoReader,
    VideoWriter,
    WriteResult,
    check_output,
    probe,
)

_logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int | None], None]


@dataclass(frozen=True)
class RestoreReport:
    """What ``restore_video`` did.

    Attributes:
        input: the source video.
        output: the restored video.
        compare: the side-by-side video, when one was written.
        frames: frames restored (= frames read = frames written, checked in the written file).
        width: input frame width.
        height: input frame height.
        out_width: output frame width (before the writer applies any rotation).
        out_height: output frame height.
        scale: requested scale.
        model_scale: the model's native scale.
        temporal_mode: ``"window"`` or ``"sequence"``.
        chunk: input frames per model pass.
        overlap: context frames at each chunk seam.
        exact_stitching: True when the overlap covers the model's temporal radius.
        tile: spatial tile side in input pixels (0 = whole frames).
        device: the device the model ran on.
        precision: ``fp32``, ``bf16`` or ``fp16``.
        ensemble: model passes per chunk (mirrored copies averaged; 1 = off).
        scene_cuts: indices (in the restored range) of the frames that start a new scene.
        seconds: wall time of the whole restore.
        model_seconds: time spent inside the model's forward passes.
        times: where the rest of ``seconds`` went (start-up, decode, encode, waits; ``stream.StageTimes``).
        write: the video layer's result (codec, pixel format, audio / subtitle streams copied, warnings).
    """

    input: Path
    output: Path
    compare: Path | None
    frames: int
    width: int
    height: int
    out_width: int
    out_height: int
    scale: float
    model_scale: int
    temporal_mode: str
    chunk: int
    overlap: int
    exact_stitching: bool
    tile: int
    device: str
    precision: str
    ensemble: int
    scene_cuts: tuple[int, ...]
    seconds: float
    model_seconds: float
    write: WriteResult
    warnings: tuple[str, ...] = field(default=())
    times: StageTimes = field(default_factory=StageTimes)

    @property
    def fps(self) -> float:
        """Frames restored per second of wall time."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for ``--json``: paths (and anything else not JSON-native) as strings."""
        d = asdict(self)
        d["fps"] = round(self.fps, 3)
        plain: dict[str, Any] = json.loads(json.dumps(d, default=str))
        return plain


def _expected_total(info: VideoInfo, start: float | None, end: float | None) -> int | None:
    """Frames the restore will produce, when the container lets us know (for the progress bar)."""
    if start is None and end is None:
        return info.expected_frames
    if info.duration is None or info.fps <= 0:
        return None
    stop = info.duration if end is None else min(end, info.duration)
    return max(0, round((stop - (start or 0.0)) * float(info.fps)))


class _CompareWriter:
    """Writes ``bicubic | restored`` side by side, for judging a restore at a glance."""

    def __init__(self, writer: VideoWriter, out_height: int, out_width: int, device: torch.device) -> None:
        self.writer = writer
        self.size = (out_height, out_width)
        self.device = device

    def write(self, source: np.ndarray, restored: np.ndarray, pts: int) -> None:
        with torch.inference_mode():
            x = frames_to_tensor([source], self.device)[:, :, 0]  # [1, 3, H, W]
            down = self.size[0] < x.shape[-2] or self.size[1] < x.shape[-1]
            up = F.interpolate(x, size=self.size, mode="bicubic", align_corners=False, antialias=down)
            bicubic = tensor_to_frames(up, source.dtype, overwrite=True)[0]  # [sH, sW, 3]
        self.writer.write(np.concatenate([bicubic, restored], axis=1), pts)  # [sH, 2*sW, 3]


def restore_video(
    input: str | Path,
    output: str | Path,
    options: RestoreOptions | None = None,
    model: nn.Module | None = None,
    on_progress: ProgressFn | None = None,
    *,
    info: VideoInfo | None = None,
) -> RestoreReport:
    """Restore a video file with a loaded model, streaming, and write the result atomically.

    Args:
        input: the source video.
        output: the file to write (its extension picks the container); never the input.
        options: runtime options (defaults: x4, auto device, fp32, automatic tiling).
        model: a restoration network (``fmanetpp_cli.checkpoints.load_model`` or ``create_model``); it is
            moved to the chosen device. Required.
        on_progress: called as ``on_progress(done, total)`` after each written frame; ``total`` is None
            when the container does not say how many frames to expect.
        info: ``probe(input)`` when the caller already has it (it is not probed again).

    Returns:
        The ``RestoreReport``.

    Raises:
        ConfigError: bad options or an option the machine cannot honour (CUDA absent, fp16 on CPU).
        VideoOpenError, UnsupportedVideoError, VideoDecodeError: unreadable or damaged input, naming it.
        OutputExistsError, VideoWriteError: the output cannot be written; no partial file is left behind.
    """
    opts = options if options is not None else RestoreOptions()
    if model is None:
        raise TypeError("restore_video needs a model (load one with fmanetpp_cli.checkpoints.load_model)")
    started = time.perf_counter()
    input_path, output_path = Path(input), Path(output)
    device = select_device(opts.device)
    dtype = check_precision(opts.precision, device)
    traits = model_traits(model)
    model.to(device).eval()  # before the memory probe, as the engine runs it
    info = info if info is not None else probe(input_path)
    encode = opts.encode if opts.encode is not None else EncodeOptions()
    for path in (output_path, opts.compare):
        if path is not None:
            # An existing output fails fast, before the memory probe runs the model.
            check_output(path, input_path, overwrite=opts.overwrite)
    # Without --compare the video is written as segments in a work folder that a stopped run keeps for
    # --resume (``resume.py``); a resumed run restores with the sizes the interrupted one used.
    work: WorkFolder | None = None
    if opts.compare is None:
        work = WorkFolder(output_path, fingerprint(input_path, output_path, model, opts), resume=opts.resume)
    plan = plan_restore(
        traits,
        height=info.height,
        width=info.width,
        options=opts if work is None else work.plan_options(opts),
        device=device,
        dtype=dtype,
        memory_budget=opts.memory_budget or default_memory_budget(device),
        bytes_per_pixel=functools.partial(measure_bytes_per_pixel, model, device=device, dtype=dtype),
    )
    restorer = ChunkRestorer(model, plan)
    if work is not None:
        work.start(plan.chunk, plan.tile, plan.tile_overlap)  # a fresh run only
    resume_from = work.frames_done if work is not None else 0
    warnings = list(plan.warnings)
    planner = ChunkPlanner(chunk=plan.chunk, overlap=plan.overlap, pad=plan.pad)
    out_h, out_w = plan.out_height, plan.out_width

    detector = SceneCutDetector(opts.scene_threshold) if opts.scene_detect else None
    total = _expected_total(info, opts.start, opts.end)
    buffer: dict[int, Frame] = {}
    cuts: list[int] = []
    done = 0
    passes = PassStats()

    with ExitStack() as stack:
        if work is not None:
            stack.enter_context(work)  # exits last: removes the folder, or keeps it for --resume
        reader = stack.enter_context(VideoReader(input_path, start=opts.start, end=opts.end, info=info))
        depth = (opts.queue_depth or plan.chunk) if opts.io_threads else 0
        frames = stack.enter_context(Prefetcher(reader, depth))  # stops before the reader closes (LIFO)

        def open_writer(path: Path, width: int, height: int) -> VideoWriter:
            return VideoWriter(
                path, source=input_path, info=info, options=encode, overwrite=opts.overwrite,
                width=width, height=height, start=opts.start, end=opts.end,
            )  # fmt: skip

        sink: SegmentSink | None = None
        writer: VideoWriter | None = None
        if work is not None:
            sink = SegmentSink(work, info=info, encode=encode, width=out_w, height=out_h, end=opts.end)
            stack.callback(sink.abort)  # runs after the encode thread has stopped (LIFO)
        else:
            writer = stack.enter_context(open_writer(output_path, out_w, out_h))
        compare: _CompareWriter | None = None
        if opts.compare is not None:
            side = stack.enter_context(open_writer(opts.compare, 2 * out_w, out_h))
            compare = _CompareWriter(side, out_h, out_w, device)
        encoder = stack.enter_context(BackgroundWriter(depth))  # exits before the writers (LIFO)

        def emit(index: int, source: np.ndarray, image: np.ndarray, pts: int, tile: TileState) -> None:
            if sink is not None:
                sink.write(index, image, pts, tile)
            elif writer is not None:
                writer.write(image, pts)
            if compare is not None:
                compare.write(source, image, pts)

        def run(chunk: Chunk) -> None:
            nonlocal done
            if chunk.keep_stop <= resume_from:  # every output already in a finished segment
                done += chunk.num_kept
                if on_progress is not None:
                    on_progress(done, total)
                return
            tile = (restorer.tile, restorer.tile_overlap)  # before the memory fallback may shrink it
            images = [buffer[i].image for i in chunk.frames]
            restored = restore_in_passes(
                restorer, images, chunk.offset, chunk.num_kept, context=plan.overlap, stats=passes
            )
            for j, image in enumerate(restored):
                index = chunk.keep_start + j
                frame = buffer[index]
                encoder.submit(functools.partial(emit, index, frame.image, image, frame.pts, tile))
                done += 1
                if on_progress is not None:
                    on_progress(done, total)

        first_frame: float | None = None
        for frame in frames:
            first_frame = first_frame if first_frame is not None else time.perf_counter()
            if frame.image.shape[:2] != (info.height, info.width):
                raise UnsupportedVideoError(
                    f"{input_path}: frame {frame.index} is {frame.image.shape[1]}x{frame.image.shape[0]}, "
                    f"but the stream started at {info.width}x{info.height} (size changes are not supported)"
                )
            cut = detector.is_cut(frame.image) if detector is not None else False
            if cut:
                cuts.append(frame.index)
            buffer[frame.index] = frame
            for chunk in planner.push(new_segment=cut):
                run(chunk)
            for index in [i for i in buffer if i < planner.oldest_needed]:
                del buffer[index]
        for chunk in planner.finish():
            run(chunk)
        buffer.clear()
        encoder.close()
        finishing = time.perf_counter()
        if sink is not None:
            result = sink.join(input_path, start=opts.start, overwrite=opts.overwrite, frames=done)
        else:
            assert writer is not None
            result = writer.commit()
        if compare is not None:
            compare.writer.commit()
        finished = time.perf_counter()

    if restorer.tile_retries:
        warnings.append(
            f"ran out of memory; halved the tile {restorer.tile_retries} time(s) and continued with "
            f"{restorer.tile} px tiles (use --tile {restorer.tile} --tile-overlap {restorer.tile_overlap} "
            "or a smaller --memory-budget next time)"
        )
    if (line := passes.warning()) is not None:
        warnings.append(line)
    times = StageTimes(
        startup=(first_frame or finished) - started,  # the reader raises when it decodes no frame
        decode=frames.busy,
        decode_wait=frames.waited_after_first,  # the first frame's wait is start-up
        encode=encoder.busy,
        encode_wait=encoder.waited,
        finish=finished - finishing,
    )
    return RestoreReport(
        input=input_path,
        output=output_path,
        compare=opts.compare,
        frames=result.frames,
        width=info.width,
        height=info.height,
        out_width=out_w,
        out_height=out_h,
        scale=opts.scale,
        model_scale=restorer.scale,
        temporal_mode=restorer.traits.temporal_mode,
        chunk=plan.chunk,
        overlap=plan.overlap,
        exact_stitching=plan.exact,
        tile=restorer.tile,
        device=str(device),
        precision=opts.precision,
        ensemble=opts.ensemble,
        scene_cuts=tuple(cuts),
        seconds=time.perf_counter() - started,
        model_seconds=restorer.model_seconds,
        write=result,
        warnings=tuple(warnings + result.warnings),
        times=times,
    )
