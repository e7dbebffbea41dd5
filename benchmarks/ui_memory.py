"""Memory of the web UI's server state under varied use: peak RSS after 50 renders with different seeds, layers and
models (shapes32, fashion32, terrain128 where installed), through the same calls a slider move makes.

    python -m benchmarks.ui_memory [--renders 50] [--output results/ui_memory.json]

Writes the RSS after each tenth render, the peak, and the size of every cache against its bound.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import psutil
import torch

from eigenedit.apps.ui import EditorState, View
from eigenedit.core.io import atomic_write
from eigenedit.models import SHIPPED_MODELS, TERRAIN_MODEL


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def available_models() -> list[str]:
    """The shipped models, and the terrain model where its extra is installed."""
    import importlib.util

    from eigenedit.models.terrain import PACKAGE

    return [*SHIPPED_MODELS, *([TERRAIN_MODEL] if importlib.util.find_spec(PACKAGE) else [])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=50)
    parser.add_argument("--output", type=Path, default=Path("results/ui_memory.json"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    names = available_models()
    start_rss, start = rss_mib(), time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        state = EditorState(workdir=workdir)
        layers = {name: state.defaults(name)["layers"] for name in names}
        trace, used = [], set()
        for i in range(args.renders):
            name = names[i % len(names)]
            layer = layers[name][(i // len(names)) % len(layers[name])]
            steps = state.defaults(name)["preview_steps"]
            view = View(model=name, layer=layer, location=layer, seed=1000 + i, steps=steps)  # edit where it reads
            used.add((name, view.layer))
            alpha = state.defaults(name)["alpha_max"] / 2
            preview = state.render(view, [alpha, -alpha / 2])  # what a slider move renders
            state.image_file(preview.edited)  # and writes for download
            state.directions_file(view)
            if (i + 1) % 10 == 0 or i == 0:
                trace.append({"renders": i + 1, "rss_mib": round(rss_mib(), 1), "peak_rss_mib": round(peak_rss_mib())})
                print(f"{i + 1:3d} renders: RSS {trace[-1]['rss_mib']} MiB, peak {trace[-1]['peak_rss_mib']} MiB")
        caches = {
            name.lstrip("_"): {"entries": len(cache), "bound": cache.size}
            for name, cache in vars(state).items()
            if hasattr(cache, "get_or_make")
        }
        files = len(list(Path(workdir).iterdir()))
    result = {
        "renders": args.renders,
        "models": names,
        "distinct_seeds": args.renders,
        "distinct_model_layers": len(used),
        "rss_before_mib": round(start_rss, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "rss_after_mib": round(rss_mib(), 1),
        "trace": trace,
        "caches": caches,
        "files_on_disk": files,
        "seconds": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    text = json.dumps(result, indent=1) + "\n"
    atomic_write(args.output, lambda tmp: Path(tmp).write_text(text))
    print(f"peak RSS {result['peak_rss_mib']} MiB after {args.renders} renders; wrote {args.output}")


if __name__ == "__main__":
    main()
