"""Interpretability and speed of every direction finder on a shapes model, in one run.

    python benchmarks/evaluate.py [--model shapes32] [--output-dir results] [any `eigenedit evaluate` option]

Writes results/evaluation.{json,md,png} and copies the table into README.md (between the results markers).
"""

import sys
from pathlib import Path

from readme_section import replace_section

from eigenedit.cli import main

if __name__ == "__main__":
    code = main(["evaluate", *sys.argv[1:]])
    out = Path(sys.argv[sys.argv.index("--output-dir") + 1]) if "--output-dir" in sys.argv else Path("results")
    if code == 0:
        replace_section("results", (out / "evaluation.md").read_text())
    sys.exit(code)
