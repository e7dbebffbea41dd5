"""Throughput of ``eigenedit batch`` with 1 vs 2 processes on the shipped model (CPU, gloo).

    python -m benchmarks.batch_throughput [--seeds 32] [--steps 20] [--repeats 3] [--json results/batch.json]

Each run edits ``seeds`` seeds x 2 edits into a fresh folder. Configurations (threads per process set through
OMP_NUM_THREADS / MKL_NUM_THREADS, so each uses the same number of cores in all): 1 process x 2 threads, 2
processes x 1 thread (``accelerate launch --multi_gpu``: gloo on a machine without GPU), and 1 process x 1 thread
as the per-core reference. Runs are interleaved (one of each configuration per round) so that load from other
jobs spreads over all of them. Prints the median images/s of the work phase (what ``eigenedit batch`` reports:
from the sharded work to the merged manifest) and end to end (including interpreter start, model loading and
the launcher), and the 2-process / 1-process ratios.
"""

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eigenedit.apps.cli import main as eigenedit

CONFIGS = [("1 process x 2 threads", 1, 2), ("2 processes x 1 thread", 2, 1), ("1 process x 1 thread", 1, 1)]
RATE = re.compile(r"wrote (\d+) images in ([0-9.]+) s")


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def run_once(processes: int, threads: int, batch_args: list[str], out: Path) -> tuple[float, float, int]:
    """(work-phase images/s, end-to-end images/s, images) of one run."""
    if processes == 1:
        command = [sys.executable, "-m", "eigenedit.apps.batch"]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
        command += ["--num_machines", "1", "--main_process_port", free_port(), "--mixed_precision", "no"]
        command += [
            "--dynamo_backend",
            "no",
            "--num_cpu_threads_per_process",
            str(threads),
            "-m",
            "eigenedit.apps.batch",
        ]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="")
    start = time.perf_counter()
    proc = subprocess.run([*command, *batch_args, "-o", str(out)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    match = RATE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        sys.exit(f"run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    images, seconds = int(match[1]), float(match[2])
    return images / seconds, images / wall, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes32")
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rates = {name: {"work": [], "end_to_end": []} for name, _, _ in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        dfile = Path(tmp) / "dirs.safetensors"
        assert eigenedit(["directions", "--model", args.model, "-k", "4", "-o", str(dfile)]) == 0
        batch_args = ["--model", args.model, "--directions", str(dfile), "--seeds", f"0-{args.seeds - 1}"]
        batch_args += ["--direction", "0", "--alphas=-2,2", "--steps", str(args.steps)]
        batch_args += ["--batch-size", str(args.batch_size), "--cpu"]
        for repeat in range(args.repeats):
            for name, processes, threads in CONFIGS:
                work, end_to_end, images = run_once(processes, threads, batch_args, Path(tmp) / f"{repeat}-{name}")
                rates[name]["work"].append(work)
                rates[name]["end_to_end"].append(end_to_end)
                print(f"round {repeat + 1}: {name:24s} {work:6.2f} images/s work, {end_to_end:6.2f} end to end")
    medians = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in rates.items()}
    one_by_two, two_by_one, one_by_one = (medians[name] for name, _, _ in CONFIGS)
    print(f"\n{images} images per run ({args.seeds} seeds x 2 edits), {args.steps} DDIM steps, model {args.model}")
    print(f"load average before: {load_before[0]:.2f}, after: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'configuration':24s} {'work img/s':>10s} {'end-to-end':>10s}   (median of {args.repeats})")
    for name, m in medians.items():
        print(f"{name:24s} {m['work']:10.2f} {m['end_to_end']:10.2f}")
    ratios = {
        "2x1 / 1x2 (same cores)": {k: two_by_one[k] / one_by_two[k] for k in two_by_one},
        "2x1 / 1x1 (two processes vs one)": {k: two_by_one[k] / one_by_one[k] for k in two_by_one},
    }
    for label, r in ratios.items():
        print(f"{label:32s} work {r['work']:.2f}x, end to end {r['end_to_end']:.2f}x")
    if args.json is not None:
        report = {"images": images, "steps": args.steps, "load_before": load_before[0], "rates": rates}
        args.json.write_text(json.dumps({**report, "medians": medians, "ratios": ratios}, indent=1) + "\n")


if __name__ == "__main__":
    main()
