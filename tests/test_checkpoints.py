"""Weights I/O: safe reading, refusal of code in pickles, remapping, the weights file, official import."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import fmanetpp_cli
from fmanetpp_cli import models
from fmanetpp_cli.checkpoints import (
    import_official,
    load_model,
    read_state_dict,
    read_weights_info,
    save_model,
    sha256_file,
)
from fmanetpp_cli.checkpoints import weights_file as wf
from fmanetpp_cli.checkpoints.convert import (
    find_official_checkpoints,
    load_official_config,
    official_to_config,
    parse_experiment_cfg,
)
from fmanetpp_cli.checkpoints.io import scan_pickle_globals
from fmanetpp_cli.checkpoints.remap import canonicalize, remap_official_fmanet
from fmanetpp_cli.errors import (
    CheckpointError,
    ConfigError,
    OutputExistsError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    WeightsNotFoundError,
)
from fmanetpp_cli.models import fmanet

# --------------------------------------------------------------------------- helpers


def _leave_marker(path: str) -> None:
    """What a malicious pickle would run: proves execution by creating a file."""
    Path(path).write_text("executed")


class Evil:
    """A custom class whose unpickling would call :func:`_leave_marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_leave_marker, (self.marker,))


class ShellEvil:
    """Unpickling this would run a shell command through ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@dataclass(frozen=True)
class TinyConfig:
    """A two-layer test architecture, registered only inside the tests that use it."""

    width: int = 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TinyConfig:
        unknown = set(d) - {"width"}
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)}")
        return cls(**d)


class TinyNet(nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.channel_order = "RGB"
        self.body = nn.Sequential(nn.Conv2d(3, config.width, 3, padding=1), nn.Conv2d(config.width, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture
def tiny_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    models._register_all()
    monkeypatch.setitem(models.ARCHITECTURES, "tiny", (TinyConfig, TinyNet))


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(4, 3, generator=g), "a.bias": torch.randn(4, generator=g)}


# --------------------------------------------------------------------------- reading and refusing


def test_read_state_dict_safetensors_and_torch_agree(tmp_path: Path) -> None:
    sd = _tensors()
    save_file(sd, tmp_path / "w.safetensors")
    torch.save(sd, tmp_path / "w.pt")
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("w.safetensors", "w.pt", "legacy.pt"):
        got = read_state_dict(tmp_path / name)
        assert got.keys() == sd.keys(), name
        for k in sd:
            torch.testing.assert_close(got[k], sd[k], rtol=0, atol=0)


@pytest.mark.parametrize("legacy", [False, True])
def test_custom_class_is_refused_and_never_executed(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": Evil(marker)}, path, _use_new_zipfile_serialization=not legacy)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError) as info:
        read_state_dict(path)
    assert not marker.exists(), "loading executed code from the pickle"
    assert any(g.endswith("._leave_marker") for g in info.value.globals), info.value.globals
    assert "_leave_marker" in str(info.value) and str(path) in str(info.value)
    # Sanity check of the test itself: the unrestricted loader would have run it.
    pickle.loads(pickle.dumps(Evil(marker)))
    assert marker.exists()


def test_os_system_reduce_in_raw_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "shell-marker"
    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps({"w": ShellEvil(marker)}, protocol=4))  # STACK_GLOBAL + memo
    with pytest.raises(UnsafeCheckpointError) as info:
        read_state_dict(path)
    assert not marker.exists()
    assert info.value.globals == [f"{os.system.__module__}.system"]


def test_scan_names_globals_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "m"
    for protocol in (2, 4, 5):
        data = pickle.dumps([Evil(marker), Evil(marker), {"t": ShellEvil(marker)}], protocol=protocol)
        found = scan_pickle_globals(data)
        assert f"{os.system.__module__}.system" in found and any("_leave_marker" in g for g in found)
    assert not marker.exists()
    data = pickle.dumps([ShellEvil(marker), list(range(100))], protocol=2)
    assert scan_pickle_globals(data[: len(data) // 2]) == [f"{os.system.__module__}.system"]  # truncated
    clean = tmp_path / "clean.pt"
    torch.save(_tensors(), clean)
    assert all(g.startswith(("torch.", "collections.")) for g in scan_pickle_globals(clean.read_bytes()))


def test_official_wrapper_keeps_only_model_weights(tmp_path: Path) -> None:
    sd = _tensors()
    ckpt = {
        "epoch": 7,
        "model_D_state_dict": sd,
        "optimizer_D_state_dict": {"state": {0: {"step": torch.tensor(1.0)}}, "param_groups": [{"lr": 1e-4}]},
        "scheduler_D_state_dict": {"milestones": {260: 1}, "gamma": 0.5},
    }
    torch.save(ckpt, tmp_path / "model_D_best.pt")
    got = read_state_dict(tmp_path / "model_D_best.pt")
    assert sorted(got) == ["degradation_learning_network.a.bias", "degradation_learning_network.a.weight"]


def _as_if_saved_on_cuda(src: Path, dst: Path) -> None:
    """Rewrite a zip checkpoint so its storages say ``cuda:0``, as the official trainer's files do."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name.endswith("data.pkl"):
                assert data.count(b"X\x03\x00\x00\x00cpu") == 1  # BINUNICODE "cpu" of the one storage
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            zout.writestr(name, data)


def test_cuda_checkpoint_loads_on_cpu(tmp_path: Path) -> None:
    weight = torch.arange(6.0).reshape(2, 3)
    torch.save({"epoch": 1, "model_R_state_dict": {"w": weight}}, tmp_path / "cpu.pt")
    _as_if_saved_on_cuda(tmp_path / "cpu.pt", tmp_path / "cuda.pt")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):  # the file really asks for a GPU
            torch.load(tmp_path / "cuda.pt", weights_only=True)
    got = read_state_dict(tmp_path / "cuda.pt")
    assert got["restoration_network.w"].device.type == "cpu"
    assert torch.equal(got["restoration_network.w"], weight)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty"),
        (b"hello, not a checkpoint\n", "torch checkpoint"),
        (bytes(range(256)) * 8, "torch checkpoint"),
    ],
    ids=["empty", "text", "binary"],
)
def test_corrupt_files_give_clear_errors(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        read_state_dict(path)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert str(path) in str(info.value)


def test_truncated_torch_zip_and_safetensors(tmp_path: Path) -> None:
    torch.save(_tensors(), tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        read_state_dict(tmp_path / "cut.pt")
    save_file(_tensors(), tmp_path / "ok.safetensors")
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="corrupt safetensors"):
        read_state_dict(tmp_path / "cut.safetensors")


def test_damaged_checkpoints_only_raise_checkpoint_errors(tmp_path: Path) -> None:
    ckpt = {"model_D_state_dict": _tensors()}
    torch.save(ckpt, tmp_path / "zip.pt")
    torch.save(ckpt, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    rng = random.Random(0)
    outcomes = set()
    for name in ("zip.pt", "legacy.pt"):
        data = (tmp_path / name).read_bytes()
        for _ in range(60):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                damaged[rng.randrange(min(len(damaged), 1500))] = rng.randrange(256)
            (tmp_path / "damaged.pt").write_bytes(bytes(damaged))
            try:
                read_state_dict(tmp_path / "damaged.pt")
                outcomes.add("read")
            except CheckpointError:
                outcomes.add("refused")
    assert "refused" in outcomes


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="nope.pt"):
        read_state_dict(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="folder"):
        read_state_dict(tmp_path)


# --------------------------------------------------------------------------- remap


def test_canonicalize_unwraps_and_strips_idempotently() -> None:
    t = torch.zeros(1)
    wrapped = {"params": {"module.x.w": t}, "params_ema": {"module._orig_mod.x.w": t, "y._orig_mod.b": t}}
    once = canonicalize(wrapped)
    assert sorted(once) == ["x.w", "y.b"]  # params_ema wins over params
    assert canonicalize(once) == once
    both = {"model_D_state_dict": {"a": t}, "model_R_state_dict": {"module.b": t}, "epoch": 3}
    got = canonicalize(both)
    assert sorted(got) == ["degradation_learning_network.a", "restoration_network.b"]
    assert canonicalize(got) == got


def test_canonicalize_rejects_non_tensors_and_collisions() -> None:
    with pytest.raises(CheckpointError, match="not named tensors: epoch"):
        canonicalize({"w": torch.zeros(1), "epoch": 3})
    with pytest.raises(CheckpointError, match="both map"):
        canonicalize({"module.w": torch.zeros(1), "w": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="no tensors"):
        canonicalize({})
    with pytest.raises(CheckpointError, match="list"):
        canonicalize([torch.zeros(1)])


def test_remap_official_is_idempotent_and_checks_parts() -> None:
    sd = {"feature_extractor.0.weight": torch.zeros(1)}
    d = remap_official_fmanet(sd, part="D")
    assert list(d) == ["degradation_learning_network.feature_extractor.0.weight"]
    assert remap_official_fmanet(d, part="D") == d
    assert remap_official_fmanet(d) == d
    assert list(sd) == ["feature_extractor.0.weight"]  # input untouched
    with pytest.raises(CheckpointError, match="other sub-network"):
        remap_official_fmanet(d, part="R")
    with pytest.raises(CheckpointError, match="unknown FMA-Net part"):
        remap_official_fmanet(sd, part="X")


# --------------------------------------------------------------------------- the weights file


def test_save_load_round_trip(tmp_path: Path, tiny_arch: None) -> None:
    torch.manual_seed(0)
    model = TinyNet(TinyConfig(width=5))
    path = save_model(model, tmp_path / "tiny.safetensors", channel_order="bgr", metadata={"name": "t"})
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]  # no temp file left
    loaded = load_model(path)
    assert isinstance(loaded, TinyNet) and not loaded.training
    assert loaded.config == TinyConfig(width=5) and loaded.channel_order == "BGR"
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    info = read_weights_info(path)
    assert (info.arch, info.config, info.channel_order) == ("tiny", {"width": 5}, "BGR")
    assert info.num_params == sum(p.numel() for p in model.parameters()) and info.num_tensors == 4
    assert info.extra == {"name": "t"} and info.sources == {}


@pytest.mark.parametrize("preset", ["fmanet-small-a", "fmanetpp-tiny"])
def test_round_trip_of_every_architecture(tmp_path: Path, preset: str) -> None:
    if preset not in models.list_models():
        pytest.skip(f"preset {preset!r} is not registered")
    torch.manual_seed(0)
    model = models.create_model(preset)
    loaded = load_model(save_model(model, tmp_path / "w.safetensors"))
    assert type(loaded) is type(model) and loaded.config == model.config
    info = read_weights_info(tmp_path / "w.safetensors")
    assert models.arch_of(loaded) == models.preset_arch(preset) == info.arch
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_failed_save_leaves_previous_file(
    tmp_path: Path, tiny_arch: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"previous")

    def broken(*args: Any, **kwargs: Any) -> None:
        Path(args[1]).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(wf, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(TinyNet(TinyConfig()), path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_saved_file_gets_umask_permissions(tmp_path: Path, tiny_arch: None) -> None:
    umask = os.umask(0o022)
    try:
        path = save_model(TinyNet(TinyConfig()), tmp_path / "w.safetensors")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_mismatch_lists_missing_unexpected_and_misshaped(tmp_path: Path, tiny_arch: None) -> None:
    model = TinyNet(TinyConfig(width=4))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    del sd["body.1.bias"]
    sd["body.2.weight"] = torch.zeros(1)
    sd["body.0.weight"] = torch.zeros(4, 3, 5, 5)
    meta = wf.build_metadata("tiny", {"width": 4})
    save_file(sd, tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(StateDictMismatchError) as info:
        load_model(tmp_path / "bad.safetensors")
    e = info.value
    assert e.missing == ["body.1.bias"] and e.unexpected == ["body.2.weight"]
    assert e.mismatched == [("body.0.weight", (4, 3, 5, 5), (4, 3, 3, 3))]
    for text in (
        "1 missing [body.1.bias]",
        "1 unexpected [body.2.weight]",
        "body.0.weight",
        "bad.safetensors",
    ):
        assert text in str(e)


def test_load_model_refuses_foreign_files(tmp_path: Path) -> None:
    save_file(_tensors(), tmp_path / "bare.safetensors")
    with pytest.raises(CheckpointError, match="not an fmanetpp weights file"):
        load_model(tmp_path / "bare.safetensors")
    torch.save(_tensors(), tmp_path / "legacy.pt")
    with pytest.raises(CheckpointError, match="weights import"):
        load_model(tmp_path / "legacy.pt")
    meta = wf.build_metadata("tiny", {"width": 4}) | {"format": "other/9"}
    save_file(_tensors(), tmp_path / "other.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="unsupported weights format"):
        load_model(tmp_path / "other.safetensors")
    save_file(_tensors(), tmp_path / "arch.safetensors", metadata=wf.build_metadata("nonesuch", {}))
    with pytest.raises(CheckpointError, match="arch.safetensors.*nonesuch"):
        load_model(tmp_path / "arch.safetensors")
    bad_order = wf.build_metadata("tiny", {"width": 4}) | {"channel_order": "YUV"}
    save_file(_tensors(), tmp_path / "order.safetensors", metadata=bad_order)
    with pytest.raises(CheckpointError, match="order.safetensors.*channel order"):
        read_weights_info(tmp_path / "order.safetensors")
    with pytest.raises(WeightsNotFoundError):
        load_model(tmp_path / "missing.safetensors")


def test_sha256_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --------------------------------------------------------------------------- finding official files


def _official_pair(folder: Path, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "model_D_state_dict": _tensors(seed)}, folder / "model_D_best.pt")
    torch.save({"epoch": 1, "model_R_state_dict": _tensors(seed + 1)}, folder / "model_R_best.pt")


def test_find_pair_in_folder_zip_and_stage_layout(tmp_path: Path) -> None:
    _official_pair(tmp_path / "run" / "model_stage2")
    torch.save({"model_D_state_dict": _tensors(5)}, tmp_path / "run" / "model_D_best.pt")  # a stray D
    d, r, archive = find_official_checkpoints(tmp_path / "run")
    assert (d.name, r.name, archive) == ("model_stage2/model_D_best.pt", "model_stage2/model_R_best.pt", {})
    zpath = tmp_path / "release.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted((tmp_path / "run").rglob("*.pt")):
            zf.write(f, "FMA-Net_REDS/" + f.relative_to(tmp_path / "run").as_posix())
    d, r, archive = find_official_checkpoints(zpath)
    assert d.name == "release.zip:FMA-Net_REDS/model_stage2/model_D_best.pt"
    assert d.data == (tmp_path / "run" / "model_stage2" / "model_D_best.pt").read_bytes()
    assert archive == {"release.zip": sha256_file(zpath)}


def test_find_pair_errors(tmp_path: Path) -> None:
    _official_pair(tmp_path / "two" / "a")
    _official_pair(tmp_path / "two" / "b")
    with pytest.raises(CheckpointError, match="ambiguous.*a/model_D_best.pt"):
        find_official_checkpoints(tmp_path / "two")
    for name in ("c", "d", "e"):
        _official_pair(tmp_path / "two" / name)
    with pytest.raises(CheckpointError) as many:
        find_official_checkpoints(tmp_path / "two")
    assert "... (10 files)" in str(many.value) and "e/model_R_best.pt" not in str(many.value)
    (tmp_path / "only_d").mkdir()
    shutil.copy(tmp_path / "two" / "a" / "model_D_best.pt", tmp_path / "only_d")
    with pytest.raises(WeightsNotFoundError, match="no model_R_best.pt"):
        find_official_checkpoints(tmp_path / "only_d")
    empty_zip = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty_zip, "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    with pytest.raises(WeightsNotFoundError, match="no model_D_best.pt and model_R_best.pt"):
        find_official_checkpoints(empty_zip)
    tricky = tmp_path / "tricky.zip"
    with zipfile.ZipFile(tricky, "w") as zf:
        zf.writestr("../model_D_best.pt", b"x")
        zf.writestr("ok/model_R_best.pt", b"x")
    with pytest.raises(CheckpointError, match="unsafe member paths"):
        find_official_checkpoints(tricky)
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(CheckpointError, match="expected a folder or a .zip"):
        find_official_checkpoints(tmp_path / "plain.txt")
    with pytest.raises(WeightsNotFoundError):
        find_official_checkpoints(tmp_path / "absent")


def test_corrupt_member_is_named(tmp_path: Path) -> None:
    _official_pair(tmp_path / "src")
    (tmp_path / "src" / "model_R_best.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="model_R_best.pt"):
        import_official(tmp_path / "src", tmp_path / "out.safetensors", config=_write_small_a_json(tmp_path))
    assert not (tmp_path / "out.safetensors").exists()


# --------------------------------------------------------------------------- configuration files

OFFICIAL_CFG = """[experiment]
seed = 1234

[training]
save_dir = ./results/FMA-Net
scale = 4
stage = 2
num_seq = 3

[network]
in_channels = 3
dim = 18
ds_kernel_size = 6
us_kernel_size = 3
num_RDB = 2
growth_rate = 6
num_dense_layer = 2
num_flow = 3
num_FRMA = 2
num_transformer_block = 1
num_heads = 2
LayerNorm_type = WithBias
ffn_expansion_factor = 2.66
bias = False
"""

SMALL_A = {
    "in_channels": 3,
    "dim": 18,
    "ds_kernel_size": 6,
    "us_kernel_size": 3,
    "num_RDB": 2,
    "growth_rate": 6,
    "num_dense_layer": 2,
    "num_flow": 3,
    "num_FRMA": 2,
    "num_transformer_block": 1,
    "num_heads": 2,
    "LayerNorm_type": "WithBias",
    "ffn_expansion_factor": 2.66,
    "bias": False,
    "scale": 4,
    "num_seq": 3,
    "stage": 2,
}


def _write_small_a_json(folder: Path) -> Path:
    path = folder / "small-a.json"
    path.write_text(json.dumps(SMALL_A))
    return path


def test_full_experiment_cfg_matches_the_preset(tmp_path: Path) -> None:
    full = OFFICIAL_CFG
    for old, new in [
        ("dim = 18", "dim = 90"),
        ("ds_kernel_size = 6", "ds_kernel_size = 20"),
        ("us_kernel_size = 3", "us_kernel_size = 5"),
        ("num_RDB = 2", "num_RDB = 12"),
        ("growth_rate = 6", "growth_rate = 18"),
        ("num_dense_layer = 2", "num_dense_layer = 4"),
        ("num_flow = 3", "num_flow = 9"),
        ("num_FRMA = 2", "num_FRMA = 4"),
        ("num_transformer_block = 1", "num_transformer_block = 2"),
        ("num_heads = 2", "num_heads = 6"),
    ]:
        assert old in full
        full = full.replace(old, new)
    path = tmp_path / "experiment.cfg"
    path.write_text(
        full + "\n[validation]\nval_period = 5\n\n[test]\ncustom_path = /path/to/custom/dataset\n"
    )
    assert parse_experiment_cfg(path) == fmanet.PRESETS["fmanet"].to_official()
    assert load_official_config(None) == fmanet.PRESETS["fmanet"].to_official()
    with pytest.raises(ConfigError, match="stage = 1"):
        official_to_config(parse_experiment_cfg(path) | {"stage": 1})
    ours = official_to_config(fmanet.PRESETS["fmanet-small-a"].to_dict())  # our field names work too
    assert ours == fmanet.PRESETS["fmanet-small-a"]
    with pytest.raises(ConfigError, match="unknown"):
        official_to_config({"dim": 18, "colour": "blue"})


def test_parse_experiment_cfg(tmp_path: Path) -> None:
    path = tmp_path / "experiment.cfg"
    path.write_text(OFFICIAL_CFG)
    assert parse_experiment_cfg(path) == SMALL_A
    path.write_text(OFFICIAL_CFG.replace("bias = False", "bias = false"))
    with pytest.raises(ConfigError, match="bias = 'false'; expected True or False"):
        parse_experiment_cfg(path)
    path.write_text(OFFICIAL_CFG.replace("dim = 18", "dim = eighteen"))
    with pytest.raises(ConfigError, match="dim = 'eighteen' is not a valid int"):
        parse_experiment_cfg(path)
    path.write_text(OFFICIAL_CFG.replace("num_heads = 2\n", ""))
    with pytest.raises(ConfigError, match="lacks num_heads"):
        parse_experiment_cfg(path)
    path.write_text("[training]\nscale = 4\n")
    with pytest.raises(ConfigError, match="no \\[network\\] section"):
        parse_experiment_cfg(path)


def test_output_guards(tmp_path: Path) -> None:
    _official_pair(tmp_path / "src")
    (tmp_path / "taken.safetensors").write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="already exists"):
        import_official(tmp_path / "src", tmp_path / "taken.safetensors")
    assert (tmp_path / "taken.safetensors").read_bytes() == b"keep me"
    with pytest.raises(OutputExistsError, match="the output is"):
        import_official(tmp_path / "src", tmp_path / "src" / "model_D_best.pt", overwrite=True)


# --------------------------------------------------------------------------- official mock checkpoints

OUTPUT_KEYS = ("output", "lr_warp", "F_sharp_R", "recon", "hr_warp", "image_flow", "F_sharp_D")


def _mock_dir(v1_reference: Path) -> Path:
    return v1_reference / "mock-checkpoint-small-a"


def _check_reproduces_fixture(weights: Path, fixture: Path) -> None:
    model = load_model(weights)
    assert model.channel_order == "BGR" and not model.training
    inputs = load_file(fixture / "inputs.safetensors")
    ref = load_file(fixture / "outputs.safetensors")
    with torch.no_grad():
        ours = model(inputs["x"], inputs["y"])
    compared = [k for k in OUTPUT_KEYS if k in ours]
    assert {"output", "lr_warp", "recon"} <= set(compared)
    for key in compared:
        torch.testing.assert_close(ours[key], ref[key], rtol=5e-5, atol=5e-5, msg=key)


@pytest.mark.parametrize(
    ("zipped", "fixture_name"), [(False, "small-a-32x32"), (True, "small-a-24x40")], ids=["folder", "zip"]
)
def test_mock_checkpoints_reproduce_fixture(
    tmp_path: Path, v1_reference: Path, zipped: bool, fixture_name: str
) -> None:
    mock = _mock_dir(v1_reference)
    src: Path = mock
    if zipped:
        src = tmp_path / "FMA-Net_REDS.zip"
        with zipfile.ZipFile(src, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(mock.rglob("*.pt")):
                zf.write(f, "FMA-Net_REDS/" + f.relative_to(mock).as_posix())
    fixture = v1_reference / fixture_name
    out = tmp_path / "fmanet-small-a.safetensors"
    result = import_official(src, out, config=fixture / "config.json")
    assert result.output == out and result.channel_order == "BGR"

    # The weights equal the fixture's official full-model state dict, key for key.
    ref_sd = load_file(fixture / "weights.safetensors")
    got_sd = load_file(out)
    assert got_sd.keys() == ref_sd.keys()
    assert all(torch.equal(got_sd[k], ref_sd[k]) for k in ref_sd)
    assert result.num_params == sum(t.numel() for t in ref_sd.values())

    info = read_weights_info(out)
    assert info.arch == "fmanet" and info.channel_order == "BGR"
    assert info.config == models.config_from_dict("fmanet", info.config).to_dict()
    assert info.config["dim"] == 18 and info.config["num_rdb"] == 2
    pt = {f.name: sha256_file(f) for f in mock.rglob("*.pt")}
    prefix = "FMA-Net_REDS.zip:FMA-Net_REDS/" if zipped else ""
    expected = {f"{prefix}model_stage2/{n}": h for n, h in pt.items()}
    if zipped:
        expected["FMA-Net_REDS.zip"] = sha256_file(src)
    assert info.sources == expected

    _check_reproduces_fixture(out, fixture)


def test_import_with_official_ini_config(tmp_path: Path, v1_reference: Path) -> None:
    cfg = tmp_path / "experiment.cfg"
    cfg.write_text(OFFICIAL_CFG)
    out = tmp_path / "w.safetensors"
    result = import_official(_mock_dir(v1_reference), out, config=cfg)
    assert result.config == SMALL_A
    ref = load_file(v1_reference / "small-a-32x32" / "weights.safetensors")
    got = load_model(out).state_dict()  # strict load into the architecture the INI describes
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


def test_default_config_does_not_fit_small_weights(tmp_path: Path, v1_reference: Path) -> None:
    out = tmp_path / "w.safetensors"
    with pytest.raises(StateDictMismatchError) as info:
        import_official(_mock_dir(v1_reference), out)  # the full-size preset
    assert info.value.mismatched and not out.exists()
    assert "feature_extractor" in str(info.value)


def test_read_state_dict_of_official_file(v1_reference: Path) -> None:
    path = _mock_dir(v1_reference) / "model_stage2" / "model_R_best.pt"
    sd = read_state_dict(path)
    assert sd and all(k.startswith("restoration_network.") for k in sd)
    ref = load_file(v1_reference / "small-a-32x32" / "weights.safetensors")
    assert all(torch.equal(sd[k], ref[k]) for k in sd)


@pytest.mark.slow
def test_full_size_official_layout_imports_with_default_config(tmp_path: Path, v1_reference: Path) -> None:
    """Checkpoints with the official full-size keys and shapes (manifest) import without a config."""
    manifest = json.loads((v1_reference / "manifest-full.json").read_text())
    assert load_official_config(None) == manifest["config"]
    g = torch.Generator().manual_seed(0)
    folder = tmp_path / "results" / "model_stage2"
    folder.mkdir(parents=True)
    written: dict[str, torch.Tensor] = {}
    for part, prefix in (("D", "degradation_learning_network."), ("R", "restoration_network.")):
        sd = {
            e["key"]: torch.randn(e["shape"], generator=g) * 0.01 for e in manifest[f"Net_{part}_state_dict"]
        }
        written |= {prefix + k: v for k, v in sd.items()}
        ckpt = {"epoch": 400, f"model_{part}_state_dict": sd, f"scheduler_{part}_state_dict": {"gamma": 0.5}}
        torch.save(ckpt, folder / f"model_{part}_best.pt")
    result = import_official(tmp_path / "results", tmp_path / "full.safetensors")
    assert result.num_params == manifest["param_counts"]["total"] == 9_766_503
    loaded = load_model(tmp_path / "full.safetensors")
    assert loaded.config == fmanet.PRESETS["fmanet"] and loaded.channel_order == "BGR"
    got = loaded.state_dict()
    assert got.keys() == written.keys() and all(torch.equal(got[k], written[k]) for k in written)
    with torch.no_grad():
        out = loaded(torch.rand(1, 3, 3, 8, 8, generator=g))["output"]
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_public_api_and_import_boundaries() -> None:
    assert fmanetpp_cli.load_model is load_model
    code = (
        "import sys, fmanetpp_cli.checkpoints\n"
        "print(','.join(m for m in ('typer', 'rich', 'av') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
