"""Pixel conversion between decoded/encoded YUV frames and the numpy RGB arrays the pipeline sees.

Three traps in PyAV 16.1 / FFmpeg 8 shape this module (all measured, see tests/test_video_io.py):

- ``VideoFrame.reformat`` only hands the colour matrix and range to swscale when the source and
  destination values differ. Otherwise swscale keeps its defaults (BT.601 matrix, range from the pixel
  format name), so a BT.709 or full-range frame converted with matching arguments gets wrong colours.
  For an RGB side the matrix is irrelevant, so we give it a different one to force the call.
- Packed ``rgb48le`` to/from ``yuv420p10le`` produces wrong colours (mean error > 5000 / 65535 on a
  smooth ramp); planar ``gbrp16le`` is correct, so reading goes through planar RGB.
- 4:2:0 straight to ``gbrp`` garbles the last ``width mod 16`` columns (found by the pipeline's
  identity test at width 40), so subsampled frames are first brought to 4:4:4 YUV.
"""

from __future__ import annotations

import av
import numpy as np

# AVColorSpace values that swscale maps to a real matrix; others (0 = RGB, 2 = unspecified, 8, >10) fall
# back to swscale's default, BT.601, which is also what FFmpeg assumes for untagged video.
_BT601 = 5
_BT709 = 1


def _matrix(colorspace: int) -> int:
    """The colorspace value to hand swscale: the tagged one, or BT.601 when untagged / not a matrix."""
    return colorspace if colorspace in (1, 4, 5, 6, 7, 9, 10) else _BT601


def _other(colorspace: int) -> int:
    """Any matrix different from ``colorspace`` (used on the RGB side, where it has no effect)."""
    return _BT709 if colorspace != _BT709 else _BT601


def _range(color_range: int) -> str:
    return "JPEG" if int(color_range) == 2 else "MPEG"


def _subsampled(fmt: av.VideoFormat) -> bool:
    """True for YUV formats whose chroma planes are smaller than the luma plane (4:2:0, 4:2:2, ...)."""
    comps = fmt.components
    if fmt.is_rgb or len(comps) < 3:
        return False
    return comps[1].width < comps[0].width or comps[1].height < comps[0].height


def frame_to_array(frame: av.VideoFrame, high_bit_depth: bool) -> np.ndarray:
    """Convert a decoded frame to ``[H, W, 3]`` full-range RGB, uint8 (or uint16 full scale).

    The frame's own matrix coefficients and range are used, so BT.709, BT.2020 and full-range sources
    come out with correct colours.
    """
    src = _matrix(int(frame.colorspace))
    fmt = frame.format
    full = int(frame.color_range) == 2 or fmt.name.startswith("yuvj")
    if _subsampled(fmt):
        # Upsample the chroma first (same matrix and range: a YUV -> YUV identity apart from size).
        # swscale's direct 4:2:0 -> gbrp path leaves the last (width mod 16) columns undefined in
        # FFmpeg 8 (measured: errors up to 80 % of full scale at widths 40 and 1000).
        wide = "yuvj444p" if fmt.name.startswith("yuvj") else ("yuv444p16le" if high_bit_depth else "yuv444p")
        frame = frame.reformat(format=wide)
    rgb = frame.reformat(
        format="gbrp16le" if high_bit_depth else "gbrp",
        src_colorspace=src,
        dst_colorspace=_other(src),
        src_color_range="JPEG" if full else "MPEG",
        dst_color_range="JPEG",
    )
    return rgb.to_ndarray(channel_last=True)  # [H, W, 3], PyAV flips gbr planes to RGB order


def array_to_frame(image: np.ndarray, pix_fmt: str, colorspace: int, color_range: int) -> av.VideoFrame:
    """Convert ``[H, W, 3]`` full-range RGB (uint8 or uint16) to a frame in ``pix_fmt``, tagged.

    Args:
        image: the RGB array.
        pix_fmt: the encoder's pixel format.
        colorspace: AVColorSpace of the output (its matrix is used; untagged means BT.601).
        color_range: AVColorRange of the output (2 full, else limited).
    """
    rgb = av.VideoFrame.from_ndarray(image, format="rgb48le" if image.dtype == np.uint16 else "rgb24")
    dst = _matrix(colorspace)
    out = rgb.reformat(
        format=pix_fmt,
        src_colorspace=_other(dst),
        dst_colorspace=dst,
        src_color_range="MPEG",  # ignored for RGB input; differs from a full-range output on purpose
        dst_color_range=_range(color_range),
    )
    out.colorspace = colorspace
    out.color_range = color_range
    return out
