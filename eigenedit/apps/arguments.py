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


def non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def add_cg_steps_option(p: argparse.ArgumentParser) -> None:
    """``--cg-steps`` (``Edit.cg_steps``), shared by edit, sweep (and invert) and batch."""
    p.add_argument(
        "--cg-steps", type=non_negative_int, default=0, help="xspace only: conjugate-gradient refinement steps"
    )


MAX_SEEDS = 10_000_000
SEED_LIMIT = 2**64  # seeds are whole numbers 0..2**64-1 (torch.Generator.manual_seed wraps others around)


def parse_seeds(text: str) -> list[int]:
    """``0-9,20,30-31`` -> seeds (ranges inclusive), duplicates dropped, order kept."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        if not low.strip().isdigit() or (sep and not high.strip().isdigit()):
            raise argparse.ArgumentTypeError(f"expected seeds such as 0-99 or 0,5,7, got {part!r}")
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise argparse.ArgumentTypeError(f"seed range {part!r} is empty")
        if last >= SEED_LIMIT:
            raise argparse.ArgumentTypeError(f"seed {last} is too large (seeds are 0..2**64-1)")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise argparse.ArgumentTypeError(f"more than {MAX_SEEDS} seeds; split the job")
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed, e.g. 0-99")
    return list(dict.fromkeys(seeds))


def parse_seed(text: str) -> int:
    """One seed: a whole number 0..2**64-1, checked as ``parse_seeds`` checks each seed."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a seed, a whole number 0..2**64-1, got {text!r}")
    return parse_seeds(text)[0]


def parse_seed_spec(text: str) -> list[int]:
    """A count (``16``: seeds 0..15), a range (``1000-1063``) or a list (``0,5,7-9``; one seed: ``7,``)."""
    if text.strip().isdigit():
        count = int(text)
        if not 1 <= count <= MAX_SEEDS:
            raise argparse.ArgumentTypeError(f"seed count must be 1..{MAX_SEEDS}, got {text!r}")
        return list(range(count))
    return parse_seeds(text)


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
    """Run a parsed command: a ValueError (or an OSError) becomes one error line and exit code 2."""
    try:
        args.func(args)
    except ValueError as err:
        print(f"eigenedit: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the last resort: the places that write turn their OS errors into ValueErrors
        where = f"{err.filename}: " if err.filename else ""
        print(f"eigenedit: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eigenedit: interrupted", file=sys.stderr)
        return 130
    return 0
