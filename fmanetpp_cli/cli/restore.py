"""`fmanetpp restore IN OUT`: restore a video (x4 super-resolution and deblurring), streaming.

The command parses its flags into ``RestoreOptions``, resolves and loads the weights once, and calls
``restore_one``, which wraps the one library call ``pipeline.restore_video`` with a progress bar and a
closing summary. When INPUT is a folder it calls ``cli._batch.restore_directory`` instead, which runs the
library's ``pipeline.batch.restore_folder`` with the same loaded model for every file.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import MofNCompleteColumn, TaskProgressColumn, TextColumn
from torch import nn

from fmanetpp_cli.cli._console import err, out, progress_bars
from fmanetpp_cli.cli.options import JsonOpt, OfflineOpt, OverwriteOpt
from fmanetpp_cli.errors import ConfigError
from fmanetpp_cli.pipeline import RestoreOptions, RestoreReport, default_compare_path, restore_video
from fmanetpp_cli.pipeline.distributed import DEFAULT_CPUS_PER_WORKER, RayCluster
from fmanetpp_cli.video import EncodeOptions, VideoInfo, probe

_TIME_RE = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)$")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d*)?)\s*([KMGT]?)i?B?$", re.IGNORECASE)


def parse_time(text: str | None, flag: str) -> float | None:
    """Seconds from ``SS[.ff]``, ``MM:SS[.ff]`` or ``HH:MM:SS[.ff]``."""
    if text is None:
        return None
    m = _TIME_RE.match(text.strip())
    if not m:
        raise ConfigError(f"{flag} {text!r}: use seconds (12.5), MM:SS or HH:MM:SS")
    parts = [p for p in m.groups() if p is not None]
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + float(p)
    return seconds


def parse_size(text: str | None) -> int | None:
    """Bytes from ``512M``, ``2G``, ``1.5GiB``, or a plain number of bytes."""
    if text is None:
        return None
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise ConfigError(f"--memory-budget {text!r}: use a size such as 512M or 2G")
    factor = 1024 ** " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * factor)


def parse_tile(text: str) -> int | None:
    """``auto`` -> None, ``0`` / ``off`` -> 0, else a positive tile side."""
    value = text.strip().lower()
    if value == "auto":
        return None
    if value in ("0", "off", "none"):
        return 0
    if not value.isdigit():
        raise ConfigError(f"--tile {text!r}: use auto, off or a number of pixels")
    return int(value)


class _ProgressBar:
    """A rich progress bar on stderr fed by ``on_progress(done, total)``.

    It appears with the first restored frame and disappears when the restore ends (the summary, or the
    one-line error, is what stays on screen).
    """

    def __init__(self, label: str) -> None:
        self.progress = progress_bars(
            MofNCompleteColumn(), TaskProgressColumn(), TextColumn("{task.fields[fps]} fps"),
            spinner=True, transient=True,
        )  # fmt: skip
        self.task = self.progress.add_task(label, total=None, fps="-")
        self.started = False

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()

    def __call__(self, done: int, total: int | None) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        task = self.progress.tasks[0]
        # The container's count is an estimate for some formats: never let the bar overflow.
        shown_total = None if total is None else max(total, done)
        speed = task.speed
        self.progress.update(
            self.task, completed=done, total=shown_total, fps=f"{speed:.2f}" if speed else "-"
        )


def _human(size: int) -> str:
    """``15.8 KB``, ``3.4 GB``: a file size for people."""
    value = float(size)
    for unit in ("bytes", "KB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def render_summary(report: RestoreReport) -> None:
    """The closing summary, on stdout."""
    w = report.write
    streams = []
    if w.audio_copied or w.audio_transcoded:
        recoded = f", {w.audio_transcoded} re-encoded" if w.audio_transcoded else ""
        streams.append(f"{w.audio_copied} audio copied{recoded}")
    if w.subtitles_copied:
        streams.append(f"{w.subtitles_copied} subtitle")
    tile = f"tiles {report.tile}px" if report.tile else "whole frames"
    out.print(
        f"[bold green]restored[/] {report.frames} frames {report.width}x{report.height} -> "
        f"{report.out_width}x{report.out_height} in {report.seconds:.1f} s ({report.fps:.2f} fps, "
        f"model {report.model_seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"  output   {report.output}  ({w.codec}, {w.pix_fmt}, {_human(w.size_bytes)})",
        highlight=False,
        soft_wrap=True,
    )
    if report.compare is not None:
        out.print(f"  compare  {report.compare}", highlight=False, soft_wrap=True)
    out.print(
        f"  model    {report.temporal_mode}, chunk {report.chunk}, overlap {report.overlap}, {tile}, "
        f"{report.device} {report.precision}"
        + (f", self-ensemble x{report.ensemble}" if report.ensemble > 1 else "")
        + (f", {len(report.scene_cuts)} scene cut(s)" if report.scene_cuts else ""),
        highlight=False,
        soft_wrap=True,
    )
    if streams:
        out.print("  streams  " + "; ".join(streams), highlight=False, soft_wrap=True)
    for line in report.warnings:
        err.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)


def restore_one(
    input: Path,
    output: Path,
    options: RestoreOptions,
    model: nn.Module,
    *,
    quiet: bool = False,
    as_json: bool = False,
    info: VideoInfo | None = None,
    cluster: RayCluster | None = None,
) -> RestoreReport:
    """Restore one file with an already loaded model, showing progress and the summary.

    ``info`` is the input's probe when the caller has it (passed on, so the file is probed once);
    ``cluster`` splits the video over Ray workers.
    """
    run = restore_video
    if cluster is not None:
        from fmanetpp_cli.pipeline.distributed import restore_video_ray

        run = functools.partial(restore_video_ray, cluster=cluster)
    if quiet:
        report = run(input, output, options, model, info=info)
    else:
        with _ProgressBar(input.name) as bar:
            report = run(input, output, options, model, on_progress=bar, info=info)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    elif not quiet:
        render_summary(report)
    return report


def restore_command(
    input: Annotated[
        Path, typer.Argument(help="The video to restore, or a folder of videos.", show_default=False)
    ],
    output: Annotated[
        Path,
        typer.Argument(
            help="The file to write (.mp4, .m4v, .mov, .mkv, .webm), or the output folder.",
            show_default=False,
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="A model name, a weights file or a Hub repository id (owner/name). "
            "Default: the bundled model.",
            show_default=False,
        ),
    ] = None,
    weights: Annotated[
        str | None, typer.Option("--weights", "-w", help="A .safetensors weights file.", show_default=False)
    ] = None,
    scale: Annotated[
        float,
        typer.Option(
            "--scale",
            "-s",
            help="Output size over input size. 4 is native (exactly 4x each side); other values resample "
            "the x4 result with an antialiased bicubic filter, sizes rounded to even numbers.",
        ),
    ] = 4.0,
    chunk: Annotated[
        int | None,
        typer.Option(
            "--chunk",
            help="Input frames per model pass. Default: 10 for FMA-Net (window) models, "
            "max(32, 4 x overlap + 1) for FMA-Net++ (sequence) models.",
            show_default=False,
        ),
    ] = None,
    overlap: Annotated[
        int | None,
        typer.Option(
            "--overlap",
            help="Context frames shared by neighbouring chunks (sequence models). Default: the model's "
            "temporal radius, which makes the result equal to one pass over the whole clip.",
            show_default=False,
        ),
    ] = None,
    tile: Annotated[
        str,
        typer.Option(
            "--tile",
            help="Spatial tile side in input pixels: auto (from --memory-budget), off, or a number.",
        ),
    ] = "auto",
    tile_overlap: Annotated[int, typer.Option("--tile-overlap", help="Tile overlap in input pixels.")] = 16,
    memory_budget: Annotated[
        str | None,
        typer.Option(
            "--memory-budget",
            help="Memory for one model pass and its outputs, e.g. 2G. "
            "Default: half the free memory (at most 16G on CPU).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")
    ] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="fp32, bf16, or fp16 (CUDA only).")] = "fp32",
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="Torch CPU threads. Default: the fastest of 1, 2, 4, ... cores, measured by a short probe "
            "at start (on a loaded machine one thread is often several times faster than two).",
            show_default=False,
        ),
    ] = None,
    io_threads: Annotated[
        bool,
        typer.Option(
            "--io-threads/--no-io-threads",
            help="Decode ahead of the model and encode behind it on background threads (same output).",
            metavar="",
        ),
    ] = True,
    queue_depth: Annotated[
        int | None,
        typer.Option(
            "--queue-depth",
            help="Frames each background queue (decode, encode) holds. Default: one chunk.",
            show_default=False,
        ),
    ] = None,
    ensemble: Annotated[
        int,
        typer.Option(
            "--ensemble",
            help="Average 2 or 4 model passes over mirrored copies of each chunk (2x or 4x slower).",
        ),
    ] = 1,
    scene_detect: Annotated[
        bool, typer.Option("--scene-detect", help="Reset the temporal context at hard cuts.", metavar="")
    ] = False,
    scene_threshold: Annotated[
        float,
        typer.Option(
            "--scene-threshold",
            help="Colour-histogram change (0-1) above which --scene-detect sees a cut; lower finds more.",
        ),
    ] = 0.5,
    start: Annotated[
        str | None,
        typer.Option(
            "--start", help="Restore from this time (seconds, MM:SS or HH:MM:SS).", show_default=False
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--end", help="Restore up to this time (exclusive).", show_default=False),
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Also write <output stem>.compare<ext>: bicubic | restored, side by side.",
            metavar="",
        ),
    ] = False,
    codec: Annotated[
        str, typer.Option("--codec", help="Video encoder: libx264, libx265, ffv1 (lossless), *_nvenc.")
    ] = "libx264",
    crf: Annotated[
        int | None,
        typer.Option(
            "--crf", help="Constant quality (lower is better). Default: the codec's.", show_default=False
        ),
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="Encoder speed preset.", show_default=False)
    ] = None,
    overwrite: OverwriteOpt = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted run of the same command from the segments it kept in the hidden "
            "work folder beside OUTPUT (same input, model and options, or it is refused). Folder mode: "
            "for each file.",
            metavar="",
        ),
    ] = False,
    offline: OfflineOpt = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.", metavar="")
    ] = False,
    as_json: JsonOpt = False,
    glob: Annotated[
        str | None,
        typer.Option(
            "--glob",
            help="Folder mode: only files whose relative path matches, e.g. '*.mov'.",
            show_default=False,
        ),
    ] = None,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="Folder mode: skip files whose output exists (resume a run).",
            metavar="",
        ),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", help="Folder mode: also write the per-file results as JSON.", show_default=False
        ),
    ] = None,
    ext: Annotated[
        str | None,
        typer.Option(
            "--ext",
            help="Folder mode: output extension (default: the input's for mp4/m4v/mov/mkv, else mkv).",
            show_default=False,
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run on Ray workers (the ray extra): 'auto' (the running cluster, else a local one) or "
            "the head's address HOST:PORT. A folder: one file per worker; a file: split into segments.",
            show_default=False,
        ),
    ] = None,
    ray_cpus: Annotated[
        int,
        typer.Option("--ray-cpus", help="With --ray on CPUs: cores per worker (one worker per GPU else)."),
    ] = DEFAULT_CPUS_PER_WORKER,
) -> None:
    """Restore a video: joint x4 super-resolution and deblurring, audio and subtitles kept.

    Folder mode, `fmanetpp restore IN_DIR OUT_DIR`: every video under IN_DIR (recursively; --glob to filter)
    is restored to the same relative path under OUT_DIR with the model loaded once. IN_DIR is never written
    to; outputs never leave OUT_DIR. A failing file does not stop the run, which ends with a table of every
    file (ok / skipped / failed and why). Exit status: 0 when every file is ok or skipped, 1 when some
    failed (and 1 for a bad argument, before anything is processed).
    """
    from fmanetpp_cli.checkpoints import load_model
    from fmanetpp_cli.checkpoints.resolve import resolve_weights
    from fmanetpp_cli.runtime import ThreadChoice, set_threads, tune_allocator

    tune_allocator()

    def threads_note(choice: ThreadChoice) -> None:
        """After a finished run (so that an error stays the only line on stderr): the threads used."""
        if not quiet and not as_json:
            timed = ", ".join(f"{n}: {t * 1e3:.0f} ms" for n, t in choice.probe_seconds.items())
            err.print(f"threads {choice.threads}" + (f" (probe: {timed})" if timed else ""), highlight=False)

    options = RestoreOptions(
        scale=scale,
        chunk=chunk,
        overlap=overlap,
        tile=parse_tile(tile),
        tile_overlap=tile_overlap,
        memory_budget=parse_size(memory_budget),
        device=device,
        precision=precision,
        ensemble=ensemble,
        scene_detect=scene_detect,
        scene_threshold=scene_threshold,
        start=parse_time(start, "--start"),
        end=parse_time(end, "--end"),
        compare=default_compare_path(output) if compare else None,
        overwrite=overwrite,
        encode=EncodeOptions(codec=codec, crf=crf, preset=preset),
        io_threads=io_threads,
        queue_depth=queue_depth,
        resume=resume,
    )

    def load() -> nn.Module:
        return load_model(resolve_weights(model, weights, offline=offline or None), device="cpu")

    cluster = RayCluster(address=ray, cpus_per_worker=ray_cpus) if ray is not None else None

    if input.is_dir():
        from fmanetpp_cli.cli._batch import restore_directory

        # The library checks the folders and options before it calls load().
        choice = set_threads(threads)
        code = restore_directory(
            input, output, options, load, glob=glob, skip_existing=skip_existing, extension=ext,
            report_path=report, quiet=quiet, as_json=as_json, cluster=cluster,
        )  # fmt: skip
        threads_note(choice)
        raise typer.Exit(code)
    if glob is not None or skip_existing or report is not None or ext is not None:
        raise ConfigError("--glob, --skip-existing, --report and --ext apply only when INPUT is a folder")
    info = probe(input)  # a bad input fails here, before any weights are fetched or loaded
    choice = set_threads(threads)
    restore_one(input, output, options, load(), quiet=quiet, as_json=as_json, info=info, cluster=cluster)
    threads_note(choice)


def register(app: typer.Typer) -> None:
    """Add ``restore`` to the application."""
    app.command("restore", no_args_is_help=True)(restore_command)
