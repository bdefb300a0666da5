"""Restore every video under a folder into a mirrored folder, with one loaded model.

``restore_folder(in_dir, out_dir, options, model)`` is the library call behind ``fmanetpp restore IN_DIR
OUT_DIR``. It walks ``in_dir`` (recursively, hidden files and folders skipped, symlinked folders not
followed), keeps the files that look like videos (or match ``glob``), and restores each one with
:func:`~fmanetpp_cli.pipeline.runner.restore_video` into the same relative place under ``out_dir``.

Safety rules, checked before anything is written:

- the input folder is never written to: ``out_dir`` may not be ``in_dir`` or lie inside it, no single
  output (after resolving symlinks) may land inside ``in_dir``, and neither may the JSON report;
- outputs never escape ``out_dir``: every output path is resolved (symlinks in ``out_dir`` included) and
  must stay inside the resolved ``out_dir``; relative paths with ``..`` are refused;
- outputs are written atomically by the video layer (temp file beside, rename when verified), so an
  interrupted run leaves no half-written file and ``skip_existing`` can safely continue where it stopped.

A file that fails (unreadable, not a video, an encoder error, even an unexpected exception) is recorded
with its reason and the batch goes on; ``KeyboardInterrupt`` stops it. The :class:`BatchReport` lists every
file as ``ok`` / ``skipped`` / ``failed``; its ``exit_code`` is 0 when nothing failed and 1 otherwise
(the CLI's documented exit status).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from torch import nn

from fmanetpp_cli._files import write_bytes_atomic
from fmanetpp_cli.errors import ConfigError, FMANetError, VideoOpenError
from fmanetpp_cli.pipeline.options import RestoreOptions
from fmanetpp_cli.pipeline.runner import ProgressFn, RestoreReport, restore_video
from fmanetpp_cli.video import VideoInfo

_logger = logging.getLogger(__name__)

# Extensions taken as videos when no --glob is given (lower case).
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".ts", ".mts",
     ".m2ts", ".3gp", ".ogv", ".y4m", ".mxf", ".vob"}
)  # fmt: skip
# Output containers that keep the input's extension; any other input is written as Matroska, which holds
# nearly every audio and subtitle codec (WebM is left out: it cannot hold the default H.264 encoder).
KEEP_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv"})
DEFAULT_EXTENSION = ".mkv"

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclass(frozen=True)
class BatchTask:
    """One planned file: where it comes from, where it goes, and what is known before restoring it.

    Attributes:
        input: the source file (inside ``in_dir``).
        relative: its path relative to ``in_dir`` (posix separators in reports).
        output: the planned output file (inside ``out_dir``).
        frames: frames the container declares, when known (for the overall progress bar).
        problem: why the file will not be restored (unsafe output, name collision), or None.
        info: the file's probe, when it succeeded (handed to the restore, which need not probe again).
    """

    input: Path
    relative: PurePosixPath
    output: Path
    frames: int | None = None
    problem: str | None = None
    info: VideoInfo | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class BatchItem:
    """The outcome for one file.

    Attributes:
        input: the source file.
        output: the output file (written when ``status == "ok"``).
        status: ``"ok"``, ``"skipped"`` or ``"failed"``.
        reason: why it was skipped or failed (one line), empty when ok.
        frames: frames restored.
        seconds: wall time spent on this file.
        report: the single-file report when restored.
    """

    input: Path
    output: Path
    status: str
    reason: str = ""
    frames: int = 0
    seconds: float = 0.0
    report: RestoreReport | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "input": str(self.input),
            "output": str(self.output),
            "status": self.status,
            "reason": self.reason,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class BatchReport:
    """Every file of a folder run and its outcome.

    Attributes:
        in_dir: the input folder.
        out_dir: the output folder.
        items: one entry per file found, in processing order.
        seconds: wall time of the whole run.
    """

    in_dir: Path
    out_dir: Path
    items: tuple[BatchItem, ...]
    seconds: float

    def count(self, status: str) -> int:
        """How many files ended with ``status``."""
        return sum(1 for item in self.items if item.status == status)

    @property
    def frames(self) -> int:
        """Frames restored over all files."""
        return sum(item.frames for item in self.items)

    @property
    def exit_code(self) -> int:
        """0 when no file failed (skipped files are fine), 1 when at least one failed."""
        return 1 if self.count(FAILED) else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for ``--report`` and ``--json``."""
        return {
            "in_dir": str(self.in_dir),
            "out_dir": str(self.out_dir),
            "files": len(self.items),
            "ok": self.count(OK),
            "skipped": self.count(SKIPPED),
            "failed": self.count(FAILED),
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
            "items": [item.to_dict() for item in self.items],
        }


