"""The model zoo table, the weights folders, resolve_weights' order (no network) and the catalog."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from cli_run import run_cli
from safetensors.torch import save_file

from fmanetpp_cli._files import sha256_file
from fmanetpp_cli.checkpoints import catalog, resolve, zoo
from fmanetpp_cli.checkpoints.weights_file import build_metadata
from fmanetpp_cli.errors import ChecksumError, ConfigError, WeightsNotFoundError

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_weights(path: Path, *, arch: str = "fmanetpp", channel_order: str = "RGB", **extra: str) -> Path:
    """A small file in the fmanetpp.weights/1 format (headers are all the zoo and catalog read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = build_metadata(arch, {"scale": 4, "dim": 8}, channel_order=channel_order, extra=extra or None)
    save_file({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, str(path), metadata=meta)
    return path


@pytest.fixture
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty first weights folder (FMANETPP_WEIGHTS_DIR) and an empty per-user folder."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(folder))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return folder


def test_zoo_entries_are_honest() -> None:
    """Hub entries pin a commit and a sha256; local-only entries say how to get the file."""
    assert zoo.DEFAULT_MODEL in zoo.ZOO and zoo.ZOO[zoo.DEFAULT_MODEL].bundled
    for spec in zoo.ZOO.values():
        assert spec.arch in ("fmanet", "fmanetpp") and spec.channel_order in ("RGB", "BGR")
        assert spec.filename.endswith(".safetensors") and spec.license
        if spec.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256), spec.name
        if spec.repo_id is None:
            assert spec.revision is None and spec.notes, spec.name
        else:
            assert re.fullmatch(r"[0-9a-f]{40}", spec.revision or ""), spec.name
            assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256 or ""), spec.name
    assert zoo.ZOO["fmanet-reds"].channel_order == "BGR", "the official weights were trained on BGR frames"


def test_zoo_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        zoo.ZOO["x"] = zoo.ZOO[zoo.DEFAULT_MODEL]  # type: ignore[index]
    with pytest.raises(AttributeError):
        zoo.ZOO[zoo.DEFAULT_MODEL].sha256 = "0" * 64  # type: ignore[misc]


def test_weights_dirs_order(weights_dir: Path, tmp_path: Path) -> None:
    dirs = zoo.weights_dirs()
    assert dirs[0] == weights_dir
    assert REPO_ROOT / "weights" in dirs, "a source checkout's weights/ folder is searched"
    assert dirs[-1] == tmp_path / "xdg" / "fmanetpp" / "weights"


