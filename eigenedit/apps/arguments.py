"""Argument types and the options every command shares (used by the CLI and ``python -m eigenedit.apps.batch``)."""

from __future__ import annotations

import argparse
import math
import sys

from eigenedit.models import DEFAULT_MODEL


def parse_alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"alpha must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"alpha must be finite, got {text!r}")
    return value


def parse_alphas(text: str) -> list[float]:
    values = [parse_alpha(t) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one alpha, e.g. -1,0,1")
    return values


def parse_guidance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"guidance must be a finite number >= 0, got {text!r}")
    return value


def parse_term(text: str) -> tuple[int, float]:
    """``INDEX:ALPHA`` -> (index, alpha)."""
    index, sep, alpha = text.partition(":")
    if not sep or not index.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected INDEX:ALPHA such as 0:1.5, got {text!r}")
    return int(index), parse_alpha(alpha)


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def common_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"shipped name, local folder or hub id ({DEFAULT_MODEL})")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="let a guided-diffusion folder load .pt (pickle) weights: trusted files only",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Run a parsed command: a ValueError becomes one error line and exit code 2."""
    try:
        args.func(args)
    except ValueError as err:
        print(f"eigenedit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eigenedit: interrupted", file=sys.stderr)
        return 130
    return 0
