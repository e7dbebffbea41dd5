"""The protocol's reading of a few directions, for labels: what each one moves, and whether the strict protocol
found it precise.

A reading runs the protocol's own calibration (matched pixel change) and selection rule (the attribute with the
best precision score, ``protocol.best_attribute``) on a few seeds, so it takes seconds, not the protocol's hour.
It never says "precise" by itself: that word comes only from a fully treated protocol row stored in the model's
eigenedit.json (``protocol_rows``, written by ``protocol_run --write-defaults``).
"""

from __future__ import annotations

from collections.abc import Sequence

from eigenedit.core.directions import Directions
from eigenedit.evaluation import protocol
from eigenedit.evaluation.probes import Probe, probe_for_model
from eigenedit.evaluation.protocol_run import Lab, Plan
from eigenedit.models import DiffusionModel

READ_SEEDS = (0, 1, 2, 3)
CALIBRATION_SEEDS = (4, 5)


def has_reader(model: DiffusionModel) -> bool:
    """Whether the model has a probe the reading can use."""
    return probe_for_model(model.model_id) is not None


def read_directions(
    model: DiffusionModel,
    directions: Directions,
    operator: str,
    location: str,
    t_edit: int,
    steps: int,
    probe: Probe | None = None,
    seeds: Sequence[int] = READ_SEEDS,
) -> list[dict]:
    """Per direction: ``protocol.best_attribute`` over every continuous read, nuisance (brightness, colour)
    included, at the protocol's matched change, plus ``alpha`` (the calibrated strength)."""
    probe = probe or probe_for_model(model.model_id)
    if probe is None:
        raise ValueError(f"model {model.model_id!r} has no attribute probe to read its directions with")
    plan = Plan(model.model_id, steps=steps, t_edit=t_edit, calibration_seeds=list(CALIBRATION_SEEDS),
                selection_seeds=list(seeds), batch=32)  # fmt: skip
    lab = Lab(model, probe, plan, progress=False)
    alphas = lab.calibrate(operator, location, directions)
    series = lab.series(operator, location, directions, alphas, list(seeds))
    return [protocol.best_attribute(s["changes"], lab.continuous) | {"alpha": a}
            for a, s in zip(alphas, series, strict=True)]  # fmt: skip


def protocol_verdicts(model: DiffusionModel, directions: Directions, operator: str, location: str) -> list[dict]:
    """Per direction, the stored protocol row that measured it (same layer, decomposition, index, operator and
    location), or an empty dict where none did."""
    meta = directions.metadata
    rows = model.edit_defaults.get("protocol_rows", [])
    indices = meta.get("indices") or list(range(len(directions)))
    fields = ("layer", "source", "index", "operator", "location")
    stored = {tuple(r.get(f) for f in fields): r for r in rows}
    return [stored.get((meta.get("layer"), meta.get("decomposition"), i, operator, location), {}) for i in indices]


def label_text(reading: dict, verdict: dict) -> str:
    """ "-hair_color (protocol: not precise)", "+face_width (protocol: precise)" or "+yaw (not tested)"."""
    name = f"{'+' if reading['sign'] > 0 else '-'}{reading['attribute']}"
    if not verdict:
        return f"{name} (not tested by the protocol)"
    tested = f"{'+' if verdict['sign'] > 0 else '-'}{verdict['attribute']}"
    status = "precise" if verdict.get("precise") else "not precise"
    return f"{name} (protocol: {tested}, {status})" if tested != name else f"{name} (protocol: {status})"


def label_directions(
    model: DiffusionModel, directions: Directions, operator: str, location: str, t_edit: int, steps: int
) -> Directions:
    """``directions`` with ``labels`` from the reading and the stored protocol verdicts."""
    readings = read_directions(model, directions, operator, location, t_edit, steps)
    verdicts = protocol_verdicts(model, directions, operator, location)
    labels = [label_text(r, v) for r, v in zip(readings, verdicts, strict=True)]
    return Directions(directions.vectors, directions.values, dict(directions.metadata, labels=labels),
                      partners=directions.partners)  # fmt: skip
