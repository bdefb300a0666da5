"""FMA-Net (v1): config round trips, the official state-dict layout, and the golden fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fmanetpp_cli.errors import ConfigError, InputShapeError
from fmanetpp_cli.models.fmanet import PRESETS, FMANet, FMANetConfig

FIXTURES = ("small-a-32x32", "small-a-24x40")
FLOAT_KEYS = ("output", "lr_warp", "F_sharp_R", "recon", "hr_warp", "image_flow", "F_sharp_D")
Y_KEYS = ("recon", "hr_warp", "image_flow", "F_sharp_D")


def to_uint8_like_official(output: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1], x255, round half to even, uint8, HWC (the official test script's PNG path)."""
    return torch.round(output[0].clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0)


def tiny_config(**over: object) -> FMANetConfig:
    base = PRESETS["fmanet-small-a"].to_dict()
    base.update(over)
    return FMANetConfig.from_dict(base)


# ------------------------------------------------------------------------------------------- config


def test_config_round_trips_and_official_names() -> None:
    cfg = PRESETS["fmanet"]
    assert FMANetConfig.from_dict(cfg.to_dict()) == cfg
    official = cfg.to_official()
    assert (
        official["num_RDB"] == 12 and official["num_FRMA"] == 4 and official["LayerNorm_type"] == "WithBias"
    )
    assert "num_rdb" not in official
    assert FMANetConfig.from_official(official) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()


def test_config_matches_fixture_and_manifest(v1_reference: Path) -> None:
    fixture = json.loads((v1_reference / "small-a-32x32" / "config.json").read_text())
    assert FMANetConfig.from_official(fixture) == PRESETS["fmanet-small-a"]
    assert PRESETS["fmanet-small-a"].to_official() == fixture
    manifest = json.loads((v1_reference / "manifest-full.json").read_text())
    assert PRESETS["fmanet"].to_official() == manifest["config"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"dim": 20}, "divisible"),
        ({"num_seq": 2, "dim": 18}, "odd"),
        ({"ds_kernel_size": 7}, "even"),
        ({"us_kernel_size": 4}, "odd"),
        ({"scale": 2}, "scale must be 4"),
        ({"stage": 3}, "stage"),
        ({"layernorm_type": "Batch"}, "layernorm_type"),
        ({"num_rdb": 0}, "positive integer"),
        ({"bias": 1}, "bias"),
        ({"growth_rate": 2.5}, "positive integer"),
    ],
)
def test_config_rejects_bad_values(change: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        tiny_config(**change)


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="unknown FMANetConfig keys: num_RDB"):
        FMANetConfig.from_dict({"num_RDB": 3})
    with pytest.raises(ConfigError, match="unknown official"):
        FMANetConfig.from_official({"num_rdb": 3})
    with pytest.raises(ConfigError, match="unknown official"):
        FMANetConfig.from_official({"extra": 3})


# ------------------------------------------------------------------------------------- state dict


def test_full_state_dict_matches_official_manifest(v1_reference: Path) -> None:
    manifest = json.loads((v1_reference / "manifest-full.json").read_text())
    model = FMANet(PRESETS["fmanet"])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expect = {}
    for prefix, part in (("degradation_learning_network.", "Net_D"), ("restoration_network.", "Net_R")):
        for entry in manifest[f"{part}_state_dict"]:
            expect[prefix + entry["key"]] = tuple(entry["shape"])
    assert sorted(set(ours) - set(expect)) == [] and sorted(set(expect) - set(ours)) == []
    assert ours == expect
    assert list(model.state_dict()) == list(expect)  # same order, so checkpoints diff cleanly
    assert sum(p.numel() for p in model.parameters()) == 9_766_503 == manifest["param_counts"]["total"]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert list(model.buffers()) == []


def test_model_attributes() -> None:
    model = FMANet(PRESETS["fmanet-small-a"])
    assert (model.scale, model.num_seq, model.temporal_radius) == (4, 3, 1)
    assert model.temporal_mode == "window" and model.channel_order == "RGB"
    assert model.config is PRESETS["fmanet-small-a"]
    stage1 = FMANet(tiny_config(stage=1))
    assert not any(k.startswith("restoration_network.") for k in stage1.state_dict())


# ------------------------------------------------------------------------------------------ forward


def test_forward_shapes_and_errors() -> None:
    torch.manual_seed(0)
    model = FMANet(PRESETS["fmanet-small-a"]).eval()
    x, y = torch.rand(2, 3, 3, 6, 5), torch.rand(2, 3, 3, 24, 20)
    with torch.no_grad():
        out = model(x, y)
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {
        "recon": (2, 3, 6, 5),
        "hr_warp": (2, 3, 3, 24, 20),
        "image_flow": (2, 2, 3, 6, 5),
        "F_sharp_D": (2, 3, 3, 6, 5),
        "output": (2, 3, 24, 20),
        "lr_warp": (2, 3, 3, 6, 5),
        "F_sharp_R": (2, 3, 3, 6, 5),
    }
    assert all(torch.isfinite(v).all() for v in out.values())
    for bad in (
        torch.rand(3, 3, 6, 5),
        torch.rand(1, 3, 5, 6, 5),
        torch.rand(1, 4, 3, 6, 5),
        torch.rand(1, 3, 3, 1, 5),
    ):
        with pytest.raises(InputShapeError, match=str(tuple(bad.shape))):
            model(bad)
    with pytest.raises(InputShapeError, match="y of shape"):
        model(x, torch.rand(2, 3, 3, 12, 10))
    stage1 = FMANet(tiny_config(stage=1)).eval()
    with torch.no_grad():
        assert set(stage1(x, y)) == set(Y_KEYS)
    with pytest.raises(InputShapeError, match="needs the HR window"):
        stage1(x)


