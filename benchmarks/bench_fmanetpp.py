"""Benchmark FMA-Net++ against FMA-Net (v1) on the CPU: time and peak memory per output frame, and a profile.

Both networks run their inference path (``torch.no_grad()``, float32, ``eval()``, random weights: the cost
does not depend on their values), each (model, size) case in a fresh Python subprocess so that its peak
resident set size (``VmHWM``) is its own.

- FMA-Net++ (``fmanetpp-paper`` by default) restores a sequence of ``--frames`` frames in one pass
  (``[1, 3, T, H, W] -> [1, 3, T, 4H, 4W]``); time per output frame = pass time / T. This is the paper's
  setting (whole clips); a streaming pipeline that keeps ``temporal_radius`` frames of context on each side
  of a chunk of ``L`` frames pays ``L / (L - 2 * radius)`` times more (printed as "chunk overhead").
- FMA-Net (``fmanet``, the official full configuration) restores the centre frame of a 3-frame window per
  pass; time per output frame = pass time.

Reported per case: wall time (``perf_counter``; the machine may be shared, so also) CPU time of the process
(``process_time``; with one thread this is the uncontended wall time up to cache effects), the process's
peak RSS and its increase over the RSS after building the model and the input ("activation" memory).

Usage::

    python benchmarks/bench_fmanetpp.py                              # 64x64 and 128x128, both models
    python benchmarks/bench_fmanetpp.py --sizes 64x64 --frames 10 --repeats 2 --threads 1
    python benchmarks/bench_fmanetpp.py --profile 64x64              # where the time goes (FMA-Net++)
    python benchmarks/bench_fmanetpp.py --profile 64x64 --model fmanet
    python benchmarks/bench_fmanetpp.py --baseline /tmp/old  # /tmp/old: `git worktree add` of an older commit
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

# The paper (Table 1): seconds per 180x320 LR frame on an unnamed GPU.
PAPER_SECONDS = {"fmanetpp": 0.074, "fmanet": 0.318}


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _build(model_name: str, threads: int) -> tuple[Any, Any]:
    import torch

    from fmanetpp_cli.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return torch, create_model(model_name).eval()


def _input(torch: Any, model: Any, size: str, frames: int) -> Any:
    h, w = (int(v) for v in size.split("x"))
    T = frames if model.temporal_mode == "sequence" else model.num_seq
    return torch.rand(1, 3, T, h, w)


def run_one(model_name: str, size: str, frames: int, repeats: int, threads: int) -> dict[str, Any]:
    """Measure one (model, size) case in this process (called in the child)."""
    torch, model = _build(model_name, threads)
    x = _input(torch, model, size, frames)
    outputs_per_pass = x.shape[2] if model.temporal_mode == "sequence" else 1
    rss_before = _status_mib("VmRSS")
    walls, cpus = [], []
    with torch.no_grad():
        model(x)  # warm-up
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            out = model(x)["output"]
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
    peak = _status_mib("VmHWM")
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("ete."))
    return {
        "model": model_name,
        "size": size,
        "frames_per_pass": int(x.shape[2]),
        "outputs_per_pass": outputs_per_pass,
        "out_shape": list(out.shape),
        "wall_s_per_frame": min(walls) / outputs_per_pass,
        "cpu_s_per_frame": min(cpus) / outputs_per_pass,
        "peak_mib": peak,
        "activation_mib": peak - rss_before,
        "params_without_ete": params,
        "temporal_radius": model.temporal_radius,
        "threads": threads,
        "repeats": repeats,
    }


def profile(model_name: str, size: str, frames: int, threads: int) -> None:
    """Print where the time goes: self CPU time and self GFLOP per module, block indices merged.

    Modules down to six name levels are timed with forward hooks measuring the process CPU time (robust
    on a shared machine; with one thread it is the compute time); a module's *self* share is its time
    minus that of its timed children, so the rows add up to the whole pass. For an HRBP block the self
    share is the neighbour warping plus the concatenations and residual additions around its convs.
    """
    from torch.utils.flop_counter import FlopCounterMode

    torch, model = _build(model_name, threads)
    x = _input(torch, model, size, frames)
    timed = {name for name, _ in model.named_modules() if name and name.count(".") <= 5}
    inclusive: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}

    def hooks(name: str) -> tuple[Any, Any]:
        def pre(_mod: Any, _args: Any) -> None:
            starts[name] = time.process_time()

        def post(_mod: Any, _args: Any, _out: Any) -> None:
            inclusive[name] += time.process_time() - starts.pop(name)

        return pre, post

    for name, mod in model.named_modules():
        if name in timed:
            pre, post = hooks(name)
            mod.register_forward_pre_hook(pre)
            mod.register_forward_hook(post)
    with torch.no_grad():
        model(x)  # warm-up
        inclusive.clear()
        w0, c0 = time.perf_counter(), time.process_time()
        model(x)
        wall, total = time.perf_counter() - w0, time.process_time() - c0
        measured = dict(inclusive)  # a copy: the counted pass below runs the hooks again
        counter = FlopCounterMode(display=False, depth=None)
        with counter:
            model(x)
    flops_incl: dict[str, float] = defaultdict(float)
    for path, per_op in counter.get_flop_counts().items():
        parts = path.split(".")
        if parts[0] != "Global" and len(parts) > 1 and ".".join(parts[1:]) in timed:
            flops_incl[".".join(parts[1:])] = sum(per_op.values())
    total_flops = counter.get_total_flops()

    called = set(measured)  # containers (ModuleList) are never called and get no time

    def parent(name: str) -> str:
        while "." in name:
            name = name.rsplit(".", 1)[0]
            if name in called:
                return name
        return ""

    self_time, self_flops = dict(measured), {n: flops_incl.get(n, 0.0) for n in called}
    for name in called:
        up = parent(name)
        if up:
            self_time[up] -= measured[name]
            self_flops[up] -= flops_incl.get(name, 0.0)
    top = sum(measured[n] for n in called if not parent(n))
    self_time["(top level: bilinear x4, rearranges)"] = total - top
    merged_t: dict[str, float] = defaultdict(float)
    merged_f: dict[str, float] = defaultdict(float)
    for name, sec in self_time.items():
        merged_t[re.sub(r"\.\d+(?=\.|$)", ".*", name)] += sec
    for name, f in self_flops.items():
        merged_f[re.sub(r"\.\d+(?=\.|$)", ".*", name)] += f
    print(
        f"# profile of {model_name} on {tuple(x.shape)}, {threads} threads: {wall:.2f} s wall, "
        f"{total:.2f} s CPU, {total_flops / 1e9:.1f} GFLOP (one multiply-add = 2)"
    )
    print("| module (self share, block indices merged) | CPU s | % time | GFLOP | % FLOP |")
    print("|---|---|---|---|---|")
    for name, sec in sorted(merged_t.items(), key=lambda kv: -kv[1]):
        f = merged_f.get(name, 0.0)
        if sec / total < 0.005 and f / total_flops < 0.005:
            continue
        share_t, share_f = 100 * sec / total, 100 * f / total_flops
        print(f"| {name} | {sec:.3f} | {share_t:.1f} | {f / 1e9:.2f} | {share_f:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["64x64", "128x128"], help="LR input sizes HxW")
    parser.add_argument("--models", nargs="+", default=["fmanetpp-paper", "fmanet"], help="model presets")
    parser.add_argument("--frames", type=int, default=10, help="frames per FMA-Net++ pass (paper: 10)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per case (minimum kept)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results here")
    parser.add_argument("--profile", metavar="HxW", help="profile one size instead of benchmarking")
    parser.add_argument("--model", default="fmanetpp-paper", help="model to profile")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run the first model from this folder's fmanetpp_cli (e.g. a `git worktree` of an older "
        "commit), after the others at each size; reported as MODEL@baseline",
    )
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "HxW"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_one(args.child[0], args.child[1], args.frames, args.repeats, args.threads)))
        return
    if args.profile:
        profile(args.model, args.profile, args.frames, args.threads)
        return

    load = os.getloadavg()
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.threads} threads, load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"# command: python benchmarks/bench_fmanetpp.py {' '.join(sys.argv[1:])}".rstrip())
    print("| model | LR input | frames/pass | wall s/frame | CPU s/frame | peak MiB | activation MiB |")
    print("|---|---|---|---|---|---|---|")
    results: list[dict[str, Any]] = []
    runs = [(name, None) for name in args.models]
    if args.baseline:
        runs.append((args.models[0], os.path.abspath(args.baseline)))
    for size in args.sizes:
        for name, where in runs:
            cmd = [sys.executable, __file__, "--child", name, size, "--frames", str(args.frames)]
            cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
            env = None if where is None else {**os.environ, "PYTHONPATH": where}
            done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
            if done.returncode != 0:
                print(f"| {name} | {size} | failed: {done.stderr.strip().splitlines()[-1:]} | | | | |")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            if where is not None:
                r["model"] = name = f"{name}@baseline"
            results.append(r)
            print(
                f"| {name} | {size} | {r['frames_per_pass']} | {r['wall_s_per_frame']:.3f} | "
                f"{r['cpu_s_per_frame']:.3f} | {r['peak_mib']:,.0f} | {r['activation_mib']:,.0f} |",
                flush=True,
            )
    by_key = {(r["model"], r["size"]): r for r in results}
    pp, v1 = args.models[0], args.models[-1]
    for size in args.sizes:
        a, b = by_key.get((pp, size)), by_key.get((v1, size))
        if a and b and a is not b:
            wall = b["wall_s_per_frame"] / a["wall_s_per_frame"]
            cpu = b["cpu_s_per_frame"] / a["cpu_s_per_frame"]
            paper = PAPER_SECONDS["fmanet"] / PAPER_SECONDS["fmanetpp"]
            print(
                f"# {size}: {v1} / {pp} per output frame = {wall:.2f}x (wall), {cpu:.2f}x (CPU time); "
                f"paper (GPU, 180x320): {paper:.1f}x"
            )
    for size in args.sizes if args.baseline else []:
        a, old = by_key.get((pp, size)), by_key.get((f"{pp}@baseline", size))
        if a and old:
            wall = old["wall_s_per_frame"] / a["wall_s_per_frame"]
            cpu = old["cpu_s_per_frame"] / a["cpu_s_per_frame"]
            print(f"# {size}: {pp} baseline / now = {wall:.2f}x (wall), {cpu:.2f}x (CPU time)")
    for r in results:
        rad = r["temporal_radius"]
        if r["outputs_per_pass"] > 1 and r["size"] == args.sizes[0]:
            overhead = ", ".join(f"L={L}: {L / (L - 2 * rad):.2f}x" for L in (24, 32, 64) if 2 * rad < L)
            print(
                f"# {r['model']}: streaming overhead of chunks with {rad} context frames a side: {overhead}"
            )
    load = os.getloadavg()
    print(f"# load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