def test_default_resolves_to_the_bundled_file(weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = zoo.ZOO[zoo.DEFAULT_MODEL]
    bundled = write_weights(weights_dir / spec.filename)  # found first: FMANETPP_WEIGHTS_DIR leads
    with pytest.raises(ChecksumError, match="update its sha256"):
        resolve.resolve_weights()  # not the pinned file
    pinned = dataclasses.replace(spec, sha256=sha256_file(bundled))
    monkeypatch.setattr(zoo, "ZOO", {**zoo.ZOO, spec.name: pinned})
    assert resolve.resolve_weights() == bundled
    assert resolve.resolve_weights(zoo.DEFAULT_MODEL) == bundled


def test_missing_bundled_file_says_so(weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "weights_dirs", lambda: [weights_dir])
    with pytest.raises(WeightsNotFoundError, match="bundled default is missing"):
        resolve.resolve_weights()


def test_weights_option_and_paths(weights_dir: Path, tmp_path: Path) -> None:
    file = write_weights(tmp_path / "mine.safetensors")
    assert resolve.resolve_weights(weights=str(file)) == file
    assert resolve.resolve_weights(str(file)) == file
    with pytest.raises(WeightsNotFoundError, match="no such weights file"):
        resolve.resolve_weights(weights=str(tmp_path / "absent.safetensors"))
    with pytest.raises(WeightsNotFoundError, match="is a folder"):
        resolve.resolve_weights(weights=str(tmp_path))
    with pytest.raises(ConfigError, match="not both"):
        resolve.resolve_weights("fmanet-reds", str(file))
    with pytest.raises(ConfigError, match="repository id"):
        resolve.resolve_weights(str(file), filename="x.safetensors")
    # A path-looking name that does not exist is not taken for a repository id.
    with pytest.raises(WeightsNotFoundError, match="not a weights file"):
        resolve.resolve_weights("some/dir/model.safetensors")


def test_imported_official_weights_resolve_by_name(weights_dir: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="weights import"):
        resolve.resolve_weights("fmanet-reds")
    imported = write_weights(weights_dir / "fmanet-reds.safetensors", arch="fmanet", channel_order="BGR")
    assert resolve.resolve_weights("fmanet-reds") == imported


def test_local_file_stem_resolves(weights_dir: Path) -> None:
    mine = write_weights(weights_dir / "my-finetune.safetensors")
    assert resolve.resolve_weights("my-finetune") == mine
    with pytest.raises(WeightsNotFoundError, match="fmanetpp models"):
        resolve.resolve_weights("not-there")


def test_zoo_sha256_is_checked_for_local_files(weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = write_weights(weights_dir / "pinned.safetensors")
    digest = sha256_file(file)
    good = zoo.WeightSpec(name="pinned", arch="fmanetpp", config="x", filename=file.name, sha256=digest)
    bad = zoo.WeightSpec(name="pinned", arch="fmanetpp", config="x", filename=file.name, sha256="0" * 64)
    monkeypatch.setattr(zoo, "ZOO", {"pinned": good})
    assert resolve.resolve_weights("pinned") == file
    monkeypatch.setattr(zoo, "ZOO", {"pinned": bad})
    with pytest.raises(ChecksumError, match="pinned"):
        resolve.resolve_weights("pinned")
    assert file.exists(), "a local file is refused, never deleted"


def test_repo_id_shape() -> None:
    assert resolve.looks_like_repo_id("org/name")
    assert resolve.looks_like_repo_id("org/name.v2")
    for text in ("name", "org/name.safetensors", "../a/b", "a/b/c", "/abs/path", "org/..x"):
        assert not resolve.looks_like_repo_id(text), text


def test_catalog_lists_zoo_imports_and_own_files(weights_dir: Path) -> None:
    write_weights(weights_dir / "fmanet-reds.safetensors", arch="fmanet", channel_order="BGR")
    write_weights(weights_dir / "my-finetune.safetensors", license="MIT", description="mine")
    (weights_dir / "junk.safetensors").write_bytes(b"not a safetensors file")
    rows = {r.name: r for r in catalog.list_models()}
    assert (
        rows["fmanet-reds"].available and rows["fmanet-reds"].path == weights_dir / "fmanet-reds.safetensors"
    )
    assert rows["fmanet-reds"].kind == "zoo" and rows["fmanet-reds"].channel_order == "BGR"
    assert rows[zoo.DEFAULT_MODEL].kind == "bundled"
    assert rows["my-finetune"].kind == "local" and rows["my-finetune"].arch == "fmanetpp"
    assert rows["my-finetune"].license == "MIT" and rows["my-finetune"].notes == "mine"
    assert "junk" not in rows, "files that are not fmanetpp weights are not listed"
    json.dumps([r.to_dict() for r in rows.values()])  # plain JSON types


def test_models_command_json(weights_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_weights(weights_dir / "fmanet-reds.safetensors", arch="fmanet", channel_order="BGR")
    code, out, _ = run_cli(["models", "--json"], capsys)
    assert code == 0
    payload = json.loads(out)
    names = {m["name"]: m for m in payload["models"]}
    assert names["fmanet-reds"]["available"] is True
    assert str(weights_dir) in payload["weights_dirs"]


def test_models_table_fits_80_columns(
    weights_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fmanetpp_cli.cli import _console

    monkeypatch.setattr(_console.out, "_width", 80)
    write_weights(weights_dir / "fmanet-reds.safetensors", arch="fmanet", channel_order="BGR")
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0
    table = out.split("Weights folders searched:")[0]
    assert max(len(line) for line in table.splitlines()) <= 80
    row = next(line for line in table.splitlines() if line.lstrip().startswith("fmanet-reds"))
    assert "fmanet-reds.safetensors" in row, "a file in a searched folder is named without its folder"
    assert "MIT" not in table, "licences are shown with --notes only"
    code, out, _ = run_cli(["models", "--notes"], capsys)
    assert "REDS" in out


COMMITTED = [name for name, spec in zoo.ZOO.items() if (REPO_ROOT / "weights" / spec.filename).is_file()]


def test_the_default_is_committed() -> None:
    assert zoo.DEFAULT_MODEL in COMMITTED


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_files_match_their_zoo_entries(name: str) -> None:
    """Every weights file in weights/ agrees with its zoo entry: metadata, preset and pinned sha256."""
    spec = zoo.ZOO[name]
    path = REPO_ROOT / "weights" / spec.filename
    from fmanetpp_cli.checkpoints import read_weights_info
    from fmanetpp_cli.models import MODEL_CONFIGS, config_from_dict, list_models

    info = read_weights_info(path)
    assert info.arch == spec.arch and info.channel_order == spec.channel_order
    if spec.config in list_models():
        assert config_from_dict(info.arch, info.config) == MODEL_CONFIGS[spec.config]
    if spec.sha256 is not None:
        assert sha256_file(path) == spec.sha256
