"""The strict evaluation protocol's statistics: how one edit row is scored, and when it counts as precise.

A **row** is one direction under one operator, edited at strengths (-1, -1/2, 0, +1/2, +1) x its calibrated
alpha on a block of seeds. Every attribute the probe reads (plus the nuisance reads ``brightness``, ``red``,
``green``, ``blue``) becomes a change series ``d[attribute]`` of shape (5, seeds), in the attribute's scale
units, 0 at strength 0. From it:

- ``rho``: mean over seeds of Spearman's rho between strength and the target attribute's change (signed by the
  row's chosen sign), with a bootstrap 95% interval over seeds (``rho_ci``);
- ``agree``: share of seeds whose target moves the chosen way from -1 to +1;
- ``off_target_ratio``: mean |target change| / RMS over every other continuous attribute (nuisance included) of
  its mean |change|, at strength +-1;
- ``brightness_share``: R^2 of the target change regressed on the brightness change (over seeds x strengths):
  how much of the edit brightness alone explains;
- ``flips``: categorical attributes as flip rates, never ranked against continuous ones;
- ``score``: the precision score |rho| x r / (r + 2) with r the off-target ratio. rho alone cannot separate
  weight from random directions (a random direction on its own best attribute often reaches rho 1.0), so
  selection and the random comparison use this score.

A **precise edit** (``is_precise``): in every test block, rho >= 0.8, the lower end of its interval above the
95th percentile of random directions' |rho| on the same attribute (same operator, location, calibration and
scoring), off-target ratio >= 2, and, where the row was chosen as the best of m weight candidates, a best-of-m
permutation p-value below 0.05.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

STRENGTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)  # multiples of a row's calibrated alpha
MIN_RHO = 0.8
MIN_OFF_TARGET = 2.0
MAX_P = 0.05
CHANGE_TOLERANCE = 0.15  # a row whose reached pixel change misses its target by more than this is flagged
NUISANCE = ("brightness", "red", "green", "blue")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (average ranks for ties); 0 where either side is constant."""

    def ranks(v: np.ndarray) -> np.ndarray:
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):
            r[v == value] = r[v == value].mean()
        return r

    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks along axis 0 (ties share their mean rank), vectorised over the other axes."""
    less = (v[None, :] < v[:, None]).sum(1)
    equal = (v[None, :] == v[:, None]).sum(1)
    return less + (equal - 1) / 2


def seed_rhos(series: np.ndarray, strengths: Sequence[float] = STRENGTHS) -> np.ndarray:
    """Per-seed Spearman rho (seeds,) of a (strengths, seeds) change series; NaN where fewer than 4 are finite."""
    s = np.asarray(strengths, float)
    series = np.asarray(series, float)
    out = np.full(series.shape[1], np.nan)
    complete = np.isfinite(series).all(0)
    if complete.any():
        ry = _ranks(series[:, complete])
        rx = _ranks(s)[:, None]
        ry_c, rx_c = ry - ry.mean(0), rx - rx.mean(0)
        norm = np.sqrt((ry_c**2).sum(0) * (rx_c**2).sum(0))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[complete] = np.where(norm > 0, (ry_c * rx_c).sum(0) / norm, 0.0)
    for j in np.flatnonzero(~complete):
        ok = np.isfinite(series[:, j])
        if ok.sum() >= 4:
            out[j] = spearman(s[ok], series[ok, j])
    return out


def bootstrap_ci(values: np.ndarray, repeats: int = 2000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped), deterministic from ``seed``."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (repeats, len(v)))].mean(1)
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def percentile_of(value: float, distribution: Sequence[float]) -> float:
    """Share (0..100) of the distribution strictly below ``value``, ties counting half."""
    d = np.asarray(distribution, float)
    d = d[np.isfinite(d)]
    if len(d) == 0:
        return float("nan")
    return float(((d < value).sum() + 0.5 * (d == value).sum()) / len(d) * 100)


def precision_score(rho: float, off_target_ratio: float) -> float:
    """|rho| x r / (r + 2): 0 for an edit that moves everything, |rho| for one that moves only its target."""
    r = max(off_target_ratio, 0.0) if np.isfinite(off_target_ratio) else 0.0
    return abs(rho) * r / (r + 2)


def _abs_effect(series: np.ndarray) -> float:
    """Mean over seeds of |change| at +-1 (half the difference of the two ends)."""
    d = np.abs(series[-1] - series[0]) / 2
    return float(np.nanmean(d)) if np.isfinite(d).any() else 0.0


def attribute_row(
    changes: Mapping[str, np.ndarray],
    target: str,
    sign: float,
    flips: Mapping[str, np.ndarray] | None = None,
    ci_seed: int | None = 0,
) -> dict:
    """Every number of one row on one seed block: ``changes`` maps each continuous attribute (nuisance included)
    to its (5, seeds) change in scale units; ``flips`` each categorical one to a (seeds,) 0/1 flip at +-1.
    ``ci_seed`` None skips the bootstrap interval (rows that only rank)."""
    rhos = seed_rhos(changes[target]) * sign
    rho = float(np.nanmean(rhos)) if np.isfinite(rhos).any() else 0.0
    rhos = np.nan_to_num(rhos, nan=0.0)
    moved = (changes[target][-1] - changes[target][0]) * sign
    ok = np.isfinite(moved)
    effects = {name: _abs_effect(series) for name, series in changes.items()}
    others = [v for name, v in effects.items() if name != target]
    rms = float(np.sqrt(np.mean(np.square(others)))) if others else 0.0
    ratio = effects[target] / rms if rms > 0 else (float("inf") if effects[target] > 0 else 0.0)
    row = {
        "attribute": target,
        "sign": sign,
        "rho": rho,
        "rho_ci": None if ci_seed is None else bootstrap_ci(rhos, seed=ci_seed),
        "agree": float((moved[ok] > 0).mean()) if ok.any() else 0.0,
        "effect": float(np.nanmean(moved) / 2) if ok.any() else 0.0,
        "off_target_ratio": ratio,
        "brightness_share": brightness_share(changes, target),
        "score": precision_score(rho, ratio),
        "moved_most": sorted(effects, key=effects.get, reverse=True)[:3],
        "seeds": int(ok.sum()),
    }
    if flips:
        row["flips"] = {name: float(np.nanmean(f)) for name, f in flips.items()}
    return row


def brightness_share(changes: Mapping[str, np.ndarray], target: str) -> float | None:
    """R^2 of the target's change on the brightness change over all seeds and strengths (None: no brightness)."""
    if "brightness" not in changes:
        return None
    if target == "brightness":
        return 1.0
    y, x = changes[target].ravel(), changes["brightness"].ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or x[ok].std() == 0 or y[ok].std() == 0:
        return 0.0
    return float(np.corrcoef(x[ok], y[ok])[0, 1] ** 2)


