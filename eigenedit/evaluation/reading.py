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
from eigenedit.evaluation.probes import Probe, load_probe, probe_for_model
from eigenedit.evaluation.protocol_run import Lab, Plan
from eigenedit.models import DiffusionModel

READ_SEEDS = (0, 1, 2, 3)
CALIBRATION_SEEDS = (4, 5)


_PROBES: dict[str, Probe | None] = {}


def probe_of(model: DiffusionModel) -> Probe | None:
    """The probe that reads this model's images: its shipped probe, else the one its eigenedit.json names
    (``"labeller"``: a shipped probe name or module:function), else None. Loaded once per model."""
    key = f"{model.model_id}|{model.edit_defaults.get('labeller')}"
    if key not in _PROBES:
        named = model.edit_defaults.get("labeller")
        _PROBES[key] = probe_for_model(model.model_id) or (load_probe(named) if named else None)
    return _PROBES[key]


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
    probe = probe or probe_of(model)
    if probe is None:
        raise ValueError(
            f"model {model.model_id!r} has no attribute probe to read its directions with (the shipped models have "
            'one; another model can name one in its eigenedit.json: "labeller": "shapes" or "module:function")'
        )
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


def verdict_text(verdict: dict) -> str:
    """A stored protocol row in a few words: "-hair_color: rho +0.99/+0.92 (random p95 0.99/0.95), not precise";
    "not measured by the protocol" where there is none."""
    if not verdict:
        return "not measured by the protocol"
    name = f"{'+' if verdict['sign'] > 0 else '-'}{verdict['attribute']}"
    numbers = ""
    if verdict.get("rho") and verdict.get("random_abs_rho_p95"):
        rho = "/".join(f"{r:+.2f}" for r in verdict["rho"])
        numbers = f": rho {rho} (random p95 {'/'.join(f'{r:.2f}' for r in verdict['random_abs_rho_p95'])})"
    return f"{name}{numbers}, {'precise' if verdict.get('precise') else 'not precise'}"


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
