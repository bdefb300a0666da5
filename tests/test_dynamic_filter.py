"""Dynamic down-/upsampling against direct (memory-hungry) reference formulations written here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fmanetpp_cli.errors import InputShapeError
from fmanetpp_cli.models.dynamic_filter import dynamic_downsample, dynamic_upsample


def reference_downsample(x: torch.Tensor, logits: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """Unfold every k x k window at stride s, weight by the joint softmax, sum (the broadcast product)."""
    B, C, T, sH, sW = x.shape
    H, W = sH // s, sW // s
    pad = (k - s) // 2
    windows = []
    for t in range(T):
        frame = F.pad(x[:, :, t], (pad, pad, pad, pad), mode="replicate")
        cols = F.unfold(frame, k, stride=s)  # [B, C*k*k, H*W]
        windows.append(cols.view(B, C, k * k, H, W))
    patches = torch.stack(windows, dim=2)  # [B, C, T, k*k, H, W]
    w = logits.permute(0, 2, 1, 3, 4).reshape(B, T * k * k, H, W).softmax(dim=1)
    w = w.view(B, 1, T, k * k, H, W)
    return (patches * w).sum(dim=(2, 3))


def reference_upsample(x: torch.Tensor, kernel: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """Unfold k x k LR neighbourhoods and take one dot product per HR sub-pixel (the broadcast product)."""
    B, C, T, H, W = x.shape
    pad = k // 2
    windows = []
    for t in range(T):
        frame = F.pad(x[:, :, t], (pad, pad, pad, pad), mode="replicate")
        windows.append(F.unfold(frame, k).view(B, C, k * k, H, W))
    patches = torch.stack(windows, dim=2)  # [B, C, T, k*k, H, W]
    kern = kernel.view(B, s, s, k * k, T, H, W).permute(0, 1, 2, 4, 3, 5, 6)  # [B, s, s, T, k*k, H, W]
    kern = kern - kern.mean(dim=(3, 4), keepdim=True) + 1.0 / (T * k * k)
    prod = patches[:, :, None, None] * kern[:, None]  # [B, C, s, s, T, k*k, H, W]
    out = prod.sum(dim=(4, 5))  # [B, C, s, s, H, W]
    return out.permute(0, 1, 4, 2, 5, 3).reshape(B, C, H * s, W * s)


@pytest.mark.parametrize(
    ("k", "s", "T", "H", "W"),
    [(6, 4, 3, 5, 7), (4, 2, 2, 3, 4), (8, 4, 1, 2, 3), (20, 4, 3, 3, 2), (4, 4, 3, 3, 3), (5, 3, 2, 4, 3)],
)
def test_downsample_matches_reference(k: int, s: int, T: int, H: int, W: int) -> None:
    g = torch.Generator().manual_seed(k * 100 + H)
    x = torch.rand(2, 3, T, s * H, s * W, generator=g, dtype=torch.float64)
    logits = 3 * torch.randn(2, k * k, T, H, W, generator=g, dtype=torch.float64)
    ours = dynamic_downsample(x, logits, kernel_size=k, scale=s)
    torch.testing.assert_close(ours, reference_downsample(x, logits, k, s), rtol=1e-12, atol=1e-12)


def test_downsample_coverage_normalises() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 3, 16, 12, generator=g, dtype=torch.float64)
    cover = torch.rand(1, 1, 3, 16, 12, generator=g, dtype=torch.float64) + 0.1
    logits = torch.randn(1, 36, 3, 4, 3, generator=g, dtype=torch.float64)
    ours = dynamic_downsample(x, logits, kernel_size=6, scale=4, coverage=cover)
    expect = reference_downsample(x, logits, 6, 4) / (reference_downsample(cover, logits, 6, 4) + 1e-8)
    torch.testing.assert_close(ours, expect, rtol=1e-12, atol=1e-12)
    # a constant image divided by its own coverage stays constant, whatever the kernels
    flat = dynamic_downsample(
        0.7 * cover.expand(1, 3, 3, 16, 12), logits, kernel_size=6, scale=4, coverage=cover
    )
    torch.testing.assert_close(flat, torch.full_like(flat, 0.7), rtol=1e-7, atol=1e-7)  # up to the +1e-8


@pytest.mark.parametrize(("k", "s", "T", "H", "W"), [(3, 4, 3, 5, 6), (5, 2, 2, 4, 3), (1, 3, 1, 2, 2)])
def test_upsample_matches_reference(k: int, s: int, T: int, H: int, W: int) -> None:
    g = torch.Generator().manual_seed(k * 10 + s)
    x = torch.rand(2, 3, T, H, W, generator=g, dtype=torch.float64)
    kernel = torch.randn(2, s * s * k * k, T, H, W, generator=g, dtype=torch.float64)
    ours = dynamic_upsample(x, kernel, kernel_size=k, scale=s)
    assert ours.shape == (2, 3, s * H, s * W)
    torch.testing.assert_close(ours, reference_upsample(x, kernel, k, s), rtol=1e-12, atol=1e-12)


def test_upsample_of_constant_is_constant() -> None:
    # normalised kernels sum to 1 over the taps, so a constant window upsamples to the same constant
    kernel = torch.randn(1, 16 * 9, 3, 4, 5, dtype=torch.float64)
    x = torch.full((1, 3, 3, 4, 5), 0.25, dtype=torch.float64)
    out = dynamic_upsample(x, kernel, kernel_size=3, scale=4)
    torch.testing.assert_close(out, torch.full_like(out, 0.25), rtol=1e-12, atol=1e-12)


def test_float32_agrees_with_reference() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(1, 3, 3, 6, 8, generator=g)
    kernel = torch.randn(1, 16 * 25, 3, 6, 8, generator=g)
    torch.testing.assert_close(
        dynamic_upsample(x, kernel, kernel_size=5, scale=4),
        reference_upsample(x, kernel, 5, 4),
        rtol=1e-5,
        atol=1e-5,
    )


def test_bad_shapes_raise() -> None:
    with pytest.raises(InputShapeError, match="kernels"):
        dynamic_upsample(torch.rand(1, 3, 3, 4, 4), torch.rand(1, 10, 3, 4, 4), kernel_size=3, scale=4)
    with pytest.raises(InputShapeError, match="even"):
        dynamic_downsample(torch.rand(1, 3, 1, 8, 8), torch.rand(1, 25, 1, 2, 2), kernel_size=5, scale=4)
    with pytest.raises(InputShapeError, match="5-D"):
        dynamic_downsample(torch.rand(3, 8, 8), torch.rand(1, 25, 1, 2, 2), kernel_size=5, scale=4)


class _LargestOutput(TorchDispatchMode):
    """Records the largest tensor any aten op newly allocates (views and in-place results are skipped)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        flat_in = [*args, *(kwargs or {}).values()]
        flat_in = [a for x in flat_in for a in (x if isinstance(x, (tuple, list)) else (x,))]
        seen = {a.untyped_storage().data_ptr() for a in flat_in if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                self.largest = max(self.largest, t.numel())
        return out


def test_no_large_temporaries() -> None:
    """No intermediate may approach the broadcast product / unfolded input of the direct formulation."""
    B, C, T, H, W, k, s = 1, 3, 3, 24, 32, 5, 4
    x = torch.rand(B, C, T, H, W)
    kernel = torch.randn(B, s * s * k * k, T, H, W)
    product = B * C * s * s * T * k * k * H * W
    with _LargestOutput() as probe:
        expect = reference_upsample(x, kernel, k, s)
    assert probe.largest >= product  # the probe does see the broadcast product of the direct version
    with _LargestOutput() as probe:
        banded = dynamic_upsample(x, kernel, kernel_size=k, scale=s, chunk_bytes=64 * 1024)
    assert probe.largest <= product / 50, (probe.largest, product)
    torch.testing.assert_close(banded, expect, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        banded, dynamic_upsample(x, kernel, kernel_size=k, scale=s), rtol=1e-6, atol=1e-6
    )

    k = 8
    y = torch.rand(B, C, T, s * H, s * W)
    cover = torch.rand_like(y[:, :1]) + 0.5
    logits = torch.randn(B, k * k, T, H, W)
    unfolded = B * (C + 1) * T * k * k * H * W
    with _LargestOutput() as probe:
        banded = dynamic_downsample(y, logits, kernel_size=k, scale=s, coverage=cover, chunk_bytes=64 * 1024)
    assert probe.largest <= unfolded / 3, (probe.largest, unfolded)
    whole = dynamic_downsample(y, logits, kernel_size=k, scale=s, coverage=cover)
    torch.testing.assert_close(banded, whole, rtol=1e-6, atol=1e-6)
