"""Shared rich consoles (results to stdout, progress and messages to stderr) and the progress-bar set-up."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

out = Console()
err = Console(stderr=True)


def progress_bars(
    *counts: ProgressColumn,
    label: str = "[bold]{task.description}",
    spinner: bool = False,
    eta: ProgressColumn | None = None,
    transient: bool = False,
) -> Progress:
    """Progress bars on stderr, every command's layout: [spinner] label, bar, ``counts``, elapsed, ETA.

    Args:
        counts: the columns between the bar and the elapsed time (counts, rates, extra fields).
        label: the task description's format.
        spinner: start each row with a spinner.
        eta: the last column; default ``ETA`` and rich's time-remaining estimate.
        transient: remove the bars when they stop.
    """
    ends = (eta,) if eta is not None else (TextColumn("ETA"), TimeRemainingColumn())
    head = (SpinnerColumn(),) if spinner else ()
    return Progress(
        *head,
        TextColumn(label),
        BarColumn(),
        *counts,
        TimeElapsedColumn(),
        *ends,
        console=err,
        transient=transient,
    )
