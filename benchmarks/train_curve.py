"""Validation curve of a training run against its wall-clock minutes, from the run's ``train.log``.

Reads the ``val <stage> step N: psnr X psnr_bicubic Y`` lines that ``fmanetpp train`` writes every
``val_every`` steps and prints a Markdown table of joint step, training minutes and the gain over bicubic.
A run that spans sessions has one log with a gap between them; a pause longer than ``--gap`` minutes
between two lines is not counted as training time. The validation clips are the recipe's own
``val_sources`` (a seed of the run draws them), so gains are comparable between runs of one seed only.

Usage::

    python benchmarks/train_curve.py runs/small-v6/train.log [--stage joint] [--gap 10]
"""

from __future__ import annotations

import argparse
import datetime
import re
from pathlib import Path

LINE = re.compile(r"^(\S+ \S+) (.*)$")
VAL = re.compile(r"val (\w+) step (\d+): psnr ([\d.]+) psnr_bicubic ([\d.]+)")


def curve(log: Path, stage: str, gap_minutes: float) -> list[tuple[int, float, float, float]]:
    """(step, training minutes, PSNR, gain over bicubic) of every validation of ``stage``."""
    rows: list[tuple[int, float, float, float]] = []
    minutes, last = 0.0, None
    for line in log.read_text(encoding="utf-8").splitlines():
        m = LINE.match(line)
        if m is None:
            continue
        try:
            when = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
        if last is not None:
            step_minutes = (when - last).total_seconds() / 60
            minutes += step_minutes if step_minutes <= gap_minutes else 0.0
        last = when
        v = VAL.search(m.group(2))
        if v is not None and v.group(1) == stage:
            psnr, bicubic = float(v.group(3)), float(v.group(4))
            rows.append((int(v.group(2)), minutes, psnr, psnr - bicubic))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--stage", default="joint")
    ap.add_argument(
        "--gap", type=float, default=10.0, help="pauses longer than this (minutes) are not training"
    )
    args = ap.parse_args()
    print("| step | minutes | PSNR | gain over bicubic |")
    print("|---|---|---|---|")
    for step, minutes, psnr, gain in curve(args.log, args.stage, args.gap):
        print(f"| {step:,} | {minutes:.0f} | {psnr:.2f} | {gain:+.2f} |")


if __name__ == "__main__":
    main()
