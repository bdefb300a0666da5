"""Stopping on a signal: SIGTERM and SIGHUP end a run the way Ctrl-C does, cleanly.

Python turns SIGINT into ``KeyboardInterrupt`` but lets SIGTERM kill the process on the spot, which would
leave the writer's hidden temporary file behind. `stop_on_signals` makes all three raise `Terminated`, a
``KeyboardInterrupt``, so every ``with`` block unwinds: the encoder thread is stopped, the temporary output
is deleted, a folder run stops after the current file's cleanup. `interrupt_message` words the one line
the CLI prints, with the command that continues the run.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

_CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """A stop signal arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class Stopped:
    """Which signal stopped the run (None: none did). Typer turns ``KeyboardInterrupt`` into exit code 130
    before the CLI sees it, so the handler records the signal here for the message."""

    signum: int | None = None

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as shells report a process ended by that signal (130 for Ctrl-C)."""
        return 128 + (self.signum or signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Stopped]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise `Terminated` (a signal the parent process set
    to be ignored stays ignored); the previous handlers come back after."""
    stopped = Stopped()

    def handler(signum: int, frame: FrameType | None) -> None:
        stopped.signum = signum
        raise Terminated(signum)

    previous = {}
    for s in _CAUGHT:
        if signal.getsignal(s) is not signal.SIG_IGN:
            previous[s] = signal.signal(s, handler)
    try:
        yield stopped
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def interrupt_message(signum: int, args: list[str]) -> str:
    """One line: what stopped the run, that no finished-looking output was left, and how to go on.

    A single file whose work folder kept finished segments continues with ``--resume``; with none kept
    (or with ``--compare``, which is not resumable) it starts again. A folder run (``restore IN_DIR
    OUT_DIR``) continues with ``--skip-existing --resume``: every output it wrote is complete, and the one
    in progress goes on from its finished segments.
    """
    from fmanetpp_cli.pipeline.resume import work_folder  # lazy: keeps torch out of the CLI's start-up

    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    positional = [a for a in args if not a.startswith("-")]
    if positional[:1] != ["restore"] or len(positional) < 3:
        return f"interrupted ({name})"
    flags = ["--skip-existing"] if Path(positional[1]).is_dir() else []
    if "--compare" not in args:
        flags.append("--resume")
    again = shlex.join([*args, *(f for f in flags if f not in args)])
    if flags[:1] == ["--skip-existing"]:
        return (
            f"interrupted ({name}): finished files are kept, the one in progress was not finished; "
            f"continue with: fmanetpp {again}"
        )
    work = work_folder(Path(positional[2]))
    if "--resume" in flags and work.is_dir():
        return (
            f"interrupted ({name}): no output was left behind, the finished segments are kept in {work}; "
            f"continue with: fmanetpp {again}"
        )
    return f"interrupted ({name}): stopped, no output was left behind; run the same command to start again"
