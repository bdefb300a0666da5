"""Pipeline invariants: chunk plans, stitched == single pass, tiling, padding, scene cuts, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from toy_models import Identity4, ToySequence, ToyWindow

from fmanetpp_cli.errors import ConfigError, InputShapeError
from fmanetpp_cli.pipeline.device import check_precision, select_device
from fmanetpp_cli.pipeline.engine import ChunkRestorer, frames_to_tensor, measure_bytes_per_pixel
from fmanetpp_cli.pipeline.options import RestoreOptions
from fmanetpp_cli.pipeline.plan import choose_tile, model_traits, plan_restore
from fmanetpp_cli.pipeline.scenes import SceneCutDetector
from fmanetpp_cli.pipeline.tiling import (
    SizePadder,
    auto_tile_size,
    measure_peak_bytes,
    run_tiled,
    tile_starts,
)
from fmanetpp_cli.pipeline.windows import plan_chunks


def _restorer(
    model: nn.Module, height: int, width: int, *, dtype: torch.dtype = torch.float32, tile: int = 0, **options
) -> ChunkRestorer:
    """A restorer for ``height x width`` frames on the CPU, planned with ``RestoreOptions(**options)``."""
    options.setdefault("scale", model_traits(model).scale)
    plan = plan_restore(
        model_traits(model),
        height=height,
        width=width,
        options=RestoreOptions(tile=tile, **options),
        device=torch.device("cpu"),
        dtype=dtype,
        memory_budget=1 << 30,
        even=False,
    )
    return ChunkRestorer(model, plan)


def _clip(n: int, h: int = 12, w: int = 10, seed: int = 0, dtype: type = np.uint8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    peak = 65535 if dtype == np.uint16 else 255
    return [rng.integers(0, peak + 1, (h, w, 3)).astype(dtype) for _ in range(n)]


def _stitch(restorer: ChunkRestorer, frames: list[np.ndarray], chunks: list) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for c in chunks:
        out.extend(restorer.restore([frames[i] for i in c.frames], c.offset, c.num_kept))
    return out


# ----------------------------------------------------------------------------------------------------------
# Chunk planning


@pytest.mark.parametrize(("chunk", "overlap", "pad"), [(5, 1, 1), (6, 2, 0), (9, 3, 1), (3, 0, 0), (7, 2, 2)])
@pytest.mark.parametrize("n", [1, 2, 5, 13])
def test_chunks_cover_every_frame_once_in_order(chunk: int, overlap: int, pad: int, n: int) -> None:
    for cuts in ((), (n // 2,), (1, n - 1)):
        chunks = plan_chunks(n, chunk=chunk, overlap=overlap, pad=pad, cuts=cuts)
        kept = [i for c in chunks for i in range(c.keep_start, c.keep_stop)]
        assert kept == list(range(n))
        for c in chunks:
            assert 0 < len(c) <= chunk and c.num_kept > 0
            kept_sources = [c.frames[c.offset + j] for j in range(c.num_kept)]
            assert kept_sources == list(range(c.keep_start, c.keep_stop))


def test_chunks_give_context_except_at_segment_ends() -> None:
    n, cut = 23, 11
    chunks = plan_chunks(n, chunk=8, overlap=2, pad=0, cuts=[cut])
    for c in chunks:
        seg_lo, seg_hi = (0, cut) if c.segment == 0 else (cut, n)
        # Frames never cross the cut.
        assert all(seg_lo <= f < seg_hi for f in c.frames)
        for j in range(c.num_kept):
            pos, frame = c.offset + j, c.keep_start + j
            left = min(2, frame - seg_lo)
            right = min(2, seg_hi - 1 - frame)
            assert pos >= left and len(c) - 1 - pos >= right


def test_window_chunks_pad_only_at_true_ends() -> None:
    chunks = plan_chunks(7, chunk=5, overlap=1, pad=1, cuts=[4])
    assert chunks[0].frames[:2] == (0, 0)  # replicated at the start of the clip
    repeats = [c.frames for c in chunks if len(set(c.frames)) < len(c.frames)]
    # Padding appears at the clip start, both sides of the cut and the clip end, never at a seam.
    for frames in repeats:
        dup = [f for f in set(frames) if frames.count(f) > 1]
        assert all(f in (0, 3, 4, 6) for f in dup)


def test_planner_rejects_no_progress() -> None:
    with pytest.raises(ConfigError, match="chunk"):
        plan_chunks(5, chunk=4, overlap=2)
    with pytest.raises(ConfigError, match="padding"):
        plan_chunks(5, chunk=9, overlap=0, pad=1)


# ----------------------------------------------------------------------------------------------------------
# Stitched chunks == one pass over the whole clip


@pytest.mark.parametrize(("chunk", "radius"), [(7, 2), (9, 3), (5, 1)])
def test_sequence_stitching_equals_single_pass(chunk: int, radius: int) -> None:
    frames = _clip(17)
    model = ToySequence(radius=radius)
    restorer = _restorer(model, height=12, width=10)
    whole = restorer.restore(frames, 0, len(frames))
    chunks = plan_chunks(len(frames), chunk=chunk, overlap=radius)
    assert len(chunks) > 2
    stitched = _stitch(restorer, frames, chunks)
    assert len(stitched) == len(frames)
    diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(whole, stitched, strict=True))
    assert diff == 0


def test_sequence_stitching_detects_too_little_overlap() -> None:
    """The toy model really has radius 3: an overlap of 1 must give a different result (test has teeth)."""
    frames = _clip(17)
    restorer = _restorer(ToySequence(radius=3), height=12, width=10)
    whole = restorer.restore(frames, 0, len(frames))
    stitched = _stitch(restorer, frames, plan_chunks(17, chunk=7, overlap=1))
    assert any(not np.array_equal(a, b) for a, b in zip(whole, stitched, strict=True))


def test_window_stitching_equals_sliding_windows() -> None:
    frames = _clip(9, dtype=np.uint16)
    model = ToyWindow(num_seq=5)
    restorer = _restorer(model, height=12, width=10)
    chunks = plan_chunks(9, chunk=7, overlap=2, pad=2)
    stitched = _stitch(restorer, frames, chunks)
    assert len(stitched) == 9 and stitched[0].dtype == np.uint16
    padded = [frames[0]] * 2 + frames + [frames[-1]] * 2
    for i in range(9):
        expect = restorer.restore(padded[i : i + 5], 2, 1)[0]
        np.testing.assert_array_equal(stitched[i], expect)


def test_scene_cut_isolates_segments() -> None:
    a, b = _clip(6, seed=1), _clip(6, seed=2)
    restorer = _restorer(ToySequence(radius=2), height=12, width=10)
    stitched = _stitch(restorer, a + b, plan_chunks(12, chunk=5, overlap=2, cuts=[6]))
    alone = restorer.restore(a, 0, 6) + restorer.restore(b, 0, 6)
    for x, y in zip(stitched, alone, strict=True):
        np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------------------------------------
# Spatial padding and tiling


@pytest.mark.parametrize(("h", "w", "tile", "overlap"), [(37, 53, 16, 6), (20, 20, 8, 3), (9, 31, 12, 4)])
def test_identity_through_tiler_is_exact(h: int, w: int, tile: int, overlap: int) -> None:
    x = torch.rand(1, 3, 2, h, w)
    model = Identity4()
    y = run_tiled(lambda t: model(t)["output"], x, tile=tile, overlap=overlap, scale=4)
    assert torch.equal(y, model(x)["output"])


def test_tiling_blends_smoothly() -> None:
    """Tiles that disagree by a constant meet in a ramp, not a step."""
    x = torch.zeros(1, 1, 1, 8, 64)
    counter = iter(range(100))

    def offset_model(t: Tensor) -> Tensor:
        return torch.full((*t.shape[:-2], t.shape[-2], t.shape[-1]), float(next(counter)))

    y = run_tiled(offset_model, x, tile=40, overlap=16, scale=1)[0, 0, 0, 0]
    steps = (y[1:] - y[:-1]).abs()
    assert y[0] == 0 and y[-1] == 1
    assert steps.max() < 0.2  # a hard seam would jump by 1


def test_tile_starts_cover_and_overlap() -> None:
    for size, tile, overlap in [(100, 32, 8), (33, 32, 8), (32, 32, 8), (257, 64, 16)]:
        starts = tile_starts(size, tile, overlap)
        assert starts[0] == 0 and starts[-1] + min(tile, size) == size
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_padder_any_size_gives_exact_output_size() -> None:
    model = ToySequence(radius=1)
    for h, w in [(7, 13), (1, 1), (31, 17)]:
        padder = SizePadder(h, w, multiple=8, min_size=16)
        x = torch.rand(1, 3, 2, h, w)
        xp = padder.pad(x)
        assert xp.shape[-2:] == (max(16, -(-h // 8) * 8), max(16, -(-w // 8) * 8))
        assert torch.equal(xp[..., :h, :w], x)
        y = padder.crop(model(xp)["output"], 4)
        assert y.shape[-2:] == (4 * h, 4 * w)


def test_restorer_honours_size_multiple_and_tiles() -> None:
    model = ToySequence(radius=1)
    model.size_multiple = 8  # type: ignore[attr-defined]
    frames = _clip(3, h=21, w=35)
    plain = _restorer(model, height=21, width=35)
    tiled = _restorer(model, height=21, width=35, tile=16, tile_overlap=4)
    a, b = plain.restore(frames, 0, 3), tiled.restore(frames, 0, 3)
    assert a[0].shape == (84, 140, 3)
    # The 3x3 conv sees tile borders, so tiles differ slightly; nearest-neighbour content dominates.
    assert max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True)) <= 4


def test_out_of_memory_retries_with_smaller_tiles() -> None:
    class Picky(Identity4):
        def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
            if max(x.shape[-2:]) > 16:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().forward(x)

    frames = _clip(2, h=40, w=64)
    restorer = _restorer(Picky(), height=40, width=64)
    out = restorer.restore(frames, 0, 2)
    assert restorer.tile == 16 and restorer.tile_retries == 2  # 64 -> 32 -> 16
    for lr, hr in zip(frames, out, strict=True):
        np.testing.assert_array_equal(hr[::4, ::4], lr)

    class Hopeless(Identity4):
        def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

    with pytest.raises(MemoryError, match="out of memory"):
        _restorer(Hopeless(), height=40, width=64).restore(frames, 0, 2)

    class Buggy(Identity4):
        def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        _restorer(Buggy(), height=40, width=64).restore(frames, 0, 2)


def test_measure_peak_bytes_counts_intermediates() -> None:
    conv = nn.Conv2d(3, 16, 3, padding=1)
    x = torch.rand(1, 3, 32, 32)
    peak = measure_peak_bytes(lambda: torch.relu(conv(x)), [x, *conv.parameters()])
    one = 16 * 32 * 32 * 4
    assert one <= peak <= 2 * one


def test_auto_tile_size_fits_budget() -> None:
    side = auto_tile_size(1000.0, 64 * 64 * 1000, multiple=8)
    assert side == 64
    assert auto_tile_size(1000.0, 10, multiple=8, min_tile=16) == 16
    per_pixel = measure_bytes_per_pixel(ToySequence(radius=1), 4, torch.device("cpu"))
    assert per_pixel > 4 * 3 * 16 * 4  # at least the x4 output of 4 frames per input pixel
    assert choose_tile(per_pixel, int(per_pixel * 200 * 300 * 2), 200, 300) == 0
    tile = choose_tile(per_pixel, int(per_pixel * 100 * 100), 200, 300)
    assert 64 <= tile <= 100


# ----------------------------------------------------------------------------------------------------------
# Channel order, precision, resampling, conversions


def test_bgr_model_sees_flipped_channels() -> None:
    class Probe(Identity4):
        channel_order = "BGR"
        seen: Tensor | None = None

        def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
            Probe.seen = x.clone()
            return super().forward(x)

    frame = np.zeros((4, 4, 3), np.uint8)
    frame[..., 0] = 255  # pure red
    out = _restorer(Probe(), height=4, width=4).restore([frame], 0, 1)
    assert Probe.seen is not None and Probe.seen[0, 2].min() == 1 and Probe.seen[0, 0].max() == 0
    assert (out[0][..., 0] == 255).all() and (out[0][..., 2] == 0).all()  # back to RGB


def test_non_native_scale_resamples() -> None:
    frames = _clip(2, h=9, w=11)
    for scale, size in [(2.0, (18, 22)), (3.0, (27, 33)), (1.5, (14, 16))]:
        r = _restorer(Identity4(), height=9, width=11, scale=scale)
        assert r.restore(frames, 0, 2)[0].shape == (*size, 3)


def test_plan_restore_decides_every_size_once() -> None:
    cpu = torch.device("cpu")
    calls: list[int] = []

    def measure(chunk: int) -> float:
        calls.append(chunk)
        return 1000.0

    traits = model_traits(ToySequence(radius=2))
    budget = 2 * 1000 * 64 * 64  # half of it, for one pass, holds a 64 px square
    plan = plan_restore(
        traits, height=9, width=11, options=RestoreOptions(scale=3.0), device=cpu, memory_budget=budget,
        bytes_per_pixel=measure,
    )  # fmt: skip
    assert calls == [plan.chunk], "the memory probe runs once, for the chunk the plan settled on"
    assert (plan.out_height, plan.out_width) == (28, 34)  # 27x33 rounded up to even sides for 4:2:0
    assert (plan.chunk, plan.overlap, plan.pad, plan.exact, plan.tile) == (32, 2, 0, True, 0)
    frames = _clip(2, h=9, w=11)
    assert ChunkRestorer(Identity4(), plan).restore(frames, 0, 2)[0].shape == (28, 34, 3)

    big = plan_restore(
        traits, height=400, width=300, options=RestoreOptions(overlap=1), device=cpu, memory_budget=budget,
        bytes_per_pixel=measure,
    )  # fmt: skip
    assert big.tile == 64 and not big.exact and "below the model's temporal radius" in big.warnings[0]
    assert big.chunk < 32, "the default chunk shrinks until its float outputs fit half the budget"
    fixed = plan_restore(traits, height=9, width=11, options=RestoreOptions(tile=32), device=cpu,
                         memory_budget=budget, bytes_per_pixel=measure)  # fmt: skip
    assert fixed.tile == 32 and len(calls) == 2, "a given --tile needs no measurement"


def test_bf16_runs_close_to_fp32() -> None:
    frames = _clip(4)
    fp32 = _restorer(ToySequence(), height=12, width=10)
    bf16 = _restorer(ToySequence(), height=12, width=10, dtype=torch.bfloat16)
    a, b = fp32.restore(frames, 0, 4), bf16.restore(frames, 0, 4)
    assert max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True)) <= 4


def test_uint16_round_trip_keeps_depth() -> None:
    frames = _clip(2, dtype=np.uint16)
    x = frames_to_tensor(frames, torch.device("cpu"))
    assert x.shape == (1, 3, 2, 12, 10) and float(x.max()) <= 1.0
    out = _restorer(Identity4(), height=12, width=10).restore(frames, 0, 2)
    np.testing.assert_array_equal(out[1][::4, ::4], frames[1])


def test_wrong_frame_size_is_an_input_error() -> None:
    r = _restorer(Identity4(), height=12, width=10)
    with pytest.raises(InputShapeError):
        r.restore(_clip(1, h=10, w=12), 0, 1)


def test_device_and_precision_selection() -> None:
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            select_device("cuda:0")
    with pytest.raises(ConfigError, match="fp16"):
        check_precision("fp16", torch.device("cpu"))
    assert check_precision("bf16", torch.device("cpu")) == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": 0},
        {"chunk": 0},
        {"overlap": -1},
        {"tile": 8, "tile_overlap": 8},
        {"device": "gpu"},
        {"precision": "fp8"},
        {"precision": "fp16", "device": "cpu"},
        {"start": 3.0, "end": 2.0},
        {"scene_threshold": 0.0},
        {"ensemble": 3},
    ],
)
def test_options_reject_bad_values(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        RestoreOptions(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# Scene cuts


def _scene(kind: int, n: int, h: int = 32, w: int = 48) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        if kind == 0:  # a horizontal pan over a red-green gradient
            f[..., 0], f[..., 1], f[..., 2] = ((xx + 3 * i) * 5) % 256, yy * 6, 80
        else:  # a different palette, moving diagonally
            f[..., 0], f[..., 1], f[..., 2] = 20, 200, ((xx - yy + 2 * i) * 7) % 256
        out.append(f)
    return out


def test_scene_detector_finds_the_cut_and_ignores_motion() -> None:
    frames = _scene(0, 7) + _scene(1, 5)
    det = SceneCutDetector()
    cuts = [i for i, f in enumerate(frames) if det.is_cut(f)]
    assert cuts == [7]


def test_scene_detector_ignores_slow_fade() -> None:
    base = _scene(0, 1)[0].astype(np.float32)
    det = SceneCutDetector()
    fade = [(base * (1 - 0.05 * i)).astype(np.uint8) for i in range(12)]
    assert not any(det.is_cut(f) for f in fade)


# ----------------------------------------------------------------------------------------------------------
# The real architectures (tiny presets, random weights)


def _preset(name: str) -> nn.Module:
    from fmanetpp_cli.models import create_model, list_models

    if name not in list_models():
        pytest.skip(f"model preset {name} not available yet")
    torch.manual_seed(0)
    return create_model(name).eval()


def test_fmanet_v1_chunks_equal_one_window_at_a_time() -> None:
    model = _preset("fmanet-small-a")
    frames = _clip(4, h=12, w=12, seed=3)
    restorer = _restorer(model, height=12, width=12)
    half = model.num_seq // 2
    stitched = _stitch(restorer, frames, plan_chunks(4, chunk=4, overlap=half, pad=half))
    padded = [frames[0]] * half + frames + [frames[-1]] * half
    for i in range(4):
        x = frames_to_tensor(padded[i : i + model.num_seq], torch.device("cpu"))  # [1, 3, T, H, W]
        with torch.no_grad():
            ref = model(x)["output"].clamp(0, 1).mul(255).round()[0].permute(1, 2, 0).numpy()
        assert np.abs(stitched[i].astype(float) - ref).max() <= 1


def test_fmanetpp_chunks_equal_whole_sequence() -> None:
    model = _preset("fmanetpp-tiny")
    radius = model.temporal_radius
    n = 2 * radius + 6
    frames = _clip(n, h=12, w=12, seed=4)
    restorer = _restorer(model, height=12, width=12)
    whole = restorer.restore(frames, 0, n)
    chunks = plan_chunks(n, chunk=2 * radius + 3, overlap=radius)
    assert len(chunks) > 1
    stitched = _stitch(restorer, frames, chunks)
    diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(whole, stitched, strict=True))
    assert diff <= 1


@pytest.mark.parametrize("name", ["fmanetpp-tiny", "fmanet-small-a"])
def test_real_presets_bf16_close_to_fp32(name: str) -> None:
    model = _preset(name)
    frames = _clip(5, h=12, w=12, seed=5)
    offset = model.num_seq // 2 if model.temporal_mode == "window" else 0
    count = len(frames) - 2 * offset
    fp32 = _restorer(model, height=12, width=12).restore(frames, offset, count)
    bf16 = _restorer(model, height=12, width=12, dtype=torch.bfloat16)
    low = bf16.restore(frames, offset, count)
    assert max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(fp32, low, strict=True)) <= 4


class Lopsided(Identity4):
    """Half the input, x4 nearest, plus a ramp along the width (and the height): not mirror-symmetric."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """Shapes: x ``[B, 3, T, H, W]`` -> output ``[B, 3, T, 4H, 4W]``."""
        up = super().forward(x)["output"]
        H, W = up.shape[-2:]
        ramp_w = torch.linspace(0, 0.5, W)
        ramp_h = torch.linspace(0, 0.5, H)[:, None]
        return {"output": 0.5 * up + 0.5 * ramp_w + 0.5 * ramp_h}


def test_mirror_ensemble_cancels_what_is_not_mirror_symmetric() -> None:
    frames = _clip(3, h=12, w=16, seed=7)
    x = np.stack(frames).astype(np.float64) / 255  # [T, h, w, 3]
    up = x.repeat(4, 1).repeat(4, 2)  # [T, 4h, 4w, 3]
    ramp_w = np.linspace(0, 0.5, 64)[None, None, :, None]
    ramp_h = np.linspace(0, 0.5, 48)[None, :, None, None]
    expected = {  # the mean of a ramp and its mirror image is its (constant) mean, 0.25
        1: 0.5 * up + 0.5 * ramp_w + 0.5 * ramp_h,
        2: 0.5 * up + 0.125 + 0.5 * ramp_h,
        4: 0.5 * up + 0.25,
    }
    for passes, want in expected.items():
        r = _restorer(Lopsided(), height=12, width=16, ensemble=passes)
        got = np.stack(r.restore(frames, 0, 3)).astype(np.float64)
        assert np.abs(got - np.round(np.clip(want, 0, 1) * 255)).max() <= 1, passes
    with pytest.raises(ConfigError, match="ensemble"):
        RestoreOptions(ensemble=3)
    # with tiles: each tile is mirrored on its own, so a mirror-symmetric model still gives its own output
    tiled = _restorer(Identity4(), height=12, width=16, ensemble=4, tile=8, tile_overlap=2)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(
            tiled.restore(frames, 0, 3), [f.repeat(4, 0).repeat(4, 1) for f in frames], strict=True
        )
    )


def test_mirror_ensemble_of_a_real_preset_is_the_mean_of_the_mirrored_runs() -> None:
    from fmanetpp_cli.pipeline.ensemble import mirror_ensemble

    model = _preset("fmanetpp-tiny")
    x = torch.rand(1, 3, 4, 12, 12)
    with torch.no_grad():
        run = lambda t: model(t)["output"]  # noqa: E731
        plain, mirrored = run(x), run(x.flip(-1)).flip(-1)
        assert (plain - mirrored).abs().max() > 1e-4  # the network is not exactly mirror-equivariant
        torch.testing.assert_close(mirror_ensemble(run, x, 2), (plain + mirrored) / 2)
        torch.testing.assert_close(mirror_ensemble(run, x, 1), plain)


def test_pipeline_imports_no_cli_or_hub_library() -> None:
    import subprocess
    import sys

    code = (
        "import sys, fmanetpp_cli.pipeline\n"
        "print(','.join(m for m in ('typer', 'rich', 'huggingface_hub') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
