"""Image and video quality metrics: PSNR and SSIM (RGB and Y) with a border crop, and tOF.

Conventions follow FMA-Net's released evaluation (the basis the FMA-Net++ paper most plausibly used):

- Frames are compared as 8-bit images (float inputs are rounded to the 8-bit grid first).
- ``crop`` pixels are removed from every border before measuring (4 in the paper's protocol).
- RGB-PSNR uses the MSE over all three channels; RGB-SSIM is the mean of the per-channel SSIMs
  (Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03, "valid" filtering as in Wang et al. 2004).
- Y is ITU-R BT.601 luma on the studio range, ``16 + 65.481 R + 128.553 G + 24.966 B`` (R, G, B in [0, 1]),
  computed from true RGB order (FMA-Net's helper read BGR and so swapped the R and B weights).
- tOF (TecoGAN): Farneback flow between consecutive grey frames of the output and of the ground truth,
  both centre-cropped to a multiple of 32 with at least 16 px trimmed, and the mean per-pixel L2 norm of
  the difference, averaged over frame pairs. Needs OpenCV (``pip install 'fmanetpp-cli[eval]'``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fmanetpp_cli.errors import ConfigError, InputShapeError

PAPER_CROP = 4


def _as_float(img: np.ndarray | Tensor) -> Tensor:
    """``[H, W, 3]`` uint8 or ``[3, H, W]`` float in [0, 1] -> ``[3, H, W]`` float64 on the 8-bit grid."""
    if isinstance(img, np.ndarray):
        if img.ndim != 3 or img.shape[2] != 3:
            raise InputShapeError(f"expected an [H, W, 3] image, got {img.shape}")
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).double()
        return t / 255.0 if img.dtype == np.uint8 else (t.clamp(0, 1) * 255).round() / 255.0
    if img.ndim != 3 or img.shape[0] != 3:
        raise InputShapeError(f"expected a [3, H, W] tensor, got {tuple(img.shape)}")
    return (img.detach().double().clamp(0, 1) * 255).round() / 255.0


def _crop(x: Tensor, crop: int) -> Tensor:
    return x[..., crop:-crop, crop:-crop] if crop > 0 else x


def rgb_to_y(x: Tensor) -> Tensor:
    """BT.601 studio-range luma in [0, 1] units (16/255 .. 235/255).

    Shapes:
        x: ``[3, H, W]`` RGB in [0, 1]; returns ``[1, H, W]``.
    """
    r, g, b = x[0], x[1], x[2]
    return ((16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0).unsqueeze(0)


def _psnr(a: Tensor, b: Tensor) -> float:
    mse = torch.mean((a - b) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()  # [k]


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Valid Gaussian filtering as two 1-D passes (the 2-D window is separable; 5x fewer operations)."""
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, 1, k))  # [C, 1, H, W - k + 1]
    return F.conv2d(x, g.view(1, 1, k, 1))  # [C, 1, H - k + 1, W - k + 1]


def _ssim_per_channel(a: Tensor, b: Tensor) -> Tensor:
    """SSIM of each channel (values on the 0..255 scale, valid filtering).

    Shapes:
        a, b: ``[C, H, W]``; returns ``[C]``.
    """
    a, b = a.unsqueeze(1) * 255.0, b.unsqueeze(1) * 255.0  # [C, 1, H, W]
    if min(a.shape[-2:]) < 11:
        raise InputShapeError(
            f"SSIM needs frames of at least 11x11 after cropping, got {tuple(a.shape[-2:])}"
        )
    g = _gaussian_1d()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _blur(a, g), _blur(b, g)
    var_a = _blur(a * a, g) - mu_a**2
    var_b = _blur(b * b, g) - mu_b**2
    cov = _blur(a * b, g) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def frame_metrics(
    restored: np.ndarray | Tensor, gt: np.ndarray | Tensor, crop: int = PAPER_CROP
) -> dict[str, float]:
    """PSNR and SSIM of one frame against its ground truth, on RGB and on Y.

    Args:
        restored: ``[H, W, 3]`` uint8 or ``[3, H, W]`` float in [0, 1].
        gt: the ground truth, same size.
        crop: border pixels removed before measuring.

    Returns:
        ``{"psnr_rgb", "ssim_rgb", "psnr_y", "ssim_y"}``.

    Raises:
        InputShapeError: the sizes differ or the frame is too small.
    """
    a, b = _as_float(restored), _as_float(gt)
    if a.shape != b.shape:
        raise InputShapeError(
            f"restored frame {tuple(a.shape)} and ground truth {tuple(b.shape)} differ in size"
        )
    a, b = _crop(a, crop), _crop(b, crop)
    ya, yb = rgb_to_y(a), rgb_to_y(b)
    return {
        "psnr_rgb": _psnr(a, b),
        "ssim_rgb": _ssim_per_channel(a, b).mean().item(),
        "psnr_y": _psnr(ya, yb),
        "ssim_y": _ssim_per_channel(ya, yb).item(),
    }


def psnr(restored: np.ndarray | Tensor, gt: np.ndarray | Tensor, crop: int = PAPER_CROP) -> float:
    """RGB-PSNR in dB of one frame (8-bit grid, border crop)."""
    a, b = _as_float(restored), _as_float(gt)
    if a.shape != b.shape:
        raise InputShapeError(f"sizes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return _psnr(_crop(a, crop), _crop(b, crop))


def have_opencv() -> bool:
    """True when OpenCV (the ``eval`` extra) is importable, which tOF needs."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _grey(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)


def _flow_crop(flow: np.ndarray) -> np.ndarray:
    """Centre-crop to a multiple of 32 with at least 16 px trimmed in total (720x1280 -> 704x1248)."""
    h, w = flow.shape[:2]
    nh, nw = (h - 16) // 32 * 32, (w - 16) // 32 * 32
    if nh <= 0 or nw <= 0:  # tiny frames: keep the whole field
        return flow
    top, left = (h - nh) // 2, (w - nw) // 2
    return flow[top : top + nh, left : left + nw]


def farneback(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Farneback flow between two RGB uint8 frames with FMA-Net's parameters, ``[H, W, 2]``."""
    import cv2

    # OpenCV's stubs do not admit None for the optional output array, which the function accepts.
    flow = cv2.calcOpticalFlowFarneback(_grey(prev), _grey(nxt), None, 0.5, 3, 15, 3, 5, 1.2, 0)  # type: ignore[call-overload]
    return np.asarray(flow)


def tof(restored: list[np.ndarray], gt: list[np.ndarray]) -> float:
    """Temporal optical-flow error (lower is better) over consecutive frame pairs.

    Args:
        restored: frames ``[H, W, 3]`` uint8 RGB.
        gt: ground-truth frames, same count and size.

    Raises:
        ConfigError: OpenCV is not installed.
        InputShapeError: fewer than two frames or mismatched lists.
    """
    if not have_opencv():
        raise ConfigError("tOF needs OpenCV's Farneback flow: pip install 'fmanetpp-cli[eval]'")
    if len(restored) != len(gt) or len(gt) < 2:
        raise InputShapeError(
            f"tOF needs two equally long sequences of >= 2 frames, got {len(restored)} and {len(gt)}"
        )
    errors = []
    for i in range(1, len(gt)):
        f_out = _flow_crop(farneback(restored[i - 1], restored[i]))
        f_gt = _flow_crop(farneback(gt[i - 1], gt[i]))
        errors.append(float(np.mean(np.linalg.norm(f_out - f_gt, axis=-1))))
    return float(np.mean(errors))
