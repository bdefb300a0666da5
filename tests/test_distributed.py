"""Ray scale-out (``pipeline/distributed.py``) on a local 2-CPU Ray instance bound to 127.0.0.1.

One instance serves the module (Ray takes seconds to start on 2 cores); the test that checks a run stops by
itself starts its own, in a CLI subprocess, before that instance exists. Outputs are compared with the
one-process folder mode and ``restore_video``: decoded frames and audio packets, exactly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from cli_run import run_cli
from media import AudioSpec, make_clip, not_a_video
from toy_models import DiesOnce, ToySequence
from video_checks import leftovers, packets

from fmanetpp_cli.pipeline import RestoreOptions, restore_folder, restore_video
from fmanetpp_cli.pipeline.batch import FAILED, OK, SKIPPED
from fmanetpp_cli.pipeline.resume import work_folder
from fmanetpp_cli.video import EncodeOptions, VideoReader

# Lossless video, so that decoded frames are the restored frames: libx264's bytes can depend on how the
# process interleaves decoding and encoding (measured with PyAV 16.1); that is not what these tests test.
FFV1 = EncodeOptions(codec="ffv1")

# A local instance binds to the loopback interface (Ray reads this when it is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="the optional Ray extra is not installed (pip install -e '.[ray]')")

from fmanetpp_cli.pipeline.distributed import RayCluster, restore_folder_ray, restore_video_ray  # noqa: E402

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
OPTIONS = RestoreOptions(
    device="cpu", tile=0, encode=FFV1, chunk=7
)  # ToySequence radius 2: 3 kept frames per pass
CLUSTER = RayCluster(cpus_per_worker=1)  # two workers on the two CPUs


def _ray_processes() -> set[int]:
    """Pids of Ray's daemons and workers on this machine."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"gcs_server" in cmd or b"raylet" in cmd or cmd.startswith(b"ray::"):
            found.add(int(entry.name))
    return found


