"""Reliability (issue 15): verification after encoding, write failures, broken input, out of memory.

Each case stages a failure (an injected mismatch, a file-size limit, a mutated file, an allocation failure)
and checks the promise: a typed error naming the file, a non-zero exit, nothing at the output path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import media
import numpy as np
import pytest
import torch
from torch import Tensor, nn
from toy_models import ToySequence
from video_checks import leftovers, packets, passthrough

from fmanetpp_cli.errors import VideoWriteError
from fmanetpp_cli.pipeline import RestoreOptions, RestoreReport, restore_video
from fmanetpp_cli.video import EncodeOptions, VideoReader, VideoWriter, probe
from fmanetpp_cli.video.verify import read_back

ROOT = Path(__file__).resolve().parents[1]
LOSSLESS = EncodeOptions(codec="ffv1", pix_fmt="bgr0")  # RGB in, RGB out: frames compare exactly


# -- verification after encoding ---------------------------------------------------------------------------
def test_read_back_counts_every_audio_packet(tmp_path: Path) -> None:
    src = media.multitrack_clip(tmp_path)
    out = tmp_path / "out.mkv"
    passthrough(src, out)
    back = read_back(out, "matroska", name=out, default_time_base=Fraction(1, 1000))
    assert len(back.video_pts) == len(packets(src, "video"))
    assert list(back.audio_packets.values()) == [len(packets(src, "audio", i)) for i in (0, 1)]


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_audio_packet_mismatch_is_an_error(tmp_path: Path, ext: str) -> None:
    """One audio packet more muxed than the file holds (as if the muxer dropped one): refused."""
    src = media.cfr_clip(tmp_path)
    out = tmp_path / f"out{ext}"
    info = probe(src)
    writer = VideoWriter(out, source=src, info=info)
    with VideoReader(src, info=info) as reader:
        for frame in reader:
            writer.write(frame.image, frame.pts)
    real_finish = writer._aux.finish  # type: ignore[union-attr]

    def finish_and_miscount() -> None:
        real_finish()
        counts = writer._aux.audio_packets  # type: ignore[union-attr]
        index = next(iter(counts))
        counts[index] += 1

    writer._aux.finish = finish_and_miscount  # type: ignore[union-attr,method-assign]
    with pytest.raises(VideoWriteError, match=r"audio stream \d holds \d+ packets but \d+ were written") as e:
        writer.commit()
    assert str(out) in str(e.value)
    assert not out.exists() and leftovers(tmp_path) == []


# -- write failures ----------------------------------------------------------------------------------------
def _toy_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``tests/toy_cli.py ARGS`` in a fresh process, importing this worktree's package."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "tests" / "toy_cli.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


@pytest.mark.parametrize(
    ("name", "flags"),
    [("out.mp4", []), ("out.mkv", ["--codec", "ffv1"]), ("out.mp4", ["--codec", "ffv1", "--compare"])],
    ids=["mp4-at-close", "mkv-mid-stream", "compare-audio"],
)
def test_file_size_limit_fails_cleanly(tmp_path: Path, name: str, flags: list[str]) -> None:
    """A full disk, staged with RLIMIT_FSIZE: one line naming the file, exit 1, nothing left behind."""
    src = media.cfr_clip(tmp_path, frames=20)
    out = tmp_path / name
    done = _toy_cli("--fsize", "30000", "--", "restore", str(src), str(out), "-q", "--tile", "0", *flags)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "no room left to write" in lines[0] and out.stem in lines[0]
    # Nothing at the output path; finished segments may stay in the hidden work folder, for --resume.
    work = tmp_path / f".{name}.work"
    assert sorted(p.name for p in tmp_path.iterdir()) in ([src.name], sorted([src.name, work.name]))
    if work.exists():
        assert not list(work.glob(".*.part"))
        again = _toy_cli("--", "restore", str(src), str(out), "-q", "--tile", "0", *flags, "--resume")
        assert again.returncode == 0, again.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, name])


def test_output_folder_removed_mid_run(tmp_path: Path) -> None:
    import shutil

    src = media.cfr_clip(tmp_path, frames=8)
    folder = tmp_path / "gone"
    folder.mkdir()
    out = folder / "out.mp4"

    def remove_folder(done: int, total: int | None) -> None:
        # The background encode thread may add a segment file while rmtree walks the folder (CI saw
        # "Directory not empty"), so remove until it is gone, as a user repeating `rm -rf` would.
        if done == 3:
            for _ in range(50):
                shutil.rmtree(folder, ignore_errors=True)
                if not folder.exists():
                    break
            assert not folder.exists()

    expected = r"failed|cannot be read back|does not exist|cannot create"
    with pytest.raises(VideoWriteError, match=expected) as e:
        restore_video(
            src, out, RestoreOptions(tile=0, chunk=4), ToySequence(radius=1), on_progress=remove_folder
        )
    assert str(out) in str(e.value) and not folder.exists()


# -- broken input, fuzzed ----------------------------------------------------------------------------------
def _decodable(path: Path) -> int:
    """Video frames an independent PyAV decode gets out of ``path``, skipping packets it cannot decode."""
    frames = 0
    try:
        with av.open(str(path)) as c:
            for packet in c.demux(video=0):
                with contextlib.suppress(av.error.FFmpegError):
                    frames += len(packet.decode())
    except (av.error.FFmpegError, IndexError):
        return 0
    return frames


def _fuzz(tmp_path: Path, count: int | None) -> None:
    """Restore mutants in one subprocess; each ends in a verified output or one clean line and exit 1."""
    import fuzz_media

    paths = fuzz_media.all_mutants(tmp_path / "fuzz")
    if count is not None:
        paths = fuzz_media.sample(paths, count)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    jobs = [
        {
            "argv": ["restore", str(p), str(out_dir / f"{p.stem}.mkv"), "-q", "--json", "--tile", "0"],
            "timeout": 60,
        }
        for p in paths
    ]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    done = _toy_cli(
        "--batch", str(tmp_path / "jobs.json"), str(tmp_path / "results.json"), timeout=60 + 4 * len(jobs)
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    kinds = {"ok": 0, "error": 0}
    for path, job, result in zip(paths, jobs, results, strict=True):
        out = Path(job["argv"][2])
        assert result["crash"] == "", f"{path.name}: {result['crash']}"
        if result["code"] == 0:
            kinds["ok"] += 1
            frames = json.loads(result["stdout"])["frames"]
            assert _decodable(out) == frames == _decodable(path), path.name  # nothing decodable was lost
            continue
        kinds["error"] += 1
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        assert result["code"] == 1 and "Traceback" not in result["stderr"], (path.name, result)
        assert [line for line in lines if line.startswith("error:")] == lines[-1:], (path.name, lines)
        assert path.name in lines[-1] or out.name in lines[-1], (path.name, lines)
        assert not out.exists(), path.name
    assert list(out_dir.glob(".*")) == []  # no temporary file left behind
    assert kinds["ok"] > 0 and kinds["error"] > 0  # the sample holds both kinds of outcome


def test_fuzzed_inputs_sample(tmp_path: Path) -> None:
    _fuzz(tmp_path, 24)


@pytest.mark.slow
def test_fuzzed_inputs_all(tmp_path: Path) -> None:
    _fuzz(tmp_path, None)


# -- out of memory ---------------------------------------------------------------------------------------
class _Fussy(ToySequence):
    """ToySequence that fails to allocate above ``max_side`` pixels or ``max_frames`` frames per pass."""

    def __init__(self, max_side: int = 10_000, max_frames: int = 10_000, always: bool = False) -> None:
        super().__init__(radius=1)
        self.max_side, self.max_frames, self.always = max_side, max_frames, always
        torch.manual_seed(0)  # the same weights in every instance (the conv's init draws from torch's RNG)
        self.spatial.reset_parameters()

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        if self.always or max(x.shape[-2:]) > self.max_side:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        if x.shape[2] > self.max_frames:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
        return super().forward(x)


def _restored(tmp_path: Path, name: str, model: nn.Module, **options: object) -> tuple[list, RestoreReport]:
    src = tmp_path / "src.mp4"
    if not src.exists():
        media.cfr_clip(tmp_path, name="src.mp4", frames=9)
    out = tmp_path / f"{name}.mkv"
    report = restore_video(src, out, RestoreOptions(encode=LOSSLESS, **options), model)  # type: ignore[arg-type]
    with VideoReader(out) as reader:
        return [f.image for f in reader], report


def test_out_of_memory_retry_equals_smaller_tiles_from_the_start(tmp_path: Path) -> None:
    retried, report = _restored(tmp_path, "retried", _Fussy(max_side=16), tile=0, chunk=4)
    assert report.tile == 16 and any("halved the tile 2 time(s)" in w for w in report.warnings)
    planned, _ = _restored(tmp_path, "planned", _Fussy(), tile=16, tile_overlap=4, chunk=4)
    assert len(retried) == len(planned) == 9
    for a, b in zip(retried, planned, strict=True):
        np.testing.assert_array_equal(a, b)


def test_out_of_memory_then_shorter_passes(tmp_path: Path) -> None:
    """Even 16 px tiles fail on 8-frame passes: the chunk is restored in shorter passes, same frames."""
    split, report = _restored(tmp_path, "split", _Fussy(max_frames=3), tile=0, chunk=8)
    assert sum("shorter passes" in w for w in report.warnings) == 1  # said once, for the whole run
    assert report.frames == 9
    whole, _ = _restored(tmp_path, "whole", _Fussy(), tile=16, tile_overlap=4, chunk=8)
    for a, b in zip(split, whole, strict=True):
        np.testing.assert_array_equal(a, b)


def test_out_of_memory_below_the_floor_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(MemoryError, match=r"even for 1 frame\(s\) per pass with 16 px tiles"):
        _restored(tmp_path, "hopeless", _Fussy(always=True), tile=0, chunk=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.mp4"]


# -- interrupt -------------------------------------------------------------------------------------------
def _interrupt(
    args: list[str], ready: Callable[[], bool], signum: int, *, extra: tuple[str, ...] = ()
) -> tuple[int, float, str]:
    """Run ``toy_cli.py ARGS`` with a slow model and send ``signum`` once ``ready()``.

    Returns (exit code, seconds from the signal to the exit, stderr).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "tests" / "toy_cli.py"), "--delay", "0.5", *extra, "--", *args]
    # A shell starts background jobs with SIGINT ignored (and our handler respects that): give the child
    # the default, as a terminal's Ctrl-C finds it.
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the signal"
            time.sleep(0.05)
        time.sleep(0.6)  # inside a model pass
        proc.send_signal(signum)
        sent = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        return proc.returncode, time.monotonic() - sent, stderr
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_the_run_and_leaves_nothing(tmp_path: Path, signum: int) -> None:
    src = media.cfr_clip(tmp_path, frames=20)
    out = tmp_path / "out.mp4"
    args = ["restore", str(src), str(out), "--tile", "0", "--chunk", "4", "-q"]
    # The first segment is being written inside the hidden work folder (``pipeline/resume.py``).
    code, seconds, stderr = _interrupt(args, lambda: any(tmp_path.rglob(".*.part")), signum)
    assert code == 128 + signum
    assert seconds < 10  # generous: one model pass is 0.5 s
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted") and "Traceback" not in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]


