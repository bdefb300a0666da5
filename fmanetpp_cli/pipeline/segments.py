"""One video split into segments restored elsewhere, then encoded once, in order, by the caller.

The one-process runner cuts a video into temporal chunks (``windows.ChunkPlanner``: each chunk carries the
model's temporal context on both sides) and restores them one after another. A *segment* is a run of
consecutive chunks of that very plan, with the input frames they read (context included). Restoring a
segment's chunks anywhere, with the same ``RestorePlan``, gives exactly the frames the runner would give
for them, so the stitched video is the one-process video frame for frame: segment boundaries are chunk
boundaries, never new seams.

:func:`restore_split` is the driver: it decodes the input (the only reader), detects scene cuts, plans the
chunks online as the runner does, packs them into :class:`SegmentJob`s, hands each to ``submit`` (a Ray
actor, or a plain call), and writes the restored frames it gets back through the normal ``VideoWriter``
with the source timestamps; audio, subtitles and every other stream come from the input, once, as in
``restore_video``. Jobs are pure functions of their frames, so a job whose worker died can simply run again.

The output goes through the same work folder as a one-process restore (``resume.py``): segments of
``resume.SEGMENT_FRAMES`` frames (a unit of the file, unrelated to the jobs' size), joined at the end. So
a stopped split run keeps its finished segments, ``options.resume`` continues it without sending the
chunks those segments hold to any worker, and a run stopped in one mode resumes in the other (same
fingerprint, same segment files).

Shapes: frames are ``[H, W, 3]`` arrays (uint8, or uint16 for >8-bit sources) in, ``[sH, sW, 3]`` out.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from fmanetpp_cli.errors import ConfigError, UnsupportedVideoError
from fmanetpp_cli.pipeline.device import check_precision, default_memory_budget, select_device
from fmanetpp_cli.pipeline.engine import ChunkRestorer, measure_bytes_per_pixel
from fmanetpp_cli.pipeline.oom import PassStats, restore_in_passes
from fmanetpp_cli.pipeline.options import RestoreOptions
from fmanetpp_cli.pipeline.plan import RestorePlan, model_traits, plan_restore
from fmanetpp_cli.pipeline.resume import SegmentSink, WorkFolder, fingerprint
from fmanetpp_cli.pipeline.runner import ProgressFn, RestoreReport, _expected_total
from fmanetpp_cli.pipeline.scenes import SceneCutDetector
from fmanetpp_cli.pipeline.windows import Chunk, ChunkPlanner
from fmanetpp_cli.video import EncodeOptions, VideoInfo, VideoReader, check_output, probe


def plan_for(model: nn.Module, height: int, width: int, options: RestoreOptions) -> RestorePlan:
    """The ``RestorePlan`` a one-process restore would make, made where the model runs (a worker).

    Every worker restores with this one plan (the automatic tile is measured once), which is what keeps
    segments identical to the one-process chunks.
    """
    device = select_device(options.device)
    dtype = check_precision(options.precision, device)
    model.to(device).eval()
    return plan_restore(
        model_traits(model),
        height=height,
        width=width,
        options=options,
        device=device,
        dtype=dtype,
        memory_budget=options.memory_budget or default_memory_budget(device),
        bytes_per_pixel=functools.partial(measure_bytes_per_pixel, model, device=device, dtype=dtype),
    )


@dataclass(frozen=True)
class SegmentResult:
    """A restored segment: output frames ``keep_start .. keep_start + len(frames) - 1``, in order."""

    index: int
    keep_start: int
    frames: tuple[np.ndarray, ...]
    model_seconds: float
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SegmentJob:
    """Restore consecutive chunks of the plan: ``job(model) -> SegmentResult`` (picklable, pure).

    Attributes:
        index: the segment's position in the video.
        plan: the run's plan (the same for every segment).
        chunks: consecutive chunks of the one-process plan.
        first: global index of ``images[0]``.
        images: every input frame the chunks read, ``first`` onwards (context on both sides included).
    """

    index: int
    plan: RestorePlan
    chunks: tuple[Chunk, ...]
    first: int
    images: tuple[np.ndarray, ...] = field(repr=False)

    @property
    def keep_start(self) -> int:
        return self.chunks[0].keep_start

    @property
    def num_kept(self) -> int:
        return sum(c.num_kept for c in self.chunks)

    def __call__(self, model: nn.Module) -> SegmentResult:
        restorer = ChunkRestorer(model, self.plan)
        stats = PassStats()
        out: list[np.ndarray] = []
        for chunk in self.chunks:
            images = [self.images[i - self.first] for i in chunk.frames]
            out.extend(
                restore_in_passes(
                    restorer, images, chunk.offset, chunk.num_kept, context=self.plan.overlap, stats=stats
                )
            )
        notes = [line] if (line := stats.warning()) is not None else []
        if restorer.tile_retries:
            notes.append(f"segment {self.index}: ran out of memory; tiles shrunk to {restorer.tile} px")
        return SegmentResult(self.index, self.keep_start, tuple(out), restorer.model_seconds, tuple(notes))


class _Packer:
    """Groups the planner's chunks into segments of at least ``frames`` kept outputs each."""

    def __init__(self, plan: RestorePlan, frames: int) -> None:
        self.plan = plan
        self.frames = frames
        self.chunks: list[Chunk] = []
        self.count = 0

    @property
    def oldest_needed(self) -> int | None:
        """Smallest frame index the pending chunks read (None when nothing is pending)."""
        return min(self.chunks[0].frames) if self.chunks else None

    def add(self, chunk: Chunk, frames: dict[int, np.ndarray]) -> SegmentJob | None:
        """Take the next chunk; a job when the pending chunks make a segment."""
        self.chunks.append(chunk)
        return self.flush(frames) if sum(c.num_kept for c in self.chunks) >= self.frames else None

    def flush(self, frames: dict[int, np.ndarray]) -> SegmentJob | None:
        """The pending chunks as one job (None when there are none)."""
        if not self.chunks:
            return None
        first = min(min(c.frames) for c in self.chunks)
        last = max(max(c.frames) for c in self.chunks)
        job = SegmentJob(
            self.count, self.plan, tuple(self.chunks), first, tuple(frames[i] for i in range(first, last + 1))
        )
        self.chunks = []
        self.count += 1
        return job