def best_attribute(changes: Mapping[str, np.ndarray], targets: Sequence[str]) -> dict:
    """The selection rule, the same for weight, random and supervised rows: over ``targets`` (never a nuisance
    read) and both signs, the row with the highest precision score."""
    best = None
    for name in targets:
        row = attribute_row(changes, name, 1.0 if mean_rho(changes[name]) >= 0 else -1.0, ci_seed=None)
        if best is None or row["score"] > best["score"]:
            best = row
    return best


def best_of_m_p_value(
    observed: float,
    random_selection: Sequence[float],
    random_test: Sequence[float],
    m: int,
    repeats: int = 4000,
    seed: int = 0,
) -> float:
    """P(best of m random directions, chosen by their selection score, scores >= ``observed`` on test seeds).

    ``random_selection[i]``/``random_test[i]``: random direction i's selection score and its test score on the
    attribute and sign it selected. m subsets are drawn without replacement where m <= the number of random
    directions, else with replacement. (1 + hits) / (1 + repeats)."""
    sel, test = np.asarray(random_selection, float), np.asarray(random_test, float)
    n = len(sel)
    rng = np.random.default_rng(seed)
    if m > n:
        picks = rng.integers(0, n, (repeats, m))
    else:
        picks = np.argsort(rng.random((repeats, n)), axis=1)[:, :m]
    chosen = picks[np.arange(repeats), np.argmax(sel[picks], axis=1)]
    hits = int((test[chosen] >= observed).sum())
    return float((1 + hits) / (1 + repeats))


def mean_rho(series: np.ndarray) -> float:
    """Mean over seeds of the per-seed rho of a (strengths, seeds) series; 0 where no seed is readable."""
    rhos = seed_rhos(series)
    return float(np.nanmean(rhos)) if np.isfinite(rhos).any() else 0.0


def judge_block(
    changes: Mapping[str, np.ndarray],
    target: str,
    sign: float,
    random_changes: Sequence[Mapping[str, np.ndarray]],
    random_selections: Sequence[dict],
    m: int | None,
    flips: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
) -> dict:
    """One row on one test block beside its random distribution: the row's numbers (``attribute_row``), the
    random directions' |rho| and scores on the same target (each with its own better sign), the row's percentile,
    and, where the row is the best of ``m`` screened candidates, the best-of-m p-value against random directions
    selected by the same rule (``random_selections``: each one's ``best_attribute`` on the selection seeds)."""
    row = attribute_row(changes, target, sign, flips, ci_seed=seed)
    on_target = [
        attribute_row(r, target, 1.0 if mean_rho(r[target]) >= 0 else -1.0, ci_seed=None) for r in random_changes
    ]
    abs_rho = [abs(r["rho"]) for r in on_target]
    scores = [r["score"] for r in on_target]
    row |= {
        "random_abs_rho_p50": float(np.median(abs_rho)),
        "random_abs_rho_p95": float(np.percentile(abs_rho, 95)),
        "random_score_p50": float(np.median(scores)),
        "random_score_p95": float(np.percentile(scores, 95)),
        "percentile_vs_random": percentile_of(row["score"], scores),
        "rho_percentile_vs_random": percentile_of(row["rho"], abs_rho),
        "p_value": None,
    }
    if m is not None:
        own = [attribute_row(r, sel["attribute"], sel["sign"], ci_seed=None)["score"]
               for r, sel in zip(random_changes, random_selections, strict=True)]  # fmt: skip
        row["p_value"] = best_of_m_p_value(row["score"], [sel["score"] for sel in random_selections], own, m, seed=seed)
    return row


def is_precise(blocks: Sequence[dict]) -> bool:
    """The definition in the module docstring, over every test block of a row."""
    if not blocks:
        return False
    for b in blocks:
        p = b.get("p_value")
        if not (
            b["rho"] >= MIN_RHO
            and b["rho_ci"][0] > b["random_abs_rho_p95"]
            and b["off_target_ratio"] >= MIN_OFF_TARGET
            and (p is None or p < MAX_P)
        ):
            return False
    return True
