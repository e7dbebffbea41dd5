"""Interpretability and speed of every direction finder on a shapes model, in one run.

    python benchmarks/evaluate.py [--model shapes32] [--output-dir results] [any `eigenedit evaluate` option]

Writes results/evaluation.{json,md,png}; the README's results table is results/evaluation.md.
"""

import sys

from eigenedit.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
