"""Broken video files for the robustness tests: mutants of a small real clip.

    python tests/fuzz_media.py OUT_DIR        # writes the base clips and every mutant, prints the count

`base_clips` cuts 12 frames (with their audio) of the bundled Big Buck Bunny sample down to 80x44 and
stores them as MP4 and Matroska. `mutants` derives, deterministically, a few hundred broken files from
each: truncated at many offsets, bytes flipped in the header, in the index (MP4 ``moov``, Matroska
``Cues``/``SeekHead``) and in the frame data, remuxes with video packets left out, and MP4s whose
sample table gives packets a length of zero. The test restores a
fixed sample of them; the slow case restores them all.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "docs" / "sample" / "bbb_320x180_2s.mp4"
BASE_FRAMES = 12

# Element IDs of the Matroska index: Cues and SeekHead (their bytes as they appear in the file).
_MKV_INDEX_IDS = (bytes.fromhex("1C53BB6B"), bytes.fromhex("114D9B74"))


def _cut(src: Path, dst: Path, frames: int) -> None:
    """Re-encode the first ``frames`` frames at a quarter of the size, copying the audio they cover."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vout = out.add_stream("libx264", rate=vin.average_rate)
        vout.width, vout.height, vout.pix_fmt = 80, 44, "yuv420p"
        vout.codec_context.options = {"preset": "ultrafast", "g": "6", "bf": "2"}
        aout = out.add_stream_from_template(ain)
        end = None
        for i, frame in enumerate(inp.decode(vin)):
            if i == frames:
                end = float(frame.pts * vin.time_base)
                break
            small = frame.reformat(width=80, height=44, format="yuv420p")
            small.pts = i
            small.time_base = 1 / vout.codec_context.framerate
            out.mux(vout.encode(small))
        out.mux(vout.encode(None))
        inp.seek(0)
        for packet in inp.demux(ain):
            if packet.size == 0 or packet.pts is None:
                continue
            if end is not None and packet.pts * ain.time_base >= end:
                break
            packet.stream = aout
            out.mux(packet)


def base_clips(folder: Path) -> list[Path]:
    """The two clips the mutants come from (MP4 and Matroska), written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in (".mp4", ".mkv"):
        path = folder / f"base{ext}"
        if not path.exists():
            _cut(SAMPLE, path, BASE_FRAMES)
        paths.append(path)
    return paths


def _mp4_boxes(data: bytes) -> dict[bytes, tuple[int, int]]:
    """Top-level MP4 boxes: type -> (start, end) byte offsets."""
    boxes, pos = {}, 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if size < 8:
            break
        boxes[kind] = (pos, min(pos + size, len(data)))
        pos += size
    return boxes


def _regions(data: bytes, ext: str) -> dict[str, tuple[int, int]]:
    """Byte ranges of the header, the index and the frame data of a base clip."""
    if ext == ".mp4":
        boxes = _mp4_boxes(data)
        return {"header": (0, 64), "index": boxes[b"moov"], "data": boxes[b"mdat"]}
    starts = [data.find(i) for i in _MKV_INDEX_IDS]
    index = [s for s in starts if s >= 0]
    cluster = data.find(bytes.fromhex("1F43B675"))
    index_start = min(index) if index else len(data) - 64
    index_end = max(index) + 48 if index else len(data)
    return {"header": (0, 64), "index": (index_start, index_end), "data": (cluster, len(data))}


def _flip(data: bytes, rng: random.Random, start: int, end: int, count: int) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        pos = rng.randrange(start, max(start + 1, end))
        out[pos] ^= rng.randrange(1, 256)
    return bytes(out)


def _drop_packets(src: Path, dst: Path, every: int) -> None:
    """Remux ``src`` with every ``every``-th video packet emptied (the muxer then leaves it out)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {
            s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")
        }
        for i, packet in enumerate(inp.demux()):
            if packet.stream.index not in streams or packet.dts is None:
                continue
            target = streams[packet.stream.index]
            if packet.stream.type == "video" and i % every == 0:
                empty = av.Packet(b"")
                empty.pts, empty.dts, empty.time_base = packet.pts, packet.dts, packet.time_base
                packet = empty
            packet.stream = target
            out.mux(packet)


def _zero_length_samples(data: bytes, track: int, picks: list[int]) -> bytes:
    """An MP4 whose sample-size table (``stsz``) of track ``track`` says 0 bytes for samples ``picks``."""
    out = bytearray(data)
    pos = -1
    for _ in range(track + 1):
        pos = data.find(b"stsz", pos + 1)
    count = int.from_bytes(data[pos + 12 : pos + 16], "big")
    for k in picks:
        if k < count:
            entry = pos + 16 + 4 * k
            out[entry : entry + 4] = bytes(4)
    return bytes(out)


def mutants(base: Path, folder: Path) -> Iterator[Path]:
    """Write the mutants of one base clip into ``folder`` (deterministic), yielding each path."""
    data = base.read_bytes()
    ext = base.suffix
    rng = random.Random(f"{base.name}:{len(data)}")
    stem = base.stem + ext.replace(".", "_")
    size = len(data)
    # Truncations: densely near the start (the header), then evenly to the last byte.
    cuts = sorted({*range(0, 200, 8), *(size * k // 80 for k in range(1, 80)), size - 1})
    for cut in cuts:
        path = folder / f"{stem}-trunc{cut:07d}{ext}"
        path.write_bytes(data[:cut])
        yield path
    for region, (start, end) in _regions(data, ext).items():
        for n in range(30):
            path = folder / f"{stem}-{region}{n:02d}{ext}"
            path.write_bytes(_flip(data, rng, start, end, 1 + n % 4))
            yield path
    for every in (1, 2, 5):
        path = folder / f"{stem}-dropped{every}{ext}"
        _drop_packets(base, path, every)
        yield path
    if ext == ".mp4":
        for n, (track, picks) in enumerate([(0, [0]), (0, [3]), (0, [5, 6, 7]), (0, [11]), (1, [0, 10])]):
            path = folder / f"{stem}-zerolen{n}{ext}"
            path.write_bytes(_zero_length_samples(data, track, picks))
            yield path


def all_mutants(folder: Path) -> list[Path]:
    """Every mutant of both base clips, in a stable order."""
    bases = base_clips(folder / "base")
    out = folder / "mutants"
    out.mkdir(parents=True, exist_ok=True)
    return [p for base in bases for p in mutants(base, out)]


def sample(paths: list[Path], count: int) -> list[Path]:
    """A fixed, evenly spread subset of about ``count`` paths: each kind of mutation in proportion to its
    number of mutants, at least two of each."""
    kinds: dict[str, list[Path]] = {}
    for p in paths:
        kind = p.stem.split("-")[1].rstrip("0123456789")
        kinds.setdefault(f"{p.suffix}{kind}", []).append(p)
    picked: list[Path] = []
    for group in kinds.values():
        n = min(len(group), max(2, round(count * len(group) / len(paths))))
        picked += [group[(2 * i + 1) * len(group) // (2 * n)] for i in range(n)]
    return picked


if __name__ == "__main__":
    made = all_mutants(Path(sys.argv[1]))
    sys.stdout.write(f"{len(made)} mutants in {Path(sys.argv[1]) / 'mutants'}\n")
