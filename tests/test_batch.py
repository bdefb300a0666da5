"""Folder processing: mirrored outputs, one model, skip-existing, failures recorded, safety of the folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from cli_run import run_cli
from media import make_clip, not_a_video
from torch import nn
from toy_models import CountingIdentity4

from fmanetpp_cli.errors import ConfigError, VideoOpenError
from fmanetpp_cli.pipeline import RestoreOptions
from fmanetpp_cli.pipeline import batch as batch_mod
from fmanetpp_cli.pipeline import runner as runner_mod
from fmanetpp_cli.pipeline.batch import (
    FAILED,
    OK,
    SKIPPED,
    BatchCallbacks,
    find_videos,
    plan_folder,
    restore_folder,
)
from fmanetpp_cli.video import probe

OPTIONS = RestoreOptions(device="cpu", tile=0)


class _Interrupted(BaseException):
    """Stands in for KeyboardInterrupt (pytest intercepts that one): not an Exception, so it stops a batch."""


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def in_dir(tmp_path: Path) -> Path:
    """a.mp4, sub/b.mkv, sub/deeper/c.mov (tiny clips) and a notes.txt that is not a video."""
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    make_clip(root / "a.mp4", frames=3, width=16, height=16)
    make_clip(root / "sub" / "b.mkv", frames=2, width=16, height=16)
    make_clip(root / "sub" / "deeper" / "c.mov", frames=2, width=16, height=16)
    (root / "notes.txt").write_text("not a video")
    return root


def test_mirrors_the_tree_with_one_model_and_never_writes_the_input(in_dir: Path, tmp_path: Path) -> None:
    before = _tree(in_dir)
    model = CountingIdentity4()
    out = tmp_path / "out"
    report = restore_folder(in_dir, out, OPTIONS, model, report_path=tmp_path / "report.json")
    assert [i.status for i in report.items] == [OK, OK, OK]
    assert report.exit_code == 0 and report.frames == 7
    for rel, frames in (("a.mp4", 3), ("sub/b.mkv", 2), ("sub/deeper/c.mov", 2)):
        info = probe(out / rel)
        assert (info.width, info.height) == (64, 64)
        assert info.expected_frames in (None, frames)
    assert model.calls >= 3, "one model instance served every file"
    assert _tree(in_dir) == before, "the input folder must be untouched"
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["ok"] == 3 and saved["failed"] == 0 and saved["exit_code"] == 0
    assert [Path(i["input"]).name for i in saved["items"]] == ["a.mp4", "b.mkv", "c.mov"]


def test_folders_checked_and_files_probed_once_before_the_model_loads(
    in_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fmanetpp_cli.video as video_mod

    probed: list[str] = []
    checked: list[Path] = []
    real_probe, real_check = video_mod.probe, batch_mod.check_folders

    def counting_probe(path: Path, *args: object, **kwargs: object) -> object:
        probed.append(Path(path).name)
        return real_probe(path, *args, **kwargs)  # type: ignore[arg-type]

    def counting_check(*args: object, **kwargs: object) -> tuple[Path, Path]:
        checked.append(Path(str(args[0])))
        return real_check(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(video_mod, "probe", counting_probe)
    monkeypatch.setattr(runner_mod, "probe", counting_probe)
    monkeypatch.setattr(batch_mod, "check_folders", counting_check)
    loads: list[int] = []

    def load() -> CountingIdentity4:
        loads.append(len(checked))
        return CountingIdentity4()

    report = restore_folder(in_dir, tmp_path / "out", OPTIONS, load)
    assert report.exit_code == 0 and report.frames == 7
    assert checked == [in_dir] and loads == [1], "the folders are checked once, then the model loads once"
    assert sorted(probed) == ["a.mp4", "b.mkv", "c.mov"], "each file is probed once (plan and restore)"
    with pytest.raises(VideoOpenError):
        restore_folder(tmp_path / "nope", tmp_path / "out2", OPTIONS, load)
    assert loads == [1], "bad folders fail before the model loads"


def test_a_failing_file_does_not_stop_the_batch(in_dir: Path, tmp_path: Path) -> None:
    not_a_video(in_dir / "sub", "broken.mp4")
    out = tmp_path / "out"
    report = restore_folder(in_dir, out, OPTIONS, CountingIdentity4())
    status = {i.input.name: i for i in report.items}
    assert status["broken.mp4"].status == FAILED
    assert "broken.mp4" in status["broken.mp4"].reason
    assert [status[n].status for n in ("a.mp4", "b.mkv", "c.mov")] == [OK, OK, OK]
    assert report.exit_code == 1
    assert not (out / "sub" / "broken.mp4").exists()
    assert [p.name for p in (out / "sub").iterdir() if p.name.startswith(".")] == [], "no temp file left"


def test_skip_existing_continues_where_the_last_run_stopped(
    in_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    real = batch_mod.restore_video
    calls: list[str] = []
    skip_pass = False

    def interrupted(src: Path, dst: Path, *args: object, **kwargs: object) -> object:
        calls.append(Path(src).name)
        if len(calls) == 2 and not skip_pass:
            raise _Interrupted  # the run is stopped during the second file
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(batch_mod, "restore_video", interrupted)
    with pytest.raises(_Interrupted):
        restore_folder(in_dir, out, OPTIONS, CountingIdentity4())
    assert (out / "a.mp4").is_file() and not (out / "sub" / "b.mkv").exists()
    first = (out / "a.mp4").stat().st_mtime_ns

    calls.clear()
    skip_pass = True
    report = restore_folder(in_dir, out, OPTIONS, CountingIdentity4(), skip_existing=True)
    assert [i.status for i in report.items] == [SKIPPED, OK, OK]
    assert calls == ["b.mkv", "c.mov"]
    assert (out / "a.mp4").stat().st_mtime_ns == first
    assert report.exit_code == 0

    # Without --skip-existing an existing output is a failure, never silently replaced.
    again = restore_folder(in_dir, out, OPTIONS, CountingIdentity4())
    assert {i.status for i in again.items} == {FAILED} and "exists" in again.items[0].reason
    assert again.exit_code == 1


def test_glob_filters_by_relative_path(in_dir: Path) -> None:
    names = [p.relative_to(in_dir).as_posix() for p in find_videos(in_dir)]
    assert names == ["a.mp4", "sub/b.mkv", "sub/deeper/c.mov"]
    assert [p.name for p in find_videos(in_dir, "*.mkv")] == ["b.mkv"]
    assert [p.name for p in find_videos(in_dir, "deeper/*")] == ["c.mov"]
    assert [p.name for p in find_videos(in_dir, "*.txt")] == ["notes.txt"]


def test_hidden_entries_are_skipped(in_dir: Path) -> None:
    (in_dir / ".cache").mkdir()
    make_clip(in_dir / ".cache" / "x.mp4", frames=1, width=16, height=16)
    make_clip(in_dir / ".hidden.mp4", frames=1, width=16, height=16)
    assert [p.name for p in find_videos(in_dir)] == ["a.mp4", "b.mkv", "c.mov"]


@pytest.mark.parametrize("where", ["same", "inside", "dotdot"])
def test_output_folder_may_not_be_or_lie_in_the_input(in_dir: Path, where: str) -> None:
    out = {
        "same": in_dir,
        "inside": in_dir / "restored",
        "dotdot": in_dir.parent / "elsewhere" / ".." / in_dir.name / "restored",
    }[where]
    with pytest.raises(ConfigError, match="input folder"):
        restore_folder(in_dir, out, OPTIONS, CountingIdentity4())
    assert not (in_dir / "restored").exists()


def test_report_may_not_go_into_the_input(in_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="report"):
        restore_folder(in_dir, tmp_path / "out", OPTIONS, CountingIdentity4(), report_path=in_dir / "r.json")


def test_missing_input_folder(tmp_path: Path) -> None:
    with pytest.raises(VideoOpenError, match="no such folder"):
        restore_folder(tmp_path / "nope", tmp_path / "out", OPTIONS, CountingIdentity4())


def test_symlink_out_of_the_output_folder_is_refused(in_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "sub")  # out/sub/... would land in tmp/elsewhere
    report = restore_folder(in_dir, out, OPTIONS, CountingIdentity4())
    status = {i.input.name: i for i in report.items}
    assert status["a.mp4"].status == OK
    for name in ("b.mkv", "c.mov"):
        assert status[name].status == FAILED and "outside the output folder" in status[name].reason
    assert list(elsewhere.iterdir()) == []
    assert report.exit_code == 1


def test_output_resolving_into_the_input_is_refused(tmp_path: Path) -> None:
    # in = data/raw, out = data: the file raw/raw/x.mp4 would be written to data/raw/x.mp4, inside the input.
    data = tmp_path / "data"
    raw = data / "raw"
    (raw / "raw").mkdir(parents=True)
    make_clip(raw / "raw" / "x.mp4", frames=1, width=16, height=16)
    make_clip(raw / "y.mp4", frames=1, width=16, height=16)
    tasks = {t.relative.as_posix(): t for t in plan_folder(raw, data)}
    assert tasks["raw/x.mp4"].problem is not None and "input folder" in tasks["raw/x.mp4"].problem
    assert tasks["y.mp4"].problem is None


def test_extension_rule_and_collisions(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    make_clip(root / "clip.mp4", frames=1, width=16, height=16)
    (root / "clip.avi").write_bytes(b"x")  # would become clip.mkv
    (root / "clip.mkv").write_bytes(b"x")  # collides with it
    tasks = {t.input.name: t for t in plan_folder(root, tmp_path / "out", probe_frames=False)}
    assert tasks["clip.mp4"].output.name == "clip.mp4"
    assert tasks["clip.avi"].output.name == "clip.mkv"
    assert tasks["clip.mkv"].problem is not None and "also the output" in tasks["clip.mkv"].problem
    forced = plan_folder(root, tmp_path / "out", extension="mov", probe_frames=False)
    assert {t.output.suffix for t in forced} == {".mov"}


def test_callbacks_report_plan_files_and_frames(in_dir: Path, tmp_path: Path) -> None:
    events: list[tuple] = []
    hooks = BatchCallbacks(
        on_plan=lambda tasks: events.append(("plan", len(tasks), sum(t.frames or 0 for t in tasks))),
        on_file=lambda task, i: events.append(("file", i, task.input.name)),
        on_progress=lambda done, total: events.append(("frame", done, total)),
        on_result=lambda item: events.append(("result", item.status)),
    )
    restore_folder(in_dir, tmp_path / "out", OPTIONS, CountingIdentity4(), callbacks=hooks)
    assert events[0] == ("plan", 3, 7)
    assert [e for e in events if e[0] == "file"] == [
        ("file", 0, "a.mp4"),
        ("file", 1, "b.mkv"),
        ("file", 2, "c.mov"),
    ]
    assert sum(1 for e in events if e[0] == "frame") == 7
    assert [e for e in events if e[0] == "result"] == [("result", OK)] * 3


def test_contradicting_options(in_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="skip-existing"):
        restore_folder(
            in_dir,
            tmp_path / "o",
            RestoreOptions(device="cpu", overwrite=True),
            CountingIdentity4(),
            skip_existing=True,
        )
    with pytest.raises(ConfigError, match="compare"):
        restore_folder(
            in_dir, tmp_path / "o", RestoreOptions(device="cpu", compare=tmp_path / "c.mp4"), nn.Identity()
        )


torch.set_num_threads(min(2, os.cpu_count() or 1))


# ----------------------------------------------------------------------------------------------------------
# The CLI: `fmanetpp restore IN_DIR OUT_DIR`


@pytest.fixture
def toy_weights(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Weights resolution and loading replaced by the toy model; records what was resolved."""
    import fmanetpp_cli.checkpoints as ckpt
    from fmanetpp_cli.checkpoints import resolve

    seen: list[str] = []

    def fake_resolve(model: str | None, weights: str | None, offline: bool | None = None) -> Path:
        seen.append(f"{model}|{weights}")
        return Path("toy.safetensors")

    monkeypatch.setattr(resolve, "resolve_weights", fake_resolve)
    monkeypatch.setattr(ckpt, "load_model", lambda path, device="cpu": CountingIdentity4())
    return seen