@dataclass
class BatchCallbacks:
    """Optional hooks for progress display (all plain callables; the CLI turns them into rich bars).

    Attributes:
        on_plan: called once with every planned task (totals for an overall bar).
        on_file: called before each file with its task and 0-based position.
        on_progress: per-file frame progress ``(done, total | None)``, as ``restore_video`` reports it.
        on_result: called after each file with its outcome.
    """

    on_plan: Callable[[list[BatchTask]], None] | None = None
    on_file: Callable[[BatchTask, int], None] | None = None
    on_progress: ProgressFn | None = None
    on_result: Callable[[BatchItem], None] | None = None


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def find_videos(in_dir: Path, glob: str | None = None) -> list[Path]:
    """Files under ``in_dir`` to restore, sorted by relative path.

    Hidden files and folders (name starting with ".") are skipped and symlinked folders are not followed
    (so the walk cannot loop or leave ``in_dir``). Without ``glob`` a file is taken when its extension is
    in :data:`VIDEO_EXTENSIONS`; with ``glob`` when its path relative to ``in_dir`` matches the pattern from
    the right (``PurePath.match``: ``*.mp4`` matches at any depth, ``day1/*.mov`` only in folders called
    ``day1``).
    """
    found: list[Path] = []
    for root, dirs, files in os.walk(in_dir, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root) / name
            rel = PurePosixPath(path.relative_to(in_dir).as_posix())
            if glob is not None:
                if rel.match(glob):
                    found.append(path)
            elif path.suffix.lower() in VIDEO_EXTENSIONS:
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(in_dir).as_posix())


def output_for(relative: PurePosixPath, out_dir: Path, extension: str | None = None) -> Path:
    """Where a file at ``relative`` (inside the input folder) goes inside ``out_dir``.

    The extension is ``extension`` when given, else the input's when it is a container we write
    (:data:`KEEP_EXTENSIONS`), else :data:`DEFAULT_EXTENSION`.
    """
    if relative.is_absolute() or ".." in relative.parts:
        raise ConfigError(f"{relative}: relative paths with '..' or absolute paths are refused")
    suffix = extension or (relative.suffix.lower() if relative.suffix.lower() in KEEP_EXTENSIONS else None)
    return out_dir.joinpath(*relative.with_suffix(suffix or DEFAULT_EXTENSION).parts)


def _normalise_extension(extension: str | None) -> str | None:
    if extension is None:
        return None
    ext = extension if extension.startswith(".") else f".{extension}"
    if ext.lower() not in (*KEEP_EXTENSIONS, ".webm"):
        raise ConfigError(f"--ext {extension!r}: use one of .mp4, .m4v, .mov, .mkv, .webm")
    return ext.lower()


def check_folders(in_dir: Path, out_dir: Path, report_path: Path | None = None) -> tuple[Path, Path]:
    """Validate the two folders (and the report's place); return them resolved.

    Raises:
        VideoOpenError: ``in_dir`` is missing or not a folder.
        ConfigError: ``out_dir`` is ``in_dir``, lies inside it, is a file, or the report would be written
            into the input folder.
    """
    if not in_dir.exists():
        raise VideoOpenError(f"{in_dir}: no such folder")
    if not in_dir.is_dir():
        raise VideoOpenError(f"{in_dir}: not a folder")
    src = in_dir.resolve()
    dst = out_dir.resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a folder")
    if _is_within(dst, src):
        where = "the input folder" if dst == src else "inside the input folder"
        raise ConfigError(
            f"{out_dir}: the output folder is {where} {in_dir}; the input folder is never written to"
        )
    if report_path is not None and _is_within(report_path.resolve(), src):
        raise ConfigError(f"{report_path}: the report would be written into the input folder {in_dir}")
    return src, dst


def validate_folder_run(
    in_dir: Path,
    out_dir: Path,
    options: RestoreOptions,
    *,
    skip_existing: bool = False,
    report_path: Path | None = None,
    extension: str | None = None,
) -> tuple[Path, Path, str | None]:
    """The checks :func:`restore_folder` makes before touching a file or loading a model.

    Returns:
        The resolved input and output folders, and the normalised extension.

    Raises:
        VideoOpenError / ConfigError: as :func:`check_folders`, plus ``compare`` set, ``skip_existing`` with
            ``overwrite``, or a bad ``extension``.
    """
    if options.compare is not None:
        raise ConfigError("--compare is for single files; it is not available when restoring a folder")
    if skip_existing and options.overwrite:
        raise ConfigError("--skip-existing and --overwrite contradict each other; choose one")
    ext = _normalise_extension(extension)
    src, dst = check_folders(in_dir, out_dir, report_path)
    return src, dst, ext


def plan_folder(
    in_dir: Path,
    out_dir: Path,
    *,
    glob: str | None = None,
    extension: str | None = None,
    probe_frames: bool = True,
) -> list[BatchTask]:
    """Every file to process and its output, with unsafe or colliding outputs marked as problems."""
    src, dst = check_folders(in_dir, out_dir)
    return _plan_tasks(in_dir, out_dir, src, dst, glob, _normalise_extension(extension), probe_frames)


def _plan_tasks(
    in_dir: Path,
    out_dir: Path,
    src: Path,
    dst: Path,
    glob: str | None,
    ext: str | None,
    probe_frames: bool,
) -> list[BatchTask]:
    """:func:`plan_folder` on checked folders (``src``, ``dst``: resolved) and a normalised ``ext``."""
    from fmanetpp_cli.video import probe

    tasks: list[BatchTask] = []
    claimed: dict[Path, Path] = {}
    for path in find_videos(in_dir, glob):
        rel = PurePosixPath(path.relative_to(in_dir).as_posix())
        output = output_for(rel, out_dir, ext)
        problem: str | None = None
        target = output.resolve()  # follows symlinks already present under out_dir
        if not _is_within(target, dst):
            problem = f"output {output} resolves to {target}, outside the output folder {out_dir}"
        elif _is_within(target, src):
            problem = f"output {output} resolves into the input folder {in_dir}"
        elif target in claimed:
            problem = f"output {output} is also the output of {claimed[target]}"
        else:
            claimed[target] = path
        info = None
        if probe_frames and problem is None:
            try:
                info = probe(path)
            except (FMANetError, OSError):
                info = None  # the restore probes again and reports the problem with the file itself
        frames = info.expected_frames if info is not None else None
        tasks.append(BatchTask(path, rel, output, frames, problem, info))
    return tasks


def write_report(report: BatchReport, path: Path) -> None:
    """Write the JSON report atomically (temp file beside it, then rename)."""
    write_bytes_atomic(path, (json.dumps(report.to_dict(), indent=2) + "\n").encode())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, FMANetError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def restore_folder(
    in_dir: str | Path,
    out_dir: str | Path,
    options: RestoreOptions | None = None,
    model: nn.Module | Callable[[], nn.Module] | None = None,
    *,
    glob: str | None = None,
    skip_existing: bool = False,
    extension: str | None = None,
    report_path: str | Path | None = None,
    callbacks: BatchCallbacks | None = None,
) -> BatchReport:
    """Restore every video under ``in_dir`` into the mirrored place under ``out_dir`` with one model.

    Args:
        in_dir: the input folder (never written to).
        out_dir: the output folder (created when missing; must not be or lie inside ``in_dir``).
        options: runtime options for every file (``overwrite`` replaces existing outputs); ``compare``
            must be None (side-by-side videos are a single-file feature).
        model: the loaded network, used for every file, or a function that loads it (called once, after
            the folders and options are checked, so that a bad argument fails before any weights load).
        glob: only files whose relative path matches (see :func:`find_videos`); default: video extensions.
        skip_existing: an existing output is skipped (continue an interrupted run) instead of failing.
        extension: output extension for every file (default: see :func:`output_for`).
        report_path: also write the JSON report there, updated after every file.
        callbacks: progress hooks.

    Returns:
        The :class:`BatchReport` (``exit_code`` 0 when nothing failed, else 1).

    Raises:
        VideoOpenError: ``in_dir`` missing or not a folder.
        ConfigError: unsafe folders or report path, a bad extension, ``compare`` set, or no model.
    """
    if model is None:
        raise ConfigError("restore_folder needs a loaded model")
    opts = options if options is not None else RestoreOptions()
    in_path, out_path = Path(in_dir), Path(out_dir)
    report_file = Path(report_path) if report_path is not None else None
    src, dst, ext = validate_folder_run(
        in_path, out_path, opts, skip_existing=skip_existing, report_path=report_file, extension=extension
    )
    network = model if isinstance(model, nn.Module) else model()
    hooks = callbacks or BatchCallbacks()
    started = time.perf_counter()
    tasks = _plan_tasks(in_path, out_path, src, dst, glob, ext, probe_frames=True)
    if hooks.on_plan is not None:
        hooks.on_plan(tasks)
    items: list[BatchItem] = []

    def snapshot() -> BatchReport:
        return BatchReport(in_path, out_path, tuple(items), time.perf_counter() - started)

    for index, task in enumerate(tasks):
        if hooks.on_file is not None:
            hooks.on_file(task, index)
        item = _process(task, opts, network, skip_existing, hooks.on_progress)
        items.append(item)
        _logger.info("%s: %s %s", task.relative, item.status, item.reason)
        if hooks.on_result is not None:
            hooks.on_result(item)
        if report_file is not None:
            write_report(snapshot(), report_file)
    report = snapshot()
    if report_file is not None:
        write_report(report, report_file)
    return report


def _process(
    task: BatchTask,
    options: RestoreOptions,
    model: nn.Module,
    skip_existing: bool,
    on_progress: ProgressFn | None,
) -> BatchItem:
    base = BatchItem(task.input, task.output, FAILED)
    if task.problem is not None:
        return replace(base, reason=task.problem)
    if task.output.exists() and not options.overwrite:
        if skip_existing:
            return replace(base, status=SKIPPED, reason="output exists")
        return replace(base, reason=f"{task.output}: exists (use --skip-existing or --overwrite)")
    started = time.perf_counter()
    try:
        task.output.parent.mkdir(parents=True, exist_ok=True)
        report = restore_video(
            task.input, task.output, options, model, on_progress=on_progress, info=task.info
        )
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch; the reason is kept
        _logger.debug("%s failed", task.input, exc_info=True)
        return replace(base, reason=_one_line(e), seconds=time.perf_counter() - started)
    return BatchItem(
        task.input,
        task.output,
        OK,
        frames=report.frames,
        seconds=time.perf_counter() - started,
        report=report,
    )