Submit = Callable[[SegmentJob], Any]
Collect = Callable[[Any], SegmentResult]
PlanSource = Callable[[int, int, RestoreOptions], RestorePlan]


def restore_split(
    input: str | Path,
    output: str | Path,
    options: RestoreOptions,
    model: nn.Module,
    plan_source: PlanSource,
    submit: Submit,
    collect: Collect,
    *,
    segment_frames: int | None = None,
    in_flight: int = 4,
    on_progress: ProgressFn | None = None,
    info: VideoInfo | None = None,
) -> RestoreReport:
    """Restore ``input`` into ``output`` segment by segment; segments run wherever ``submit`` sends them.

    Args:
        input: the source video.
        output: the file to write (atomically, through the work folder, as ``restore_video`` does).
        options: the restore's options (``compare`` is not supported here; ``resume`` is).
        model: the network the workers run; here it only gives its pipeline traits and the fingerprint
            of a resumable run (it is not called).
        plan_source: ``plan_source(height, width, options)`` -> the plan every segment uses (``plan_for``
            on a worker); a resumed run passes the sizes the interrupted run used.
        submit: starts one job and returns a handle; ``collect(handle)`` waits for its ``SegmentResult``.
        segment_frames: output frames per job, at least one chunk's (default: four chunks').
        in_flight: jobs submitted and not yet written, at most (bounds the driver's memory).
        on_progress: ``on_progress(done, total)`` after each written job (and once for the frames that
            a resumed run already holds).
        info: ``probe(input)`` when the caller has it.

    Raises:
        ConfigError: ``compare`` set. ResumeError: kept work without ``resume``, or a changed input, model
            or option set. Otherwise as ``restore_video`` (bad input, existing output).
    """
    if options.compare is not None:
        raise ConfigError("--compare is not available when a video is split over workers")
    started = time.perf_counter()
    input_path, output_path = Path(input), Path(output)
    traits = model_traits(model)
    info = info if info is not None else probe(input_path)
    encode = options.encode if options.encode is not None else EncodeOptions()
    check_output(output_path, input_path, overwrite=options.overwrite)
    print_ = fingerprint(input_path, output_path, model, options)
    work = WorkFolder(output_path, print_, resume=options.resume)
    plan = plan_source(info.height, info.width, work.plan_options(options))
    work.start(plan.chunk, plan.tile, plan.tile_overlap)  # a fresh run only
    resume_from = work.frames_done
    planner = ChunkPlanner(chunk=plan.chunk, overlap=plan.overlap, pad=plan.pad)
    per_chunk = max(1, plan.chunk - 2 * plan.overlap)
    packer = _Packer(plan, segment_frames if segment_frames is not None else 4 * per_chunk)
    detector = SceneCutDetector(options.scene_threshold) if options.scene_detect else None
    total = _expected_total(info, options.start, options.end)
    images: dict[int, np.ndarray] = {}
    stamps: dict[int, int] = {}
    cuts: list[int] = []
    pending: deque[Any] = deque()
    model_seconds = 0.0
    notes: list[str] = list(plan.warnings)
    done = 0
    tile = (plan.tile, plan.tile_overlap)  # every job starts from the plan's tile

    with ExitStack() as stack:
        stack.enter_context(work)  # exits last: removes the folder, or keeps it for --resume
        reader = stack.enter_context(VideoReader(input_path, start=options.start, end=options.end, info=info))
        sink = SegmentSink(
            work, info=info, encode=encode, width=plan.out_width, height=plan.out_height, end=options.end
        )
        stack.callback(sink.abort)

        def write_oldest() -> None:
            nonlocal done, model_seconds
            result = collect(pending.popleft())
            for j, image in enumerate(result.frames):
                index = result.keep_start + j
                sink.write(index, image, stamps.pop(index), tile)
            done += len(result.frames)
            model_seconds += result.model_seconds
            notes.extend(result.warnings)
            if on_progress is not None:
                on_progress(done, total)

        def send(job: SegmentJob | None) -> None:
            if job is None:
                return
            while len(pending) >= in_flight:
                write_oldest()
            pending.append(submit(job))

        def take(chunk: Chunk) -> None:
            nonlocal done
            if chunk.keep_stop <= resume_from:  # every output already in a finished segment: not sent
                for index in range(chunk.keep_start, chunk.keep_stop):
                    del stamps[index]
                done += chunk.num_kept
                if on_progress is not None:
                    on_progress(done, total)
                return
            send(packer.add(chunk, images))

        for frame in reader:
            if frame.image.shape[:2] != (info.height, info.width):
                raise UnsupportedVideoError(
                    f"{input_path}: frame {frame.index} is {frame.image.shape[1]}x{frame.image.shape[0]}, "
                    f"but the stream started at {info.width}x{info.height} (size changes are not supported)"
                )
            cut = detector.is_cut(frame.image) if detector is not None else False
            if cut:
                cuts.append(frame.index)
            images[frame.index] = frame.image
            stamps[frame.index] = frame.pts
            for chunk in planner.push(new_segment=cut):
                take(chunk)
            pending_first = packer.oldest_needed
            oldest = (
                planner.oldest_needed if pending_first is None else min(planner.oldest_needed, pending_first)
            )
            for index in [i for i in images if i < oldest]:
                del images[index]
        for chunk in planner.finish():
            take(chunk)
        send(packer.flush(images))
        images.clear()
        while pending:
            write_oldest()
        result = sink.join(input_path, start=options.start, overwrite=options.overwrite, frames=done)

    return RestoreReport(
        input=input_path,
        output=output_path,
        compare=None,
        frames=result.frames,
        width=info.width,
        height=info.height,
        out_width=plan.out_width,
        out_height=plan.out_height,
        scale=options.scale,
        model_scale=traits.scale,
        temporal_mode=traits.temporal_mode,
        chunk=plan.chunk,
        overlap=plan.overlap,
        exact_stitching=plan.exact,
        tile=plan.tile,
        device=str(plan.device),
        precision=options.precision,
        ensemble=options.ensemble,
        scene_cuts=tuple(cuts),
        seconds=time.perf_counter() - started,
        model_seconds=model_seconds,
        write=result,
        warnings=tuple(notes + result.warnings),
    )