def test_signal_while_the_finished_file_is_checked_leaves_nothing(tmp_path: Path) -> None:
    """The riskiest moment: the encoder is done and a complete temporary file exists, not yet verified."""
    src = media.cfr_clip(tmp_path, frames=6)
    out = tmp_path / "out.mkv"
    marker = tmp_path / "stalled"
    args = ["restore", str(src), str(out), "--tile", "0", "-q"]
    code, seconds, stderr = _interrupt(
        args, marker.exists, signal.SIGTERM, extra=("--stall-verify", str(marker))
    )
    assert code == 128 + signal.SIGTERM and seconds < 10 and "interrupted" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, marker.name])


def test_folder_interrupt_keeps_finished_files_and_prints_the_resume_command(tmp_path: Path) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    for name in ("a.mp4", "b.mp4"):
        media.cfr_clip(in_dir, name=name, frames=8)
    args = ["restore", str(in_dir), str(out_dir), "--tile", "0", "--chunk", "4", "-q"]

    def second_file_started() -> bool:
        return (out_dir / "a.mp4").exists() and any((out_dir / ".b.mp4.work").glob(".*.part"))

    code, _, stderr = _interrupt(args, second_file_started, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.mp4"]  # finished kept, the one in progress gone
    command = stderr.strip().split("continue with: ")[1]
    assert shlex.split(command) == ["fmanetpp", *args, "--skip-existing", "--resume"]
    before = (out_dir / "a.mp4").stat().st_mtime_ns
    done = _toy_cli("--", *shlex.split(command)[1:])
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.mp4", "b.mp4"]
    assert (out_dir / "a.mp4").stat().st_mtime_ns == before  # skipped, not redone
