"""Run ``fmanetpp`` in a fresh process with a toy model, for the tests that need a process of their own.

    python tests/toy_cli.py [--fsize BYTES] [--delay S] [--stall-verify MARKER]
                            [--batch JOBS.json RESULTS.json] [-- ARGS...]

``--delay`` makes each model pass sleep (a slow model to interrupt); with ``TOY_NICENESS_FILE`` set in
the environment, each pass writes its process's niceness there (where a Ray worker runs).
``--stall-verify`` holds every writer before it checks its finished file (to interrupt at that moment).
``--fsize`` sets ``RLIMIT_FSIZE`` (and ignores SIGXFSZ, so a write past it fails with EFBIG instead
of killing the process), which is how a full disk is staged. ``--batch`` runs many command lines in
this one process (the fuzz test: importing torch once, not hundreds of times); each job is
``{"argv": [...], "timeout": s}`` and its result ``{"code", "stdout", "stderr", "crash", "seconds"}``,
where ``crash`` holds the traceback of an error the CLI did not turn into a message, or ``"hang"``
when the job ran past its time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


class _Hang(BaseException):
    """Raised by the alarm: a BaseException, so that the CLI's own error handling does not catch it."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _Hang


def _install_toy_model(radius: int, delay: float) -> None:
    """Make the CLI load a ToySequence; ``delay`` s of sleep per forward pass stand in for a big model."""
    import torch
    from toy_models import ToySequence

    import fmanetpp_cli.checkpoints as ckpt
    import fmanetpp_cli.checkpoints.resolve as resolve

    class Slow(ToySequence):
        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
            time.sleep(delay)
            if report := os.environ.get("TOY_NICENESS_FILE"):  # where the pass ran: a Ray worker's priority
                Path(report).write_text(str(os.nice(0)))
            return super().forward(x)

    resolve.resolve_weights = lambda model, weights, offline=None: Path("toy")  # type: ignore[assignment]

    def load(path: Path, device: str = "cpu") -> Slow:
        torch.manual_seed(0)  # the same weights in every process (a resumed run checks them)
        return Slow(radius=radius)

    ckpt.load_model = load  # type: ignore[assignment]


def _stall_verify(marker: Path) -> None:
    """Hold every writer between closing its finished temporary file and checking it (the moment a
    complete-looking file exists), so that a signal can be sent exactly then."""
    from fmanetpp_cli.video.writer import VideoWriter

    real = VideoWriter._verify

    def stalled(self: VideoWriter) -> Any:
        marker.touch()
        time.sleep(5)
        return real(self)

    VideoWriter._verify = stalled  # type: ignore[method-assign]


def _stall_concat(marker: Path) -> None:
    """Hold the final join of the segments before it reads its finished file back (mid-mux)."""
    import fmanetpp_cli.video.concat as concat

    real = concat.read_back

    def stalled(*args: Any, **kw: Any) -> Any:
        marker.touch()
        time.sleep(5)
        return real(*args, **kw)

    concat.read_back = stalled  # type: ignore[assignment]


def _slow_decode(delay: float) -> None:
    """Make every decoded frame take ``delay`` s more (a slow decoder to interrupt)."""
    from fmanetpp_cli.video.reader import VideoReader

    real = VideoReader.__iter__

    def slow(self: VideoReader) -> Any:
        for frame in real(self):
            time.sleep(delay)
            yield frame

    VideoReader.__iter__ = slow  # type: ignore[method-assign]


def _slow_encode(delay: float) -> None:
    """Make every frame written to a video file take ``delay`` s (a slow encoder to interrupt)."""
    from fmanetpp_cli.video.writer import VideoWriter

    real = VideoWriter.write

    def slow(self: VideoWriter, image: Any, pts: int) -> None:
        time.sleep(delay)
        real(self, image, pts)

    VideoWriter.write = slow  # type: ignore[method-assign]


def run_one(argv: list[str], timeout: float) -> dict[str, Any]:
    """One command line in-process: exit code, what it printed on stderr, and any crash."""
    from fmanetpp_cli.cli.app import main

    stdout, stderr = io.StringIO(), io.StringIO()
    code: int | None = None
    crash = ""
    started = time.perf_counter()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0) if not isinstance(e.code, str) else 1
    except _Hang:
        crash = "hang"
    except BaseException:  # noqa: BLE001 - the point is to record it
        crash = traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return {
        "code": code,
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
        "crash": crash,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fsize", type=int)
    parser.add_argument("--radius", type=int, default=1)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--stall-verify", type=Path, help="touch this file, then sleep 5 s, before verifying")
    parser.add_argument("--stall-concat", type=Path, help="touch this file, then sleep 5 s, mid-join")
    parser.add_argument("--slow-encode", type=float, default=0.0, help="seconds of sleep per frame written")
    parser.add_argument("--slow-decode", type=float, default=0.0, help="seconds of sleep per frame decoded")
    parser.add_argument("--segment-frames", type=int, help="frames per resumable segment")
    parser.add_argument("--batch", nargs=2, type=Path)
    parser.add_argument("args", nargs="*")
    ns = parser.parse_args()
    if ns.fsize is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (ns.fsize, ns.fsize))
    import torch

    torch.set_num_threads(1)
    _install_toy_model(ns.radius, ns.delay)
    if ns.stall_verify is not None:
        _stall_verify(ns.stall_verify)
    if ns.stall_concat is not None:
        _stall_concat(ns.stall_concat)
    if ns.slow_encode:
        _slow_encode(ns.slow_encode)
    if ns.slow_decode:
        _slow_decode(ns.slow_decode)
    if ns.segment_frames is not None:
        import fmanetpp_cli.pipeline.resume as resume

        resume.SEGMENT_FRAMES = ns.segment_frames
    if ns.batch is None:
        from fmanetpp_cli.cli.app import main as cli_main

        cli_main(ns.args)
        return
    jobs = json.loads(ns.batch[0].read_text())
    results = [run_one(job["argv"], job.get("timeout", 60.0)) for job in jobs]
    ns.batch[1].write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
