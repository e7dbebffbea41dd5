"""Guard rails every app shares: one-line notes and warnings, one-line argument errors, edit-strength warnings and
the provenance check of a directions file (was it made for the model, layer and decomposition in use?)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NoReturn

from eigenedit.core.directions import Directions
from eigenedit.models import SHIPPED_MODELS, TERRAIN_MODEL

STRENGTH_WARN_FACTOR = 5  # |alpha| beyond this many times the model's documented range warns
PROVENANCE_FIELDS = ("model", "layer", "decomposition")  # what every directions file must name


def note(message: str) -> None:
    """One informational line on stderr."""
    print(f"eigenedit: note: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"eigenedit: warning: {message}", file=sys.stderr, flush=True)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block): ``PROG: error: MESSAGE``, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def documented_range(alphas: Iterable[float]) -> float:
    """The largest |alpha| of a model's documented alphas (its eigenedit.json, else the generic -1..1)."""
    return max((abs(float(a)) for a in alphas), default=1.0) or 1.0


def warn_strengths(alphas: Iterable[float], documented: Iterable[float]) -> bool:
    """Warn (one line) when an alpha is far outside the documented range; True if it warned."""
    limit = documented_range(documented)
    worst = max((abs(float(a)) for a in alphas if math.isfinite(a)), default=0.0)
    if worst <= STRENGTH_WARN_FACTOR * limit:
        return False
    warn(
        f"alpha {worst:g} is far outside this model's documented range (|alpha| <= {limit:g}); expect a broken "
        "or saturated image"
    )
    return True


def model_identity(id_or_path: str) -> str:
    """One name per model: a shipped name for a shipped model (also given as its folder), an absolute path for
    any other local file or folder, and a hub id (``owner/name``) as given."""
    text = str(id_or_path or "").strip()
    if text in SHIPPED_MODELS or text == TERRAIN_MODEL:
        return text
    local = Path(text)
    if text and local.exists():
        resolved = local.resolve()
        for name, folder in SHIPPED_MODELS.items():
            if resolved == Path(folder).resolve():
                return name
        return str(resolved)
    return text.rstrip("/")


def check_provenance(
    dirs: Directions,
    source: str | Path,
    model: str,
    requested: Mapping[str, object] | None = None,
    force: bool = False,
) -> None:
    """Refuse (ValueError naming both sides) a directions file made for another model, or for another layer,
    decomposition, head or fold-norm than ``requested`` (only what the user chose); a file without that
    metadata (older versions) is refused too. ``force`` turns the refusal into a one-line warning (dimensions are
    checked separately and always)."""
    meta = dirs.metadata if isinstance(dirs.metadata, dict) else {}
    missing = [name for name in PROVENANCE_FIELDS if not isinstance(meta.get(name), str) or not meta.get(name)]
    problems = []
    if missing:
        problems.append(
            f"{source} has no {'/'.join(missing)} in its metadata (made by an older eigenedit, or without a model "
            f"id), so it cannot be checked against model {model_identity(model)!r}"
        )
    made_for = model_identity(meta.get("model", "")) if "model" not in missing else ""
    if made_for and made_for != model_identity(model):
        problems.append(
            f"{source} was made for model {made_for!r} ({meta.get('layer')}, {meta.get('decomposition')}), but the "
            f"model in use is {model_identity(model)!r}"
        )
    for name, wanted in (requested or {}).items():
        have = meta.get(name)
        if wanted is None or name in missing or (name == "fold_norm" and not wanted):
            continue
        if have != wanted:
            problems.append(f"{source} holds {name} {have!r}, but {name} {wanted!r} was asked for")
    if not problems:
        return
    if not force:
        raise ValueError("; ".join(problems) + "; --force applies it anyway where the dimensions fit")
    warn(f"--force: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
