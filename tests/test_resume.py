"""Resume (issue 15): a stopped single-file restore continues from its kept segments, with the same result.

Each subprocess case stops a run with a slow toy model at one moment (inside the model, while a segment
is encoded, while the segments are joined), runs ``--resume``, and compares the output with an
uninterrupted run's: every decoded frame (pixels and time) and every audio packet (bytes and time).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import av
import media
import pytest
from toy_models import ToySequence
from video_checks import packets

import fmanetpp_cli.pipeline.resume as resume
from fmanetpp_cli.errors import ConfigError, ResumeError
from fmanetpp_cli.pipeline import RestoreOptions, restore_video
from fmanetpp_cli.pipeline.resume import work_folder

ROOT = Path(__file__).resolve().parents[1]
SEG = "4"  # frames per segment in these tests


def _cli(args: list[str], *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "tests" / "toy_cli.py"), "--segment-frames", SEG, *extra, "--", *args]


def _run(args: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(_cli(args, *extra), capture_output=True, text=True, env=env, timeout=180, check=False)


def _stop(args: list[str], ready: Callable[[], bool], signum: int, *extra: str) -> tuple[int, str]:
    """Start the run, send ``signum`` once ``ready()``; (exit code, stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        _cli(args, *extra), stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the signal"
            time.sleep(0.02)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
        return proc.returncode, stderr
    finally:
        proc.kill()
        proc.wait()


def _content(path: Path) -> tuple[list[tuple[int, bytes]], list[tuple[bytes, float | None, float]]]:
    """Decoded video frames (pts, RGB bytes) and audio packets of a file."""
    with av.open(str(path)) as c:
        frames = [(f.pts, f.to_ndarray(format="rgb24").tobytes()) for f in c.decode(video=0)]
    return frames, packets(path, "audio")


def _segments(out: Path) -> list[str]:
    folder = work_folder(out)
    return sorted(p.name for p in folder.glob("seg*")) if folder.exists() else []


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 16-frame clip with audio and its uninterrupted restore (same toy model and segment size)."""
    folder = tmp_path_factory.mktemp("resume")
    src = media.cfr_clip(folder, frames=16)
    ref = folder / "ref.mp4"
    done = _run(["restore", str(src), str(ref), "--tile", "0", "--chunk", "4", "-q"])
    assert done.returncode == 0, done.stderr
    assert not work_folder(ref).exists()  # removed on success
    return src, ref


def _args(src: Path, out: Path) -> list[str]:
    return ["restore", str(src), str(out), "--tile", "0", "--chunk", "4", "-q"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("moment", "extra", "signum"),
    [
        ("model", ("--delay", "0.3"), signal.SIGKILL),
        ("segment-encode", ("--slow-encode", "0.3"), signal.SIGTERM),
        ("final-mux", ("--stall-concat", "MARKER"), signal.SIGKILL),
    ],
)
def test_stopped_run_resumes_to_the_same_file(
    clip: tuple[Path, Path], tmp_path: Path, moment: str, extra: tuple[str, ...], signum: int
) -> None:
    src, ref = clip
    out = tmp_path / "out.mp4"
    marker = tmp_path / "marker"
    extra = tuple(str(marker) if e == "MARKER" else e for e in extra)
    folder = work_folder(out)

    def ready() -> bool:
        if moment == "final-mux":
            return marker.exists()
        parts = list(folder.glob(".seg*.part")) if folder.exists() else []
        return len(_segments(out)) >= 1 and bool(parts)  # one segment done, the next in progress

    code, stderr = _stop(_args(src, out), ready, signum, *extra)
    assert code == (128 + signum if signum != signal.SIGKILL else -signal.SIGKILL), stderr
    assert not out.exists()
    kept = _segments(out)
    assert kept, "the finished segments were not kept"
    if signum == signal.SIGTERM:
        command = stderr.strip().splitlines()[-1].split("continue with: ")[1]
        assert shlex.split(command) == ["fmanetpp", *_args(src, out), "--resume"]
    done = _run([*_args(src, out), "--resume"])
    assert done.returncode == 0, done.stderr
    assert not folder.exists()
    assert _content(out) == _content(ref)


@pytest.mark.slow
def test_changed_option_or_input_is_refused(clip: tuple[Path, Path], tmp_path: Path) -> None:
    src, _ = clip
    out = tmp_path / "out.mp4"
    code, _ = _stop(_args(src, out), lambda: len(_segments(out)) >= 1, signal.SIGKILL, "--delay", "0.3")
    kept = _segments(out)
    assert code == -signal.SIGKILL and kept
    changed = _run([*_args(src, out), "--resume", "--crf", "30"])
    lines = [line for line in changed.stderr.splitlines() if line.strip()]
    assert changed.returncode == 1 and len(lines) == 1 and "--crf changed" in lines[0], changed.stderr
    other = media.cfr_clip(tmp_path, name="other.mp4", frames=16, fps=30)
    moved = _run(["restore", str(other), str(out), "--tile", "0", "--chunk", "4", "-q", "--resume"])
    assert moved.returncode == 1 and "the input file changed" in moved.stderr, moved.stderr
    again = _run(_args(src, out))  # without --resume: the kept work is not thrown away
    assert again.returncode == 1 and "add --resume" in again.stderr, again.stderr
    assert _segments(out) == kept and not out.exists()


def test_resume_with_compare_is_refused() -> None:
    with pytest.raises(ConfigError, match="--compare cannot be resumed"):
        RestoreOptions(resume=True, compare=Path("x.compare.mp4"))


class _StopAfter:
    """``on_progress`` that raises KeyboardInterrupt once ``frames`` frames are restored."""

    def __init__(self, frames: int) -> None:
        self.frames = frames

    def __call__(self, done: int, total: int | None) -> None:
        if done >= self.frames:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("make", "name", "options"),
    [
        (media.vfr_clip, "vfr.mkv", {}),
        (media.cfr_clip, "range.mp4", {"start": 0.1, "end": 0.55}),
        (media.rotated_clip, "rotated.mp4", {}),
    ],
    ids=["vfr", "range", "rotated"],
)
def test_in_process_resume_equals_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[..., Path], name: str, options: dict
) -> None:
    monkeypatch.setattr(resume, "SEGMENT_FRAMES", 3)
    src = make(tmp_path) if make is not media.cfr_clip else make(tmp_path, frames=20)
    model = ToySequence(radius=1)
    opts = RestoreOptions(tile=0, chunk=4, device="cpu", **options)
    ref = tmp_path / f"ref.{name}"
    restore_video(src, ref, opts, model)
    out = tmp_path / f"out.{name}"
    with pytest.raises(KeyboardInterrupt):
        restore_video(src, out, opts, model, on_progress=_StopAfter(7))
    assert not out.exists() and len(_segments(out)) >= 1
    with pytest.raises(ResumeError, match="add --resume"):
        restore_video(src, out, opts, model)
    with pytest.raises(ResumeError, match="model weights changed"):
        restore_video(src, out, replace(opts, resume=True), ToySequence(radius=1, seed=1))
    report = restore_video(src, out, replace(opts, resume=True), model)
    assert not work_folder(out).exists()
    assert report.frames == len(_content(ref)[0])
    a, b = _content(out), _content(ref)
    assert [p for p, _ in a[0]] == [p for p, _ in b[0]]
    assert all(x == y for (_, x), (_, y) in zip(a[0], b[0], strict=True))  # decoded pixels
    assert a[1] == b[1]
