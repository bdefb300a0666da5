"""The background decode and encode threads (issue 14): same output, same errors, clean shutdown, no hang.

Every restore here runs through ``_within``, which fails the test instead of hanging the suite when a
worker thread or a blocked queue never returns.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import av
import media
import numpy as np
import pytest
import torch
from toy_models import ToySequence
from video_checks import leftovers, packets

import fmanetpp_cli.video.reader as reader_module
import fmanetpp_cli.video.writer as writer_module
from fmanetpp_cli.errors import ConfigError, VideoDecodeError, VideoWriteError
from fmanetpp_cli.pipeline import RestoreOptions, RestoreReport, restore_video
from fmanetpp_cli.pipeline.stream import BackgroundWriter, Prefetcher
from fmanetpp_cli.video import VideoReader
from tests.cli_run import run_cli

R = TypeVar("R")
LIMIT = 60.0  # seconds; a restore of these clips takes well under one


def _within(fn: Callable[[], R], seconds: float = LIMIT) -> R:
    """``fn()`` on a helper thread; fails the test if it has not returned after ``seconds``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"did not finish within {seconds} s (a worker or a queue hangs)")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


class _Hung(BaseException):
    """Raised by the alarm of ``_alarm``."""


@contextlib.contextmanager
def _alarm(seconds: int = int(LIMIT)) -> Iterator[None]:
    """For code that must run in the main thread (the CLI installs signal handlers): SIGALRM on a hang."""

    def ring(signum: int, frame: object) -> None:
        raise _Hung(f"did not finish within {seconds} s (a worker or a queue hangs)")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _workers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("fmanetpp-")]


def _toy() -> ToySequence:
    """The same weights every time (the conv's initialisation draws from torch's global RNG)."""
    torch.manual_seed(0)
    return ToySequence(radius=1)


def _restore(src: Path, out: Path, **options: Any) -> RestoreReport:
    opts = RestoreOptions(tile=0, chunk=5, **options)
    return _within(lambda: restore_video(src, out, opts, _toy()))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 frames with stereo AAC: five chunks of five frames, so decode, model and encode interleave."""
    return media.cfr_clip(tmp_path_factory.mktemp("stream"), frames=24)


# -- same output -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [1, 8])
def test_outputs_equal_with_and_without_io_threads(clip: Path, tmp_path: Path, depth: int) -> None:
    on = _restore(clip, tmp_path / "on.mp4", io_threads=True, queue_depth=depth)
    off = _restore(clip, tmp_path / "off.mp4", io_threads=False)
    assert on.frames == off.frames == 24
    assert on.times.decode > 0 and on.times.encode > 0 and on.times.finish > 0
    for kind in ("video", "audio"):
        assert packets(tmp_path / "on.mp4", kind) == packets(tmp_path / "off.mp4", kind), kind
    with VideoReader(tmp_path / "on.mp4") as a, VideoReader(tmp_path / "off.mp4") as b:
        pairs = list(zip(a, b, strict=True))
    assert len(pairs) == 24
    for x, y in pairs:
        assert x.pts == y.pts
        np.testing.assert_array_equal(x.image, y.image)
    assert _workers() == []


def test_queue_depth_is_checked() -> None:
    with pytest.raises(ConfigError, match="--queue-depth"):
        RestoreOptions(queue_depth=0)


# -- errors in the workers surface unchanged -------------------------------------------------------------
def _fail_decode_at(monkeypatch: pytest.MonkeyPatch, index: int) -> None:
    real = reader_module.frame_to_array
    calls = {"n": 0}

    def flaky(frame: av.VideoFrame, high: bool) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] > index:
            raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
        return real(frame, high)

    monkeypatch.setattr(reader_module, "frame_to_array", flaky)


def _fail_encode_at(monkeypatch: pytest.MonkeyPatch, index: int) -> None:
    real = writer_module.array_to_frame
    calls = {"n": 0}

    def flaky(*args: Any) -> av.VideoFrame:
        calls["n"] += 1
        if calls["n"] > index:
            raise ValueError("simulated conversion failure")
        return real(*args)

    monkeypatch.setattr(writer_module, "array_to_frame", flaky)


@pytest.mark.parametrize(
    ("inject", "error", "words"),
    [
        (_fail_decode_at, VideoDecodeError, "decoding failed after 7 of 24 frames"),
        (_fail_encode_at, VideoWriteError, "cannot convert frame 7"),
    ],
    ids=["decode", "encode"],
)
def test_worker_errors_are_the_same_as_without_threads(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inject: Any, error: type, words: str
) -> None:
    messages = []
    for io_threads in (True, False):
        inject(monkeypatch, 7)
        out = tmp_path / f"out-{io_threads}.mp4"
        with pytest.raises(error) as e:
            _restore(clip, out, io_threads=io_threads, queue_depth=2)
        messages.append(str(e.value).replace(str(out), "OUT"))
        assert not out.exists() and leftovers(tmp_path) == []
        monkeypatch.undo()
    assert messages[0] == messages[1]
    assert words in messages[0] and "\n" not in messages[0]
    assert _workers() == []


@pytest.mark.parametrize("inject", [_fail_decode_at, _fail_encode_at], ids=["decode", "encode"])
def test_cli_prints_one_line_for_a_worker_error(
    clip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    inject: Any,
) -> None:
    import fmanetpp_cli.checkpoints as ckpt
    import fmanetpp_cli.checkpoints.resolve as resolve

    lines = []
    for flag in ("--io-threads", "--no-io-threads"):
        monkeypatch.undo()
        monkeypatch.setattr(resolve, "resolve_weights", lambda model, weights, offline=None: Path("toy"))
        monkeypatch.setattr(ckpt, "load_model", lambda path, device="cpu": _toy())
        inject(monkeypatch, 7)
        argv = ["restore", str(clip), str(tmp_path / "out.mp4"), "--tile", "0", "--chunk", "5", "-q"]
        with _alarm():
            code, _, err = run_cli([*argv, "--threads", "1", flag], capsys)
        assert code == 1
        lines.append([line for line in err.splitlines() if line.strip()])
    assert lines[0] == lines[1] and len(lines[0]) == 1, lines
    assert "Traceback" not in lines[0][0]
    assert leftovers(tmp_path) == []


# -- shutdown --------------------------------------------------------------------------------------------
class _Stop(BaseException):
    """Stands in for KeyboardInterrupt (pytest reacts to a real one): raised in the model's thread."""


