"""`fmanetpp weights import|info`: arguments reach the library, results render, errors are one line."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from fmanetpp_cli.checkpoints import ImportResult
from fmanetpp_cli.checkpoints.weights_file import build_metadata
from fmanetpp_cli.cli import weights as weights_cli
from fmanetpp_cli.cli.app import app, main

runner = CliRunner()


def _run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the console-script entry point in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


def test_import_passes_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_import(*args: Any, **kwargs: Any) -> ImportResult:
        calls.append((args, kwargs))
        return ImportResult(
            output=Path(args[1]), config={"dim": 90}, sources={"a.zip": "ab" * 32}, num_params=1234567
        )

    monkeypatch.setattr(weights_cli, "import_official", fake_import)
    src, out, cfg = tmp_path / "FMA-Net_REDS.zip", tmp_path / "w.safetensors", tmp_path / "experiment.cfg"
    args = ["weights", "import", str(src), str(out), "--config", str(cfg), "--overwrite"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert calls == [((src, out), {"config": cfg, "overwrite": True})]
    assert "1,234,567 parameters" in result.stdout and "channel order BGR" in result.stdout
    assert "ab" * 32 in result.stdout

    calls.clear()
    result = runner.invoke(app, ["weights", "import", str(src), str(out)])
    assert result.exit_code == 0
    assert calls == [((src, out), {"config": None, "overwrite": False})]


def _tiny_weights(path: Path) -> None:
    tensors = {"w": torch.zeros(3, 4), "b": torch.zeros(5)}
    meta = build_metadata(
        "fmanet",
        {"dim": 18, "num_flow": 3},
        channel_order="BGR",
        source_sha256={"model_D_best.pt": "0" * 64},
        extra={"name": "tiny"},
    )
    save_file(tensors, path, metadata=meta)


def test_info_renders_and_json(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    _tiny_weights(path)
    result = runner.invoke(app, ["weights", "info", str(path)])
    assert result.exit_code == 0, result.output
    for text in ("fmanet", "BGR", "17 in 2 tensors", "dim=18", "model_D_best.pt", "tiny"):
        assert text in result.stdout, text
    result = runner.invoke(app, ["weights", "info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["arch"] == "fmanet" and data["channel_order"] == "BGR" and data["num_params"] == 17
    assert data["config"] == {"dim": 18, "num_flow": 3}
    assert data["sources"] == {"model_D_best.pt": "0" * 64} and data["metadata"] == {"name": "tiny"}


def test_errors_are_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-release.zip"
    code, out, err = _run_main(["weights", "import", str(missing), str(tmp_path / "o.safetensors")], capsys)
    assert code == 1 and str(missing) in _one_line(err) and out == ""

    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(1)}, bare)
    code, _, err = _run_main(["weights", "info", str(bare)], capsys)
    assert code == 1 and "not an fmanetpp weights file" in _one_line(err) and str(bare) in err

    not_zip = tmp_path / "notes.txt"
    not_zip.write_text("x")
    code, _, err = _run_main(["weights", "import", str(not_zip), str(tmp_path / "o.safetensors")], capsys)
    assert code == 1 and str(not_zip) in _one_line(err)
    assert not (tmp_path / "o.safetensors").exists()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_unsafe_checkpoint_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    src = tmp_path / "release" / "model_stage2"
    src.mkdir(parents=True)
    (src / "model_D_best.pt").write_bytes(pickle.dumps({"model_D_state_dict": _Payload(marker)}, protocol=2))
    torch.save({"model_R_state_dict": {"w": torch.zeros(1)}}, src / "model_R_best.pt")
    out = tmp_path / "o.safetensors"
    code, _, err = _run_main(["weights", "import", str(tmp_path / "release"), str(out)], capsys)
    line = _one_line(err)
    assert code == 1 and not marker.exists() and not out.exists()
    assert str(src / "model_D_best.pt") in line and "system" in line and "nothing was executed" in line


def test_import_then_info_on_mock_checkpoints(
    tmp_path: Path, v1_reference: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mock = v1_reference / "mock-checkpoint-small-a"
    out = tmp_path / "small-a.safetensors"
    cfg = v1_reference / "small-a-32x32" / "config.json"
    result = runner.invoke(app, ["weights", "import", str(mock), str(out), "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "192,621 parameters" in result.stdout and out.is_file()
    result = runner.invoke(app, ["weights", "info", str(out), "--json"])
    data = json.loads(result.stdout)
    assert data["channel_order"] == "BGR" and data["num_params"] == 192_621 and data["num_tensors"] == 161
    assert set(data["sources"]) == {"model_stage2/model_D_best.pt", "model_stage2/model_R_best.pt"}

    # Importing again refuses to overwrite; the full-size default config does not fit these weights.
    code, _, err = _run_main(["weights", "import", str(mock), str(out)], capsys)
    assert code == 1 and "already exists" in _one_line(err) and str(out) in err
    other = tmp_path / "full.safetensors"
    code, _, err = _run_main(["weights", "import", str(mock), str(other)], capsys)
    line = _one_line(err)
    assert code == 1 and str(mock) in line and not other.exists()
    assert "mis-shaped [degradation_learning_network.feature_extractor.0.weight: file (18, 3" in line
