"""Split-video restores without Ray (``pipeline/segments.py`` in-process); ``--ray`` without the extra.

Segments are runs of the one-process chunk plan, so a split restore must give the one-process video exactly,
whatever the segment size, for sequence and window models, with scene cuts and a restore range. A stopped
split run resumes (``--resume``) from its work folder without sending finished segments to a worker, and a
run stopped in one mode resumes in the other.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cli_run import run_cli
from media import AudioSpec, make_clip
from torch import nn
from toy_models import ToySequence, ToyWindow
from video_checks import StopAfter, content, leftovers, packets

import fmanetpp_cli.pipeline.resume as resume
from fmanetpp_cli.errors import ConfigError, MissingExtraError, ResumeError
from fmanetpp_cli.pipeline import RestoreOptions, restore_video
from fmanetpp_cli.pipeline.resume import work_folder
from fmanetpp_cli.pipeline.segments import SegmentJob, SegmentResult, plan_for, restore_split
from fmanetpp_cli.video import EncodeOptions, VideoReader

# Lossless video, so that decoded frames are the restored frames: libx264's bytes can depend on how the
# process interleaves decoding and encoding (measured with PyAV 16.1); that is not what these tests test.
FFV1 = EncodeOptions(codec="ffv1")


def _frames(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as reader:
        return [frame.image for frame in reader]


def _split(
    clip: Path, out: Path, options: RestoreOptions, model: nn.Module, segment_frames: int,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> tuple[list[SegmentJob], int]:  # fmt: skip
    """Restore through restore_split with jobs run in this process; return the jobs and frames written."""
    jobs: list[SegmentJob] = []

    def submit(job: SegmentJob) -> SegmentResult:
        jobs.append(job)
        return job(model)

    report = restore_split(
        clip, out, options, model, functools.partial(plan_for, model), submit, lambda result: result,
        segment_frames=segment_frames, in_flight=2, on_progress=on_progress,
    )  # fmt: skip
    return jobs, report.frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(
        tmp_path_factory.mktemp("seg") / "clip.mkv", frames=21, width=16, height=16, audio=[AudioSpec()]
    )


@pytest.mark.parametrize(
    ("model", "options", "segment_frames"),
    [
        (ToySequence(radius=2), RestoreOptions(device="cpu", tile=0, encode=FFV1, chunk=7), 1),
        (ToySequence(radius=2), RestoreOptions(device="cpu", tile=0, encode=FFV1, chunk=7), 5),
        (ToyWindow(num_seq=3), RestoreOptions(device="cpu", tile=0, encode=FFV1, chunk=6), 4),
        (
            ToySequence(radius=1),
            RestoreOptions(device="cpu", tile=0, encode=FFV1, chunk=5, start=0.2, end=0.7),
            3,
        ),
        (
            ToySequence(radius=2),
            RestoreOptions(
                device="cpu", tile=0, encode=FFV1, chunk=9, scene_detect=True, scene_threshold=0.05
            ),
            4,
        ),
    ],
    ids=["sequence-1", "sequence-5", "window", "range", "scenes"],
)
def test_split_restore_is_the_one_process_restore(
    clip: Path, tmp_path: Path, model: nn.Module, options: RestoreOptions, segment_frames: int,
    one_thread: None,
) -> None:  # fmt: skip
    one, split = tmp_path / "one.mkv", tmp_path / "split.mkv"
    expected = restore_video(clip, one, options, model)
    jobs, frames = _split(clip, split, options, model, segment_frames)
    assert frames == expected.frames > 0
    assert bool(expected.scene_cuts) == options.scene_detect, "the scenes case has cuts"
    assert len(jobs) >= 2, "the clip was split"
    kept = [i for job in jobs for c in job.chunks for i in range(c.keep_start, c.keep_stop)]
    assert kept == list(range(frames)), "segments keep every frame once, in order"
    a, b = _frames(one), _frames(split)
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert np.array_equal(x, y), f"frame {i} differs"
    assert packets(one, "audio") == packets(split, "audio") != []


def test_segments_carry_the_context_on_both_sides(clip: Path, tmp_path: Path) -> None:
    model = ToySequence(radius=2)
    jobs, _ = _split(
        clip, tmp_path / "s.mkv", RestoreOptions(device="cpu", tile=0, encode=FFV1, chunk=7), model, 3
    )
    inner = jobs[1]
    assert inner.first <= inner.keep_start - 2, "left context: the model's radius"
    assert inner.first + len(inner.images) >= inner.keep_start + inner.num_kept + 2, "right context"


def test_a_failed_split_leaves_no_output(clip: Path, tmp_path: Path) -> None:
    model = ToySequence(radius=2)
    options = RestoreOptions(device="cpu", tile=0, encode=FFV1, chunk=7)

    def broken(job: SegmentJob) -> SegmentResult:
        raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        restore_split(
            clip, tmp_path / "x.mkv", options, model, functools.partial(plan_for, model), broken,
            lambda r: r,
        )  # fmt: skip
    assert not (tmp_path / "x.mkv").exists() and leftovers(tmp_path) == []
    with pytest.raises(ConfigError, match="--compare"):
        restore_split(
            clip, tmp_path / "y.mkv", RestoreOptions(compare=tmp_path / "c.mkv"), model,
            functools.partial(plan_for, model), broken, lambda r: r,
        )  # fmt: skip


def test_ray_without_the_extra_is_one_clear_error(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fmanetpp_cli.pipeline.distributed import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[ray\]'"):
        import_ray()
    folder = clip.parent
    code, _, err = run_cli(["restore", str(folder), str(tmp_path / "out"), "--ray", "auto"], capsys)
    assert code == 1
    assert "Ray extra" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_stopped_split_run_resumes_without_redoing_finished_segments(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resume, "SEGMENT_FRAMES", 3)
    model = ToySequence(radius=2)
    options = RestoreOptions(device="cpu", tile=0, encode=FFV1, chunk=7)  # 3 kept frames per chunk
    ref, out = tmp_path / "ref.mkv", tmp_path / "out.mkv"
    restore_video(clip, ref, options, model)
    with pytest.raises(KeyboardInterrupt):
        _split(clip, out, options, model, 6, on_progress=StopAfter(12))
    kept = sorted(p.name for p in work_folder(out).glob("seg*"))
    assert not out.exists() and len(kept) >= 2, kept
    with pytest.raises(ResumeError, match="add --resume"):
        _split(clip, out, options, model, 6)
    with pytest.raises(ResumeError, match="model weights changed"):
        _split(clip, out, replace(options, resume=True), ToySequence(radius=2, seed=1), 6)
    seen: list[int] = []
    jobs, frames = _split(
        clip, out, replace(options, resume=True), model, 6, on_progress=lambda d, t: seen.append(d)
    )
    finished = 3 * len(kept)
    assert jobs, "the unfinished part was restored"
    assert min(c.keep_stop for job in jobs for c in job.chunks) > finished, "no finished segment was redone"
    assert seen == sorted(seen) and seen[-1] == frames == 21, "progress counts the kept frames too"
    assert not work_folder(out).exists()
    assert content(out) == content(ref)


@pytest.mark.parametrize("first", ["one-process", "split"])
def test_a_run_stopped_in_one_mode_resumes_in_the_other(
    clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    """The two modes share the work folder's format and fingerprint: ``--ray`` can take over a run, or give
    it back, and the file is the one an uninterrupted run writes."""
    monkeypatch.setattr(resume, "SEGMENT_FRAMES", 4)
    model = ToySequence(radius=2)
    options = RestoreOptions(device="cpu", tile=0, encode=FFV1, chunk=7)
    ref, out = tmp_path / "ref.mkv", tmp_path / "out.mkv"
    restore_video(clip, ref, options, model)
    with pytest.raises(KeyboardInterrupt):
        if first == "split":
            _split(clip, out, options, model, 3, on_progress=StopAfter(10))
        else:
            restore_video(clip, out, options, model, on_progress=StopAfter(10))
    assert len(list(work_folder(out).glob("seg*"))) >= 2
    again = replace(options, resume=True)
    if first == "split":
        restore_video(clip, out, again, model)
    else:
        _split(clip, out, again, model, 3)
    assert content(out) == content(ref)


def test_a_cuda_index_with_ray_is_refused_before_ray_starts(clip: Path, tmp_path: Path) -> None:
    from fmanetpp_cli.pipeline.distributed import RayCluster, restore_folder_ray, restore_video_ray

    options = RestoreOptions(device="cuda:1", tile=0)
    with pytest.raises(ConfigError, match=r"--device cuda:1 cannot be used with --ray.*--device cuda"):
        restore_video_ray(clip, tmp_path / "o.mkv", options, ToySequence(radius=1), cluster=RayCluster())
    with pytest.raises(ConfigError, match=r"--device cuda:1 cannot be used with --ray"):
        restore_folder_ray(clip.parent, tmp_path / "out", options, ToySequence(radius=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == []
