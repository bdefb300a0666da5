"""Training step time, float32 against bfloat16 autocast, on the CPU (issue 13).

One joint step of a recipe (forward, backward, AdamW) on batches made exactly as training makes them,
the two precisions interleaved step by step so that the machine's load hits both alike; reports the
median and minimum seconds per step and the ratio. The first ``--warmup`` steps of each are not timed.

Usage::

    python benchmarks/bench_train_precision.py fmanetpp_cli/train/configs/small-v5.toml --steps 12
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fmanetpp_cli.models import create_model
from fmanetpp_cli.train.config import load_config
from fmanetpp_cli.train.data import SCALE, DegradedClips, batch_at, load_sources
from fmanetpp_cli.train.loop import StageLoss, autocast_dtype, stage_parameters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None, help="another preset than the recipe's")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.recipe)
    name = args.model or cfg.model
    sc = cfg.stage("joint")
    data = DegradedClips(
        load_sources(cfg.data.sources, cfg.data.downscale, cfg.data.lr_patch * SCALE), cfg.data, 0
    )
    runs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = create_model(name)
        model.requires_grad_(False)
        params = stage_parameters(model, "joint")
        for p in params:
            p.requires_grad_(True)
        model.train()
        runs[precision] = (StageLoss(model, "joint", cfg), torch.optim.AdamW(params, lr=1e-4), [])
    for step in range(args.warmup + args.steps):
        batch = batch_at(data, step, sc.batch_size)
        for precision, (loss_fn, opt, times) in runs.items():
            dtype = autocast_dtype(precision, torch.device("cpu"))
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss, _ = loss_fn(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step >= args.warmup:
                times.append(time.perf_counter() - t0)
    med = {p: statistics.median(t) for p, (_, _, t) in runs.items()}
    for p, (_, _, t) in runs.items():
        print(
            f"{name} joint batch {sc.batch_size} x {cfg.data.frames} frames, LR patch {cfg.data.lr_patch}, "
            f"{args.threads} thread(s), {p}: median {med[p]:.3f} s/step, min {min(t):.3f} s"
        )
    print(f"bf16 speed-up: {med['fp32'] / med['bf16']:.2f}x (median)")


if __name__ == "__main__":
    main()
