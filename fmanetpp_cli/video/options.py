"""Encoder settings for the restored video: codec, quality, speed, pixel format, container choice.

`EncodeOptions` is validated on construction (`ConfigError` names the bad value). `choose_pix_fmt` keeps
the source's chroma subsampling and bit depth where the encoder allows it; the table below is what the
bundled FFmpeg 8 (PyAV 16.1) offers:

- libx264: 8 and 10 bit, 4:2:0 / 4:2:2 / 4:4:4 (``yuv420p10le`` is High 10);
- libx265: 8, 10 and 12 bit, 4:2:0 / 4:2:2 / 4:4:4;
- ffv1 (lossless): 8 to 16 bit, every chroma layout;
- NVENC (h264/hevc/av1_nvenc, only with an NVIDIA GPU): ``yuv420p``, ``p010le`` (10 bit), ``yuv444p``,
  ``yuv444p16le``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import av

from fmanetpp_cli.errors import ConfigError
from fmanetpp_cli.video.info import HdrMetadata, PathLike, bit_depth_of

# Output extension -> FFmpeg muxer name.
CONTAINERS: dict[str, str] = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
}

# Default constant-quality value per encoder family (visually near-lossless for restored footage).
_DEFAULT_CRF = {
    "libx264": 18,
    "libx265": 20,
    "nvenc": 19,
    "libaom-av1": 24,
    "libsvtav1": 24,
    "libvpx-vp9": 24,
}
_X26X_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)
_NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7", "fast", "medium", "slow")
_LOSSLESS = ("ffv1",)


def _family(codec: str) -> str:
    return "nvenc" if codec.endswith("_nvenc") else codec


@dataclass(frozen=True, slots=True)
class EncodeOptions:
    """How to encode the restored video. Validated on construction (raises `ConfigError`).

    Attributes:
        codec: video encoder: ``"libx264"`` (default), ``"libx265"``, ``"ffv1"`` (lossless), an NVENC
            encoder (``"h264_nvenc"``, ``"hevc_nvenc"``, ``"av1_nvenc"``) when the FFmpeg build and the
            machine have one, or any other video encoder FFmpeg offers.
        crf: constant-quality value (lower is better; x264/x265 0..51, NVENC ``-cq`` 0..51). None: the
            codec's default here (x264 18, x265 20, NVENC 19). Not allowed with ffv1 (lossless).
        preset: encoder speed preset (x264/x265 ``ultrafast``..``placebo``, NVENC ``p1``..``p7``). None:
            the encoder's default.
        pix_fmt: output pixel format. None: chosen from the source (same chroma subsampling and bit
            depth when the codec allows; a 10-bit source stays 10-bit with x264/x265/ffv1).
        copy_audio: copy the source's audio streams.
        copy_subtitles: copy the source's subtitle streams.
        copy_metadata: copy container/stream metadata and chapters.
        threads: encoder threads (0 lets FFmpeg choose).
    """

    codec: str = "libx264"
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    copy_audio: bool = True
    copy_subtitles: bool = True
    copy_metadata: bool = True
    threads: int = 0

    def __post_init__(self) -> None:
        try:
            codec = av.codec.Codec(self.codec, "w")
        except Exception as e:  # noqa: BLE001 - PyAV raises several types for unknown names
            raise ConfigError(f"unknown video encoder {self.codec!r} (try libx264, libx265 or ffv1)") from e
        if codec.type != "video":
            raise ConfigError(f"{self.codec!r} is a {codec.type} encoder, not a video encoder")
        family = _family(self.codec)
        if self.crf is not None:
            if self.codec in _LOSSLESS:
                raise ConfigError(f"{self.codec} is lossless: crf does not apply")
            if not 0 <= self.crf <= 63 or (family in ("libx264", "libx265", "nvenc") and self.crf > 51):
                raise ConfigError(f"crf {self.crf} is out of range for {self.codec} (0..51)")
        if self.preset is not None:
            allowed: tuple[str, ...] | None = None
            if family in ("libx264", "libx265"):
                allowed = _X26X_PRESETS
            elif family == "nvenc":
                allowed = _NVENC_PRESETS
            elif self.codec in _LOSSLESS:
                allowed = ()
            if allowed is not None and self.preset not in allowed:
                choices = ", ".join(allowed) if allowed else "none"
                raise ConfigError(
                    f"preset {self.preset!r} is not valid for {self.codec} (choices: {choices})"
                )
        if self.pix_fmt is not None:
            supported = [f.name for f in (codec.video_formats or [])]
            if supported and self.pix_fmt not in supported:
                raise ConfigError(
                    f"pix_fmt {self.pix_fmt!r} is not supported by {self.codec} "
                    f"(choices: {', '.join(supported)})"
                )
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")

    def codec_options(self) -> dict[str, str]:
        """The FFmpeg encoder options (``AVCodecContext`` private options) these settings mean."""
        family = _family(self.codec)
        crf = self.crf if self.crf is not None else _DEFAULT_CRF.get(family)
        out: dict[str, str] = {}
        if family in ("libx264", "libx265", "libaom-av1", "libsvtav1", "libvpx-vp9") and crf is not None:
            out["crf"] = str(crf)
            if family == "libvpx-vp9":
                out["b"] = "0"  # constant quality, no bitrate cap
        elif family == "nvenc" and crf is not None:
            out.update({"rc": "vbr", "cq": str(crf), "b": "0"})
        if self.preset is not None and self.codec not in _LOSSLESS:
            out["preset"] = self.preset
        if family == "libx265":
            out["x265-params"] = "log-level=error"
        if self.codec == "ffv1":
            out.update({"level": "3", "slicecrc": "1"})  # FFV1 v3: multithreaded, with checksums
        return out


def container_for(path: PathLike) -> str:
    """FFmpeg muxer name for an output path, from its extension.

    Raises:
        ConfigError: the extension is not one we write.
    """
    ext = Path(path).suffix.lower()
    if ext not in CONTAINERS:
        raise ConfigError(
            f"{path}: unsupported output extension {ext or '(none)'!r} (use one of {', '.join(CONTAINERS)})"
        )
    return CONTAINERS[ext]


def _chroma_of(pix_fmt: str) -> str:
    if pix_fmt.startswith(("gbr", "rgb", "bgr", "argb", "abgr", "0rgb", "x2rgb")):
        return "444"
    m = re.search(r"(420|422|444|440|411|410)", pix_fmt)
    return m.group(1) if m else "420"


def choose_pix_fmt(codec: str, source_pix_fmt: str, requested: str | None = None) -> str:
    """Pick the output pixel format: the requested one, else the closest to the source the codec takes.

    Order of preference: same chroma subsampling at the source's bit depth, then 4:2:0 at that depth,
    then the same with 10 bits (for 12/16-bit sources), then 8-bit. Semi-planar formats (``p010le``,
    ``nv12``) are tried for encoders such as NVENC that prefer them.
    """
    if requested:
        return requested
    supported = [f.name for f in (av.codec.Codec(codec, "w").video_formats or [])]
    if not supported:
        return "yuv420p"
    depth = bit_depth_of(source_pix_fmt)
    chroma = _chroma_of(source_pix_fmt)
    candidates: list[str] = []
    for d in sorted({depth, 10, 8} if depth > 8 else {8}, reverse=True):
        if d > depth:
            continue
        suffix = "" if d == 8 else f"{d}le"
        candidates += [f"yuv{chroma}p{suffix}", f"yuv420p{suffix}"]
        if d == 10:
            candidates.append("p010le")
        if d == 16:
            candidates.append("p016le")
        if d == 8:
            candidates.append("nv12")
    for name in candidates:
        if name in supported:
            return name
    return supported[0]


def full_chroma_for_odd_size(codec: str, pix_fmt: str, width: int, height: int) -> str:
    """A pixel format without chroma subsampling when the frame size is odd (4:2:0 needs even sizes).

    Raises:
        ConfigError: the codec offers no such format at this bit depth.
    """
    chroma = _chroma_of(pix_fmt)
    if chroma == "444" or (chroma == "422" and width % 2 == 0):  # 4:2:2 halves only the width
        return pix_fmt
    depth = bit_depth_of(pix_fmt)
    wanted = "yuv444p" if depth == 8 else f"yuv444p{depth}le"
    supported = [f.name for f in (av.codec.Codec(codec, "w").video_formats or [])]
    if wanted in supported:
        return wanted
    raise ConfigError(
        f"{codec} cannot encode an odd frame size ({width}x{height}): it has no {wanted}; "
        "use libx264, libx265 or ffv1"
    )


def x265_hdr_params(hdr: HdrMetadata) -> str:
    """The x265 ``master-display`` / ``max-cll`` parameters that re-state ``hdr`` in the output stream.

    x265 takes chromaticities in units of 0.00002 and luminance in units of 0.0001 cd/m2, with the
    primaries in G, B, R order.
    """
    parts = []
    if hdr.primaries is not None and hdr.white_point is not None and hdr.max_luminance is not None:
        (rx, ry), (gx, gy), (bx, by) = hdr.primaries
        wx, wy = hdr.white_point

        def c(v: float) -> int:
            return round(v * 50000)

        lum = f"L({round(hdr.max_luminance * 10000)},{round((hdr.min_luminance or 0.0) * 10000)})"
        parts.append(
            f"master-display=G({c(gx)},{c(gy)})B({c(bx)},{c(by)})R({c(rx)},{c(ry)})WP({c(wx)},{c(wy)}){lum}"
        )
    if hdr.max_cll is not None:
        parts.append(f"max-cll={hdr.max_cll},{hdr.max_fall or 0}")
    if parts:
        parts.append("hdr10=1")
    return ":".join(parts)
