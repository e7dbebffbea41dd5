"""Interpretability and speed of every direction finder on a model (default shapes32), in one run.

    python -m benchmarks.evaluate [--model shapes32] [--output-dir results] [any `eigenedit evaluate` option]

Without seed options it selects on seeds 0-7 and reports on test seeds 1000-1031 (``SEEDS``). Writes
results/evaluation.{json,md,png}.
``--report-only`` re-renders the tables from results/evaluation.json without re-running anything.
"""

import json
import sys
from pathlib import Path

from eigenedit.apps.cli import main
from eigenedit.evaluation.evaluate import resummarize
from eigenedit.evaluation.report import write_report

SEEDS = ["--selection-seeds", "0-7", "--test-seeds", "1000-1031"]

if __name__ == "__main__":
    args = sys.argv[1:]
    if not {"--seeds", "--selection-seeds", "--test-seeds"} & set(args):
        args = [*SEEDS, *args]
    out = Path(args[args.index("--output-dir") + 1]) if "--output-dir" in args else Path("results")
    if "--report-only" in args:  # re-render the tables from evaluation.json (e.g. after a metric change)
        runs = resummarize(json.loads((out / "evaluation.json").read_text()))
        write_report(runs, out)
        code = 0
    else:
        code = main(["evaluate", *args])
    sys.exit(code)
