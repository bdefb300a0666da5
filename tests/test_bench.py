"""`fmanetpp bench` and its library (fmanetpp_cli/bench.py), and the thread choice (runtime.set_threads)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from fmanetpp_cli import runtime
from fmanetpp_cli.bench import parse_size, write_synthetic_clip
from fmanetpp_cli.errors import ConfigError
from tests.cli_run import run_cli

TIMES = (
    "seconds_per_frame",
    "model_seconds_per_frame",
    "decode_seconds_per_frame",
    "encode_seconds_per_frame",
)


@pytest.fixture(autouse=True)
def _keep_threads() -> object:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_bench_json_on_a_tiny_size(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "--model", "fmanetpp-tiny", "--size", "20x12", "--frames", "3", "--threads", "1"]
    code, out, err = run_cli([*argv, "--tile", "off", "--device", "cpu", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["model"] == "fmanetpp-tiny"
    assert (report["width"], report["height"], report["frames"], report["threads"]) == (20, 12, 3, 1)
    assert (report["device"], report["precision"]) == ("cpu", "fp32")
    for key in TIMES:
        assert report[key] > 0, key
    assert report["other_seconds_per_frame"] >= 0
    assert report["model_seconds_per_frame"] < report["seconds_per_frame"]
    assert report["peak_rss_mib"] > 50  # torch alone is more than that
    assert report["thread_choice"] == {"threads": 1, "probe_seconds": {}}
    # The split comes from the one threaded run: start-up on its own, then what the model waited for.
    assert report["io_threads"] is True
    assert report["startup_seconds"] > 0 and report["load_seconds"] >= 0
    assert report["import_seconds"] is None or report["import_seconds"] > 0
    assert report["wait_seconds_per_frame"] >= 0 and report["overhead"] > 0
    wall, model = report["seconds_per_frame"] * 3, report["model_seconds_per_frame"] * 3
    assert report["overhead"] == pytest.approx((wall - report["startup_seconds"] - model) / model, rel=1e-6)


def test_bench_without_io_threads(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "-m", "fmanetpp-tiny", "--size", "16x12", "--frames", "2", "--threads", "1"]
    code, out, err = run_cli([*argv, "--tile", "off", "--device", "cpu", "--no-io-threads", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["io_threads"] is False
    # Without threads the model's thread does all of the decoding and encoding itself.
    assert report["wait_seconds_per_frame"] >= report["encode_seconds_per_frame"] * 0.999


def test_bench_table_without_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "bench",
        "-m",
        "fmanetpp-tiny",
        "--size",
        "8x8",
        "--frames",
        "2",
        "--threads",
        "1",
        "--tile",
        "off",
    ]
    code, out, err = run_cli([*argv, "--device", "cpu"], capsys)
    assert code == 0, err
    assert "per frame" in out and "model" in out and "peak memory" in out


@pytest.mark.parametrize("text", ["320", "axb", "1x10", "320x180x2", ""])
def test_bad_sizes_are_refused(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="--size"):
        parse_size(text)
    code, _, err = run_cli(["bench", "--size", text or "x"], capsys)
    assert code == 1 and "--size" in err


def test_parse_size_reads_width_then_height() -> None:
    assert parse_size("320x180") == (320, 180)
    assert parse_size("64X48") == (64, 48)


def test_probe_picks_the_fastest_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # A workload that is slower with two threads (as on a loaded 2-core machine), then one that is faster.
    for slow, expected in ((2, 1), (1, 2)):
        monkeypatch.setattr(
            runtime,
            "_probe_workload",
            lambda slow=slow: time.sleep(0.02 if torch.get_num_threads() == slow else 0.001),
        )
        torch.set_num_threads(1)
        choice = runtime.probe_threads([1, 2], repeats=2)
        assert choice.threads == expected
        assert set(choice.probe_seconds) == {1, 2}
        assert choice.probe_seconds[expected] < choice.probe_seconds[slow]
        assert torch.get_num_threads() == 1  # the probe leaves the count as it found it


def test_set_threads_explicit_and_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert runtime.set_threads(1).threads == 1 and torch.get_num_threads() == 1
    monkeypatch.setattr(runtime, "probe_threads", lambda: runtime.ThreadChoice(2, {1: 0.5, 2: 0.1}))
    assert runtime.set_threads(None).threads == 2 and torch.get_num_threads() == 2
    with pytest.raises(ConfigError, match="--threads"):
        runtime.set_threads(0)


def test_thread_candidates() -> None:
    assert runtime.thread_candidates(1) == [1]
    assert runtime.thread_candidates(2) == [1, 2]
    assert runtime.thread_candidates(6) == [1, 2, 4, 6]
    assert runtime.thread_candidates()[-1] == runtime.usable_cores()


@pytest.fixture
def restore_spy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """`fmanetpp restore` with the model loading and the restore itself replaced; records the threads."""
    import fmanetpp_cli.checkpoints as ckpt
    import fmanetpp_cli.checkpoints.resolve as resolve
    import fmanetpp_cli.cli.restore as cli_restore

    seen: dict[str, Any] = {"src": tmp_path / "in.mp4"}
    write_synthetic_clip(seen["src"], 16, 12, 2)
    monkeypatch.setattr(resolve, "resolve_weights", lambda model, weights, offline=None: Path("toy"))
    monkeypatch.setattr(ckpt, "load_model", lambda path, device="cpu": torch.nn.Identity())

    def fake_restore(*args: object, **kwargs: object) -> object:
        seen["threads"] = torch.get_num_threads()
        return object()

    monkeypatch.setattr(cli_restore, "restore_video", fake_restore)
    monkeypatch.setattr(cli_restore, "render_summary", lambda report: None)
    return seen


def test_restore_threads_option(restore_spy: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    src = str(restore_spy["src"])
    code, _, err = run_cli(
        ["restore", src, str(restore_spy["src"].with_name("o.mp4")), "--threads", "1"], capsys
    )
    assert code == 0, err
    assert restore_spy["threads"] == 1
    assert "threads 1" in err and "probe" not in err
    code, _, err = run_cli(["restore", src, "o2.mp4", "--threads", "0"], capsys)
    assert code == 1 and "--threads" in err


def test_restore_threads_default_is_the_probes_choice(
    restore_spy: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "probe_threads", lambda: runtime.ThreadChoice(2, {1: 0.3, 2: 0.1}))
    src = restore_spy["src"]
    code, _, err = run_cli(["restore", str(src), str(src.with_name("o.mp4"))], capsys)
    assert code == 0, err
    assert restore_spy["threads"] == 2
    assert "threads 2 (probe: 1: 300 ms, 2: 100 ms)" in err
