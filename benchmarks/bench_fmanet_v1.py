"""Benchmark FMA-Net (v1, full configuration) inference on the CPU: time per output frame and peak memory.

Every input size runs in a fresh Python subprocess, so each peak resident set size (``VmHWM`` from
``/proc/self/status``, which includes the interpreter, torch and the weights) belongs to that size alone.
The measured pass is the test path: ``model(x)`` with ``x`` of shape ``[1, 3, 3, H, W]``, float32,
``torch.no_grad()``, 2 threads. A warm-up pass precedes the timed passes; each pass yields one output
frame (the window's centre), so the time per pass is the time per output frame. Sizes up to 128x128 are
warmed up with one pass at their own size, larger ones with a 32x32 pass.

Usage::

    python benchmarks/bench_fmanet_v1.py                    # 64x64, 128x128 and 180x320
    python benchmarks/bench_fmanet_v1.py --sizes 64x64 --repeats 3
    python benchmarks/bench_fmanet_v1.py --profile 64x64    # torch.profiler table instead of the benchmark

Weights are randomly initialised: the cost of the network does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime

# The official implementation measured on this kind of machine (2 threads, float32, test path):
# seconds per output frame and peak memory in MiB.
OFFICIAL = {"64x64": (4.58, 565), "128x128": (16.0, 1298), "180x320": (78.4, 3152)}


# sizes up to this many LR pixels are warmed up at their own size
WARMUP_MAX_PIXELS = 128 * 128


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _build(threads: int):  # type: ignore[no-untyped-def]
    import torch

    from fmanetpp_cli.models.fmanet import PRESETS, FMANet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return torch, FMANet(PRESETS["fmanet"]).eval()


def run_one(size: str, repeats: int, threads: int) -> dict[str, float | str]:
    """Measure one size in this process (called in the child)."""
    torch, model = _build(threads)
    h, w = (int(v) for v in size.split("x"))
    x = torch.rand(1, 3, model.num_seq, h, w)
    with torch.no_grad():
        # warm-up (thread pool, allocator, oneDNN kernels); at the largest sizes a small input does it, so
        # that a benchmark run does not pay for a second full pass
        model(x if h * w <= WARMUP_MAX_PIXELS else torch.rand(1, 3, model.num_seq, 32, 32))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = model(x)["output"]
            times.append(time.perf_counter() - start)
    assert out.shape == (1, 3, 4 * h, 4 * w)
    return {"size": size, "seconds_per_frame": min(times), "peak_mib": _peak_rss_mib(), "repeats": repeats}


def profile(size: str, threads: int) -> None:
    """Print the torch.profiler table of one forward pass (after a warm-up)."""
    from torch.profiler import ProfilerActivity, record_function
    from torch.profiler import profile as torch_profile

    torch, model = _build(threads)
    h, w = (int(v) for v in size.split("x"))
    x = torch.rand(1, 3, model.num_seq, h, w)
    with torch.no_grad():
        model(x)
        with (
            torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof,
            record_function("fwd"),
        ):
            model(x)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(OFFICIAL), help="LR input sizes HxW")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes per size (the minimum is kept)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the comparison uses 2)")
    parser.add_argument("--profile", metavar="HxW", help="profile one size instead of benchmarking")
    parser.add_argument("--child", metavar="HxW", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_one(args.child, args.repeats, args.threads)))
        return
    if args.profile:
        profile(args.profile, args.threads)
        return

    load = os.getloadavg()
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    env = " ".join(
        f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith(("OMP_", "GOMP_", "KMP_"))
    )
    command = f"python benchmarks/bench_fmanet_v1.py {' '.join(sys.argv[1:])}".rstrip()
    print(f"# command: {env + ' ' if env else ''}{command}")
    print("| LR input | ours s/frame | ours peak MiB | official s/frame | official peak MiB | load (1 min) |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        load_before = os.getloadavg()[0]
        cmd = [
            sys.executable,
            __file__,
            "--child",
            size,
            "--repeats",
            str(args.repeats),
            "--threads",
            str(args.threads),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"| {size} | failed: {done.stderr.strip().splitlines()[-1:]} | | | | |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        ref_t, ref_m = OFFICIAL.get(size, (float("nan"), float("nan")))
        load = f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}"
        ours = f"{r['seconds_per_frame']:.2f} | {r['peak_mib']:,.0f}"
        print(f"| {size} | {ours} | {ref_t} | {ref_m:,} | {load} |", flush=True)
    load = os.getloadavg()
    print(f"# load average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
