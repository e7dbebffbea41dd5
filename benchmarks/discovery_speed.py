"""Time to compute a whole direction set, per decomposition, on the 512-channel mid-block attention of the
google/ddpm-ema-celebahq-256 architecture (random weights built from its config: no download needed).

    python benchmarks/discovery_speed.py [--repeats 20]

Prints the median seconds and the ratio to the 0.1 s target; the timing includes reading the weights.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from diffusers import UNet2DModel

from eigenedit.core.directions import compute_directions
from eigenedit.core.factorize import DECOMPOSITIONS

CONFIG = Path(__file__).resolve().parent.parent / "tests" / "configs" / "ddpm-ema-celebahq-256.json"
TARGET_S = 0.1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    unet = UNet2DModel.from_config(json.loads(CONFIG.read_text())).eval()
    layer = "mid_block.attentions.0"
    print(f"{'decomposition':14s} {'directions':>10s} {'median s':>10s} {'/ target':>9s}")
    for decomposition in DECOMPOSITIONS:
        dirs = compute_directions(unet, layer, decomposition)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            compute_directions(unet, layer, decomposition)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"{decomposition:14s} {len(dirs):10d} {median:10.4f} {median / TARGET_S:9.2f}")


if __name__ == "__main__":
    main()
