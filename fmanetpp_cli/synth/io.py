"""Frame I/O for the degradation and evaluation tools: videos, frame folders and single images.

Frames are numpy arrays ``[H, W, 3]`` RGB ``uint8``. Decoding goes through ``video.VideoReader`` (PyAV:
FFmpeg reads PNG, JPEG and every common video container, and the reader applies each file's colour matrix
and range), so there is one decoder in the package and no imaging library is needed. PNG files are
written by a small encoder here (zlib only) and always atomically: a temporary file beside the target,
then a rename.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fmanetpp_cli._files import write_bytes_atomic
from fmanetpp_cli.errors import VideoError, VideoOpenError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image(path: Path) -> bool:
    """True when the file name looks like a still image."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder in name order (``00000000.png``, ``00000001.png``, ...)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image(p))


def _decode_all(path: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """Frames of a video or image file through ``video.VideoReader`` (its colour handling), as uint8.

    Deeper sources (which the reader hands out on the 16-bit scale) are rounded to 8 bits.

    Raises:
        VideoOpenError: the file cannot be opened or decoded (the reader's error, as this module's type).
    """
    from fmanetpp_cli.video import VideoReader

    count = 0
    try:
        with VideoReader(path) as reader:
            for frame in reader:
                image = frame.image
                if image.dtype == np.uint16:
                    image = np.round(image / 257.0).astype(np.uint8)
                yield image
                count += 1
                if limit is not None and count >= limit:
                    return
    except VideoOpenError:
        raise
    except VideoError as e:
        raise VideoOpenError(f"{e} (after {count} frames)" if count else str(e)) from e


def read_image(path: Path) -> np.ndarray:
    """Decode one still image to ``[H, W, 3]`` uint8 RGB."""
    frames = list(_decode_all(path, limit=1))
    if not frames:
        raise VideoOpenError(f"{path}: no image data")
    return frames[0]


def read_frames(
    path: str | os.PathLike[str], *, start: int = 0, count: int | None = None
) -> list[np.ndarray]:
    """Read frames from a video file, a folder of images, or a single image.

    Args:
        path: a video, a folder of image files (sorted by name) or one image.
        start: index of the first frame to keep.
        count: number of frames to keep (all remaining frames when None).

    Returns:
        A list of ``[H, W, 3]`` uint8 RGB arrays.

    Raises:
        VideoOpenError: the path is missing, empty or not decodable.
    """
    p = Path(path)
    if not p.exists():
        raise VideoOpenError(f"{p}: no such file or folder")
    stop = None if count is None else start + count
    if p.is_dir():
        files = list_frame_files(p)
        if not files:
            raise VideoOpenError(f"{p}: folder holds no image files")
        return [read_image(f) for f in files[start:stop]]
    if is_image(p):
        return [read_image(p)][start:stop]
    frames = []
    for i, frame in enumerate(_decode_all(p, limit=stop)):
        if i >= start:
            frames.append(frame)
    if not frames:
        raise VideoOpenError(f"{p}: no frames decoded (from index {start})")
    return frames


def encode_png(image: np.ndarray) -> bytes:
    """Encode ``[H, W, 3]`` uint8 RGB as PNG bytes (8-bit truecolour, no filtering)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected [H, W, 3] uint8, got {image.shape} {image.dtype}")
    h, w, _ = image.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * 3)], axis=1)  # filter byte 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def write_png(path: Path, image: np.ndarray) -> None:
    """Write one RGB uint8 frame as a PNG file, atomically."""
    write_bytes_atomic(path, encode_png(image))


def write_frame_folder(folder: Path, frames: list[np.ndarray]) -> list[Path]:
    """Write frames as ``00000000.png``, ``00000001.png``, ... into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        path = folder / f"{i:08d}.png"
        write_png(path, frame)
        paths.append(path)
    return paths