@pytest.mark.parametrize("at", [1, 12])
def test_interrupt_in_the_model_thread_stops_the_workers(clip: Path, tmp_path: Path, at: int) -> None:
    def progress(done: int, total: int | None) -> None:
        if done == at:
            raise _Stop

    out = tmp_path / "out.mp4"
    opts = RestoreOptions(tile=0, chunk=5, queue_depth=1)
    with pytest.raises(_Stop):
        _within(lambda: restore_video(clip, out, opts, ToySequence(radius=1), on_progress=progress))
    assert _workers() == [] and leftovers(tmp_path) == [] and not out.exists()


def test_model_error_with_a_full_decode_queue_does_not_hang(clip: Path, tmp_path: Path) -> None:
    class Broken(ToySequence):
        def forward(self, x: Any, y: Any = None) -> dict[str, Any]:
            raise RuntimeError("model exploded")

    out = tmp_path / "out.mp4"
    opts = RestoreOptions(tile=0, chunk=5, queue_depth=1)
    with pytest.raises(RuntimeError, match="model exploded"):
        _within(lambda: restore_video(clip, out, opts, Broken(radius=1)))
    assert _workers() == [] and leftovers(tmp_path) == []


# -- the two wrappers on their own -----------------------------------------------------------------------
def test_prefetcher_keeps_order_bounds_the_queue_and_closes_the_source_in_its_thread() -> None:
    produced: list[int] = []
    closed_in: list[str] = []

    def source() -> Iterator[int]:
        try:
            for i in range(100):
                produced.append(i)
                yield i
        finally:
            closed_in.append(threading.current_thread().name)

    with Prefetcher(source(), depth=3) as pre:
        got = []
        for item in pre:
            got.append(item)
            if item == 10:
                # Ready now: the queue's 3 plus the one the worker holds while it waits to put it.
                deadline = time.monotonic() + 10
                while len(produced) < 11 + 3 and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.2)
                assert 11 + 3 <= len(produced) <= 11 + 3 + 1
                break
    assert got == list(range(11))
    assert closed_in == ["fmanetpp-decode"] and _workers() == []


def test_prefetcher_reraises_the_sources_error_after_the_good_items() -> None:
    boom = VideoDecodeError("in.mp4: decoding failed after 2 frames")

    def source() -> Iterator[int]:
        yield 0
        yield 1
        raise boom

    for depth in (0, 2):
        got = []
        with pytest.raises(VideoDecodeError) as e, Prefetcher(source(), depth) as pre:
            got.extend(pre)
        assert got == [0, 1] and e.value is boom


def test_background_writer_runs_jobs_in_order_and_reports_the_first_error() -> None:
    seen: list[tuple[int, str]] = []

    def job(i: int) -> Callable[[], None]:
        def run() -> None:
            if i == 3:
                raise VideoWriteError(f"out.mp4: job {i} failed")
            seen.append((i, threading.current_thread().name))

        return run

    with pytest.raises(VideoWriteError, match="job 3 failed"), BackgroundWriter(depth=2) as writer:
        for i in range(6):
            writer.submit(job(i))
        writer.close()
    assert [i for i, _ in seen] == [0, 1, 2] and {name for _, name in seen} == {"fmanetpp-encode"}
    inline = BackgroundWriter(depth=0)
    inline.submit(lambda: seen.append((9, threading.current_thread().name)))
    assert seen[-1] == (9, threading.current_thread().name)
    assert _workers() == []