def test_gradients_flow() -> None:
    torch.manual_seed(1)
    model = FMANet(tiny_config(dim=6, num_heads=1, num_rdb=1, num_frma=1))
    out = model(torch.rand(1, 3, 3, 4, 4), torch.rand(1, 3, 3, 16, 16))
    sum(v.mean() for v in out.values()).backward()  # type: ignore[union-attr]
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_reproduces_official_fixture(v1_reference: Path, fixture: str) -> None:
    folder = v1_reference / fixture
    model = FMANet.from_official_config(json.loads((folder / "config.json").read_text()))
    model.load_state_dict(load_file(folder / "weights.safetensors"), strict=True)
    model.eval()
    inputs = load_file(folder / "inputs.safetensors")
    ref = load_file(folder / "outputs.safetensors")
    with torch.no_grad():
        test_path = model(inputs["x"])
        train_path = model(inputs["x"], inputs["y"])
    assert set(test_path) == {"output", "lr_warp", "F_sharp_R"}
    assert set(train_path) == set(FLOAT_KEYS)
    for result in (test_path, train_path):
        for key, value in result.items():
            torch.testing.assert_close(
                value, ref[key], rtol=5e-5, atol=5e-5, msg=lambda m, k=key: f"{k}: {m}"
            )
        u8 = to_uint8_like_official(result["output"])
        assert u8.shape == ref["output_u8_hwc"].shape
        diff = (u8.int() - ref["output_u8_hwc"].int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() <= 0.005


def test_reproduces_official_intermediates(v1_reference: Path) -> None:
    """Net_D's kernels and flows match the official ones (localises a mismatch before Net_R)."""
    folder = v1_reference / "small-a-24x40"
    model = FMANet.from_official_config(json.loads((folder / "config.json").read_text())).eval()
    model.load_state_dict(load_file(folder / "weights.safetensors"), strict=True)
    x = load_file(folder / "inputs.safetensors")["x"]
    ref = load_file(folder / "intermediates.safetensors")
    frames = x.permute(0, 2, 1, 3, 4).flatten(0, 1)
    with torch.no_grad():
        _, kd, f_y, f, _ = model.degradation_learning_network(frames)

    def unfold(t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(0, (1, 3)).permute(0, 2, 1, 3, 4)

    for ours, key in ((kd, "net_d.KD"), (f_y, "net_d.f_Y"), (f, "net_d.f")):
        torch.testing.assert_close(unfold(ours), ref[key], rtol=5e-5, atol=5e-5)


@pytest.mark.parametrize("T", [1, 3, 5])
def test_temporal_conv_equals_conv3d(T: int) -> None:
    from torch import nn

    from fmanetpp_cli.models.fmanet import _temporal_conv

    torch.manual_seed(T)
    conv = nn.Conv3d(4, 6, kernel_size=3, padding=1, bias=True)
    x = torch.randn(2, 4, T, 5, 7)
    folded = x.permute(0, 2, 1, 3, 4).flatten(0, 1)  # [B*T, C, H, W]
    ours = _temporal_conv(conv, folded, T).unflatten(0, (2, T)).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(ours, conv(x), rtol=1e-5, atol=1e-5)


def test_banded_residual_branch_equals_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import fmanetpp_cli.models.fmanet as fm

    torch.manual_seed(4)
    net_r = FMANet(PRESETS["fmanet-small-a"]).restoration_network
    fw = torch.randn(1, 18, 13, 7)
    with torch.no_grad():
        whole = net_r.residual(fw)
        monkeypatch.setattr(fm, "_RES_BAND_BYTES", 1)  # one LR row per band
        banded = net_r.residual(fw)
        monkeypatch.setattr(fm, "_RES_HALO", 2)  # one row short of the receptive field
        short = net_r.residual(fw)
    assert whole.shape == (1, 3, 52, 28)
    torch.testing.assert_close(banded, whole, rtol=1e-5, atol=1e-6)
    assert (short - whole).abs().max() > 1e-4


def test_fused_kernel_convs_equal_two_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test path: Net_D's last kernel conv composed with Net_R's first d_conv equals the two convs."""
    import fmanetpp_cli.models.fmanet as fm
    from fmanetpp_cli.models.layers import compose_kernels, temporal_conv

    torch.manual_seed(6)
    model = FMANet(PRESETS["fmanet-small-a"]).eval()
    net_d, net_r = model.degradation_learning_network, model.restoration_network
    hidden = torch.randn(3, 18, 7, 9)
    with torch.no_grad():
        fused = model._fused_kernel_features(hidden)
        two_step = net_r.encode_kernels(net_d.d_conv[2](hidden))
        torch.testing.assert_close(fused, two_step, rtol=1e-5, atol=1e-5)
        # the border ring really needs its recomputation: the plain composed conv differs there
        composed = compose_kernels(net_r.d_conv[0].weight, net_d.d_conv[2].weight[:, :, 0])
        plain = temporal_conv(hidden, composed, None, (1, 2, 2), 3)
        exact = fm._temporal_conv(net_r.d_conv[0], net_d.d_conv[2](hidden), 3)
        torch.testing.assert_close(plain[:, :, 1:-1, 1:-1], exact[:, :, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
        assert (plain[:, :, 0] - exact[:, :, 0]).abs().max() > 1e-3

        x = torch.rand(1, 3, 3, 6, 5)
        assert model._can_fuse_kernels(x)
        fast = model(x)
        monkeypatch.setattr(FMANet, "_can_fuse_kernels", lambda self, x: False)
        slow = model(x)
    for key in fast:
        torch.testing.assert_close(fast[key], slow[key], rtol=1e-5, atol=1e-5)