def test_cli_folder_mode_exit_codes_table_and_report(
    in_dir: Path, tmp_path: Path, toy_weights: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = tmp_path / "out", tmp_path / "report.json"
    argv = ["restore", str(in_dir), str(out), "--device", "cpu", "--tile", "off", "--report", str(report)]
    code, stdout, _ = run_cli(argv, capsys)
    assert code == 0
    assert toy_weights == ["None|None"], "the model is resolved (and loaded) once for the whole folder"
    assert "3 ok, 0 skipped, 0 failed" in stdout and "sub/deeper/c.mov" in stdout
    assert json.loads(report.read_text())["exit_code"] == 0

    not_a_video(in_dir, "zz-broken.mp4")
    code, stdout, _ = run_cli([*argv, "--skip-existing"], capsys)
    assert code == 1
    assert "0 ok, 3 skipped, 1 failed" in stdout and "zz-broken.mp4" in stdout
    saved = json.loads(report.read_text())
    assert saved["failed"] == 1 and saved["items"][-1]["status"] == FAILED


def test_cli_folder_mode_refuses_before_loading_weights(
    in_dir: Path, toy_weights: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, stderr = run_cli(["restore", str(in_dir), str(in_dir / "out")], capsys)
    assert code == 1 and "input folder" in stderr and len(stderr.strip().splitlines()) == 1
    assert toy_weights == [] and not (in_dir / "out").exists()


def test_cli_folder_flags_need_a_folder(tmp_path: Path, toy_weights: list[str], capsys) -> None:
    clip = make_clip(tmp_path / "one.mp4", frames=1, width=16, height=16)
    code, _, stderr = run_cli(["restore", str(clip), str(tmp_path / "o.mp4"), "--skip-existing"], capsys)
    assert code == 1 and "only when INPUT is a folder" in stderr


def test_cli_folder_mode_shows_overall_and_per_file_progress(
    in_dir: Path, tmp_path: Path, toy_weights: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, stderr = run_cli(["restore", str(in_dir), str(tmp_path / "out"), "--device", "cpu"], capsys)
    assert code == 0
    lines = [" ".join(line.split()) for line in stderr.splitlines()]
    assert any(line.startswith("files") and "3/3 files" in line for line in lines), stderr
    assert any(line.startswith("frames") and "7/7 frames" in line for line in lines), stderr
    assert any(line.startswith("sub/deeper/c.mov") and "2/2 frames" in line for line in lines), stderr