def _env() -> dict[str, str]:
    """This process's environment with the worktree and tests/ importable (Ray's workers inherit it)."""
    path = os.pathsep.join(p for p in (str(REPO), str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _frames(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as reader:
        return [frame.image for frame in reader]


def _same_video(a: Path, b: Path) -> None:
    fa, fb = _frames(a), _frames(b)
    assert len(fa) == len(fb) > 0
    for i, (x, y) in enumerate(zip(fa, fb, strict=True)):
        assert np.array_equal(x, y), f"frame {i} differs"
    assert packets(a, "audio") == packets(b, "audio")
    assert len(packets(a, "audio")) > 0


@pytest.fixture(scope="module")
def in_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three clips with audio (one in a subfolder) and one file that is not a video."""
    root = tmp_path_factory.mktemp("in")
    (root / "sub").mkdir()
    make_clip(root / "a.mp4", frames=8, width=16, height=16, audio=[AudioSpec()])
    make_clip(root / "sub" / "b.mkv", frames=6, width=16, height=16, audio=[AudioSpec()])
    make_clip(root / "c.mkv", frames=5, width=16, height=16, audio=[AudioSpec()])
    not_a_video(root, "broken.mp4")
    return root


def test_a_run_on_auto_starts_ray_and_stops_it(in_dir: Path, tmp_path: Path) -> None:
    """The CLI with --ray auto and no cluster: a local instance is started, used and gone afterwards."""
    before = _ray_processes()
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(TESTS / "toy_cli.py"), "--", "restore", str(in_dir), str(out),
         "--ray", "auto", "--ray-cpus", "1", "--device", "cpu", "--tile", "off", "--quiet"],
        env={**{k: v for k, v in _env().items() if k not in ("RAY_ADDRESS", "RAY_worker_niceness")},
             "TOY_NICENESS_FILE": str(tmp_path / "niceness")},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr  # broken.mp4 fails, alone
    assert (tmp_path / "niceness").read_text() == "0", "the workers run at the user's priority, not Ray's 15"
    assert "broken.mp4" in run.stderr and run.stderr.count("failed:") == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.mp4", "c.mkv", "sub/b.mkv",
    ]  # fmt: skip
    deadline = time.monotonic() + 15
    while (left := _ray_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray processes left running: {left}"


@pytest.fixture(scope="module")
def local_ray(one_thread_per_module: None) -> Iterator[object]:
    """A 2-CPU Ray instance on 127.0.0.1 for the module; workers can import tests/ (the toy models)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", _env()["PYTHONPATH"])
        ctx = ray.init(
            num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
        )
        assert ctx.address_info["node_ip_address"] == "127.0.0.1"
        try:
            yield ctx
        finally:
            ray.shutdown()


def test_folder_mode_matches_one_process(local_ray: object, in_dir: Path, tmp_path: Path) -> None:
    model = ToySequence(radius=2)
    one, many = tmp_path / "one", tmp_path / "many"
    expected = restore_folder(in_dir, one, OPTIONS, model)
    seen: list[tuple[int, int | None]] = []
    from fmanetpp_cli.pipeline.batch import BatchCallbacks

    report = restore_folder_ray(
        in_dir, many, OPTIONS, model, cluster=CLUSTER, report_path=tmp_path / "r.json",
        callbacks=BatchCallbacks(on_progress=lambda done, total: seen.append((done, total))),
    )  # fmt: skip
    assert [(i.input, i.status) for i in report.items] == [(i.input, i.status) for i in expected.items]
    assert [i.status for i in report.items] == [OK, FAILED, OK, OK]  # a, broken, c, sub/b
    assert report.exit_code == expected.exit_code == 1
    assert "broken.mp4" in report.items[1].reason
    for rel in ("a.mp4", "c.mkv", "sub/b.mkv"):
        _same_video(one / rel, many / rel)
    assert report.frames == 19
    assert seen and seen[-1][0] == 19, "the job's bar ends at every frame of every file"
    assert all(total == seen[0][1] for _, total in seen) and seen[0][1] >= 19  # as the containers declare
    assert (tmp_path / "r.json").is_file()

    again = restore_folder_ray(in_dir, many, OPTIONS, model, cluster=CLUSTER, skip_existing=True)
    assert [i.status for i in again.items] == [SKIPPED, FAILED, SKIPPED, SKIPPED]


def test_a_worker_killed_mid_file_is_retried(local_ray: object, in_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "killed"
    dying = DiesOnce(marker, at=2)  # the second pass: frames of the first are already being written
    steady = ToySequence(radius=2)
    steady.load_state_dict(dying.state_dict())
    clip = in_dir / "a.mp4"
    solo = tmp_path / "solo" / "a.mp4"
    solo.parent.mkdir()
    restore_video(clip, solo, OPTIONS, steady)
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(clip, src / "a.mp4")

    report = restore_folder_ray(src, tmp_path / "out", OPTIONS, dying, cluster=CLUSTER)
    assert marker.exists(), "a worker was killed"
    assert [i.status for i in report.items] == [OK], report.items[0].reason
    _same_video(solo, tmp_path / "out" / "a.mp4")
    assert leftovers(tmp_path / "out") == []


def test_a_file_whose_worker_died_after_a_finished_segment_resumes(local_ray: object, tmp_path: Path) -> None:
    """The retry finds the dead attempt's work folder with a finished segment (120 frames): it continues
    from it instead of refusing it as an earlier run's, and the file equals a one-process restore."""
    src = tmp_path / "src"
    src.mkdir()
    clip = make_clip(src / "long.mkv", frames=150, width=16, height=16, audio=[AudioSpec()])
    out = tmp_path / "out"
    first_segment = work_folder(out / "long.mkv") / "seg000000.mkv"
    marker = tmp_path / "killed"
    dying = DiesOnce(marker, at=45, after=first_segment)  # pass 45: frames 0-136 are restored
    steady = ToySequence(radius=2)
    steady.load_state_dict(dying.state_dict())
    restore_video(clip, tmp_path / "solo.mkv", OPTIONS, steady)
    report = restore_folder_ray(src, out, OPTIONS, dying, cluster=RayCluster(cpus_per_worker=2))
    assert marker.read_text().endswith("after=1"), "a worker was killed after its first segment"
    assert [i.status for i in report.items] == [OK], report.items[0].reason
    _same_video(tmp_path / "solo.mkv", out / "long.mkv")
    assert leftovers(out) == [] and not work_folder(out / "long.mkv").exists()


def test_one_video_split_over_workers_matches_one_process(local_ray: object, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "long.mkv", frames=23, width=16, height=16, audio=[AudioSpec()])
    marker = tmp_path / "killed"
    dying = DiesOnce(marker, at=3)  # one segment's worker dies; its segment runs again
    steady = ToySequence(radius=2)
    steady.load_state_dict(dying.state_dict())
    restore_video(clip, tmp_path / "one.mkv", OPTIONS, steady)
    seen: list[int] = []
    split = RayCluster(cpus_per_worker=1, segment_frames=4)  # 2 chunks of 3 kept frames a segment
    report = restore_video_ray(
        clip, tmp_path / "many.mkv", OPTIONS, dying, cluster=split, on_progress=lambda d, t: seen.append(d)
    )
    assert marker.exists()
    assert report.frames == 23 and seen[-1] == 23 and len(seen) >= 3, seen
    _same_video(tmp_path / "one.mkv", tmp_path / "many.mkv")


def test_split_mode_resumes_a_stopped_run(
    local_ray: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped in one process continues on the workers (``--resume --ray``) to the same file."""
    import fmanetpp_cli.pipeline.resume as resume

    monkeypatch.setattr(resume, "SEGMENT_FRAMES", 4)  # the driver's setting; workers only restore chunks
    clip = make_clip(tmp_path / "long.mkv", frames=23, width=16, height=16, audio=[AudioSpec()])
    model = ToySequence(radius=2)
    restore_video(clip, tmp_path / "one.mkv", OPTIONS, model)

    def stop(done: int, total: int | None) -> None:
        if done >= 10:
            raise KeyboardInterrupt

    out = tmp_path / "out.mkv"
    with pytest.raises(KeyboardInterrupt):
        restore_video(clip, out, OPTIONS, model, on_progress=stop)
    assert not out.exists() and len(list(resume.work_folder(out).glob("seg*"))) >= 2
    split = RayCluster(cpus_per_worker=1, segment_frames=4)
    report = restore_video_ray(clip, out, replace(OPTIONS, resume=True), model, cluster=split)
    assert report.frames == 23 and not resume.work_folder(out).exists()
    _same_video(tmp_path / "one.mkv", out)


def test_the_cli_splits_one_file_over_the_workers(
    local_ray: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fmanetpp_cli.checkpoints as checkpoints
    import fmanetpp_cli.checkpoints.resolve as resolve

    clip = make_clip(tmp_path / "v.mkv", frames=12, width=16, height=16, audio=[AudioSpec()])
    model = ToySequence(radius=2)
    monkeypatch.setattr(resolve, "resolve_weights", lambda name, weights, offline=None: Path("toy"))
    monkeypatch.setattr(checkpoints, "load_model", lambda path, device="cpu": model)
    restore_video(clip, tmp_path / "one.mkv", OPTIONS, model)
    code, out, err = run_cli(
        ["restore", str(clip), str(tmp_path / "many.mkv"), "--ray", "auto", "--ray-cpus", "1",
         "--device", "cpu", "--tile", "off", "--chunk", "7", "--codec", "ffv1", "--threads", "1", "--json"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["frames"] == 12
    _same_video(tmp_path / "one.mkv", tmp_path / "many.mkv")
