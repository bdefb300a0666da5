"""`fmanetpp restore IN_DIR OUT_DIR`: the folder side of the restore command (rendering only).

``restore_directory`` calls the library's ``pipeline.batch.restore_folder`` once, shows an overall progress
bar (files and frames) above the current file's bar on stderr, and ends with a table of every file (ok /
skipped / failed and why). It returns the documented exit status: 0 when no file failed, 1 otherwise.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import typer
from rich.progress import MofNCompleteColumn, TaskID, TextColumn
from rich.table import Table
from rich.text import Text
from torch import nn

from fmanetpp_cli.cli._console import err, out, progress_bars
from fmanetpp_cli.pipeline import RestoreOptions
from fmanetpp_cli.pipeline.batch import (
    FAILED,
    OK,
    SKIPPED,
    BatchCallbacks,
    BatchItem,
    BatchReport,
    BatchTask,
    restore_folder,
)
from fmanetpp_cli.pipeline.distributed import RayCluster

_STYLE = {OK: "green", SKIPPED: "yellow", FAILED: "bold red"}


class _BatchBars:
    """Three rich bars on stderr: files, frames over all files, and the current file's frames.

    They appear with the folder's plan, after the checks and the model's loading.
    """

    def __init__(self) -> None:
        self.progress = progress_bars(MofNCompleteColumn(), TextColumn("{task.fields[unit]}"))
        self.files: TaskID = self.progress.add_task("files", total=None, unit="files")
        self.frames: TaskID = self.progress.add_task("frames", total=None, unit="frames")
        self.current: TaskID = self.progress.add_task("-", total=None, unit="frames")
        self._frames_before = 0  # frames of the files already finished
        self._frames_total: int | None = None
        self._file_done = 0

    def __enter__(self) -> _BatchBars:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def callbacks(self) -> BatchCallbacks:
        return BatchCallbacks(
            on_plan=self.on_plan, on_file=self.on_file, on_progress=self.on_frame, on_result=self.on_result
        )

    def on_plan(self, tasks: list[BatchTask]) -> None:
        # Files with an unknown (or unreadable) frame count add 0 here; the total grows if they have frames.
        self.progress.start()  # once the plan is made (the model is loaded by then)
        known = [t.frames for t in tasks if t.problem is None and t.frames]
        self._frames_total = sum(known) if known else None
        self.progress.update(self.files, total=len(tasks))
        self.progress.update(self.frames, total=self._frames_total)

    def on_file(self, task: BatchTask, index: int) -> None:
        self._file_done = 0
        # A fresh task rather than reset(): reset cannot set an unknown (None) total.
        self.progress.remove_task(self.current)
        self.current = self.progress.add_task(str(task.relative), total=task.frames, unit="frames")

    def on_frame(self, done: int, total: int | None) -> None:
        self._file_done = done
        shown = None if total is None else max(total, done)
        self.progress.update(self.current, completed=done, total=shown)
        overall = self._frames_before + done
        if self._frames_total is not None and overall > self._frames_total:
            self._frames_total = overall  # a container under-declared its frames: never overflow
            self.progress.update(self.frames, total=self._frames_total)
        self.progress.update(self.frames, completed=overall)

    def on_result(self, item: BatchItem) -> None:
        self._frames_before += item.frames
        self.progress.update(self.frames, completed=self._frames_before)
        self.progress.advance(self.files)


class _JobBar:
    """With --ray: one bar for the whole job (frames done of all frames, ETA) and a count of files done.

    Workers restore several files at once, so there is no "current file"; the library reports the frames
    done over every file.
    """

    def __init__(self) -> None:
        self.progress = progress_bars(MofNCompleteColumn(), TextColumn("frames, {task.fields[files]} files"))
        self.frames: TaskID = self.progress.add_task("frames", total=None, files="0")
        self._files = 0
        self._planned = 0

    def __enter__(self) -> _JobBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def callbacks(self) -> BatchCallbacks:
        return BatchCallbacks(on_plan=self.on_plan, on_progress=self.on_frames, on_result=self.on_result)

    def on_plan(self, tasks: list[BatchTask]) -> None:
        self.progress.start()
        self._planned = len(tasks)
        self.progress.update(self.frames, files=f"0/{self._planned}")

    def on_frames(self, done: int, total: int | None) -> None:
        self.progress.update(self.frames, completed=done, total=total)

    def on_result(self, item: BatchItem) -> None:
        self._files += 1
        self.progress.update(self.frames, files=f"{self._files}/{self._planned}")


def _reason(item: BatchItem) -> str:
    """The failure reason, naming the file once (library messages usually start with the path)."""
    return item.reason if str(item.input) in item.reason else f"{item.input}: {item.reason}"


def render_batch(report: BatchReport) -> None:
    """The closing table (stdout) and a one-line total."""
    table = Table(title=f"{report.in_dir} -> {report.out_dir}", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("status")
    table.add_column("frames", justify="right")
    table.add_column("time", justify="right")
    table.add_column("output / reason", overflow="fold")
    for item in report.items:
        rel = (
            item.input.relative_to(report.in_dir) if item.input.is_relative_to(report.in_dir) else item.input
        )
        detail = str(item.output) if item.status == OK else _reason(item)
        table.add_row(
            Text(str(rel)),
            Text(item.status, style=_STYLE[item.status]),
            str(item.frames) if item.status == OK else "-",
            f"{item.seconds:.1f} s" if item.status != SKIPPED else "-",
            Text(detail),
        )
    out.print(table)
    out.print(
        f"{report.count(OK)} ok, {report.count(SKIPPED)} skipped, {report.count(FAILED)} failed; "
        f"{report.frames} frames in {report.seconds:.1f} s",
        highlight=False,
    )


def restore_directory(
    in_dir: Path,
    out_dir: Path,
    options: RestoreOptions,
    model: nn.Module | Callable[[], nn.Module],
    *,
    glob: str | None = None,
    skip_existing: bool = False,
    extension: str | None = None,
    report_path: Path | None = None,
    quiet: bool = False,
    as_json: bool = False,
    cluster: RayCluster | None = None,
) -> int:
    """Restore a folder with progress and a closing table; return the exit status (0 ok, 1 some failed).

    ``model`` may be a function that loads it: the library calls it once the folders are checked.
    ``cluster`` spreads the files over Ray workers (``pipeline.distributed.restore_folder_ray``).
    """
    run: Callable[..., BatchReport] = restore_folder
    bars: type[_BatchBars] | type[_JobBar] = _BatchBars
    if cluster is not None:
        from fmanetpp_cli.pipeline.distributed import restore_folder_ray

        run, bars = functools.partial(restore_folder_ray, cluster=cluster), _JobBar
    kwargs = {
        "glob": glob,
        "skip_existing": skip_existing,
        "extension": extension,
        "report_path": report_path,
    }
    if quiet or as_json:
        report = run(in_dir, out_dir, options, model, **kwargs)
    else:
        with bars() as shown:
            report = run(in_dir, out_dir, options, model, callbacks=shown.callbacks(), **kwargs)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    elif quiet:
        for item in report.items:
            if item.status == FAILED:
                err.print(Text(f"failed: {_reason(item)}"), soft_wrap=True)
    else:
        render_batch(report)
    return report.exit_code
