"""The evaluation protocol: how editing directions change images, for any model, on held-out seeds.

Every method (each weight decomposition, the random control, h-space PCA, Park et al.'s pullback) edits the same
seeds at strengths -alpha, -alpha/2, +alpha/2, +alpha. Two kinds of measurement:

- **probe-based** (where a ``Probe`` reads named attributes: the shapes factors, the fashion classifier's
  attributes and class, terrain statistics, or a user's own): for each direction and each sign of alpha, the
  signed mean change of every attribute in units of its reference spread (hues: circular differences; categorical
  attributes: rate of changes), counted only where both the plain and the edited image are valid. From these:
  ``concentration`` = largest attribute change / sum of changes (1 = moves one attribute only), ``dominant``
  attribute and its sign (the automatic label, e.g. "+size"), ``monotonic`` (the dominant attribute moves in
  opposite directions for +alpha and -alpha, each by at least ``MIN_EFFECT``), validity rate and pixel change;
- **label-free** (``labelfree``: any model): effect over random at matched strength, linearity in alpha (R^2 over
  the 5 strengths), cross-seed consistency, SSIM, and FD on probe features where a probe exists.

Seeds come in two disjoint sets: **selection seeds** choose (the edit strength when it is calibrated, the best
weight decomposition, the label-free favourite) and **test seeds** give every reported number.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch

from eigenedit.core.attention import DEFAULT_LAYER
from eigenedit.core.defaults import DEFAULT_LOCATION, DEFAULT_OPERATOR, DEFAULT_T_EDIT
from eigenedit.core.directions import Directions, compute_directions
from eigenedit.core.factorize import DECOMPOSITIONS, random_directions
from eigenedit.core.operators import get_module, location_dims
from eigenedit.core.sampling import Edit, edit_images, noise_from_seeds, sample
from eigenedit.evaluation import labelfree
from eigenedit.evaluation.baselines import (
    PullbackRecipe,
    collect_hidden,
    ddim_steps,
    edit_index,
    pca_directions,
    pullback_directions,
    pullback_location,
    x_space_guidance,
)
from eigenedit.evaluation.metrics import attribute_scale
from eigenedit.evaluation.probes import Probe, load_probe, probe_for_model, shapes_scales
from eigenedit.models import DiffusionModel

FACTOR_STD = shapes_scales()  # the shapes probe's units: std of each factor over the dataset
MIN_EFFECT = 0.25  # std units: smaller mean changes do not count as moving an attribute
STRENGTHS = (-1.0, -0.5, 0.5, 1.0)  # multiples of alpha (0 is the plain image): the 5 strengths of linearity
TARGET_CHANGE = 0.02  # calibrated alpha: a random direction changes images by this (mean |delta| on 0..1)

NoiseFn = Callable[[DiffusionModel, list[int]], torch.Tensor]
# discovery is timed as a new model would see it: without the per-weights cache of ``core.cache`` where there is one
UNCACHED = {"cache": False} if "cache" in inspect.signature(compute_directions).parameters else {}


@dataclass
class DirectionScore:
    index: int
    label: str
    dominant: str
    concentration: float
    monotonic: bool
    effect: float  # mean |change| of the dominant attribute over both signs, in its units
    leakage: float  # mean |change| of the other attributes
    valid_rate: float
    pixel_change: float
    plus: dict[str, float]
    minus: dict[str, float]


def _probe(probe: Probe | str) -> Probe:
    return load_probe(probe) if isinstance(probe, str) else probe


def attribute_scales(probe: Probe, plain_reads: dict[str, torch.Tensor]) -> dict[str, float]:
    """Units of every attribute: ``metrics.attribute_scale`` (the probe's own scale, else the std over the unedited
    images), as the protocol's; categorical attributes: the probe's scale or 1."""
    valid = plain_reads["valid"]
    return {
        name: probe.scales.get(name, 1.0)
        if name in probe.categorical
        else attribute_scale(plain_reads[name][valid], probe.scales.get(name))
        for name in probe.units
    }


def attribute_changes(
    probe: Probe, plain: dict[str, torch.Tensor], edited: dict[str, torch.Tensor], scales: dict[str, float]
) -> tuple[dict[str, float], float]:
    """Signed mean change per attribute (in ``scales`` units) over images valid before and after; validity rate."""
    both = plain["valid"] & edited["valid"]
    out = {}
    for name in probe.units:
        if not both.any():
            out[name] = 0.0
            continue
        change = probe.difference(name, edited[name][both], plain[name][both])
        out[name] = float(change.double().mean()) / scales[name]
    valid = float(edited["valid"][plain["valid"]].float().mean()) if plain["valid"].any() else 0.0
    return out, valid


def score_reads(
    index: int,
    probe: Probe,
    plain: dict[str, torch.Tensor],
    plus_reads: dict[str, torch.Tensor],
    minus_reads: dict[str, torch.Tensor],
    scales: dict[str, float],
    pixel: float,
) -> DirectionScore:
    """A direction's probe metrics from the attribute reads of its plain, +alpha and -alpha images."""
    plus, valid_plus = attribute_changes(probe, plain, plus_reads, scales)
    minus, valid_minus = attribute_changes(probe, plain, minus_reads, scales)
    names = list(probe.units)
    magnitude = {f: (abs(plus[f]) + abs(minus[f])) / 2 for f in names}
    total = sum(magnitude.values())
    dominant = max(magnitude, key=magnitude.get)
    concentration = magnitude[dominant] / total if total > 0 else 0.0
    if dominant in probe.categorical:
        monotonic = min(plus[dominant], minus[dominant]) >= MIN_EFFECT
        sign = ""
    else:
        monotonic = (
            plus[dominant] * minus[dominant] < 0 and min(abs(plus[dominant]), abs(minus[dominant])) >= MIN_EFFECT
        )
        sign = "+" if plus[dominant] - minus[dominant] >= 0 else "-"
    others = [magnitude[f] for f in names if f != dominant]
    return DirectionScore(
        index=index,
        label=f"{sign}{dominant}" if magnitude[dominant] >= MIN_EFFECT else "none",
        dominant=dominant,
        concentration=concentration,
        monotonic=monotonic,
        effect=magnitude[dominant],
        leakage=sum(others) / max(1, len(others)),
        valid_rate=(valid_plus + valid_minus) / 2,
        pixel_change=pixel,
        plus=plus,
        minus=minus,
    )


def score_direction(
    index: int,
    plain_images: torch.Tensor,
    plus_images: torch.Tensor,
    minus_images: torch.Tensor,
    probe: Probe | str = "shapes",
    scales: dict[str, float] | None = None,
) -> DirectionScore:
    """All probe metrics of one direction from its plain, +alpha and -alpha images (same seeds, same order)."""
    probe = _probe(probe)
    plain = probe(plain_images)
    scales = scales or attribute_scales(probe, plain)
    pixel = (labelfree.pixel_change(plain_images, plus_images) + labelfree.pixel_change(plain_images, minus_images)) / 2
    return score_reads(index, probe, plain, probe(plus_images), probe(minus_images), scales, pixel)


def score_all(
    plain: torch.Tensor, plus: torch.Tensor, minus: torch.Tensor, probe: Probe | str = "shapes"
) -> list[DirectionScore]:
    """plain (N, ...) and plus/minus (k*N, ...) images, direction-major -> k scores."""
    probe = _probe(probe)
    n = len(plain)
    k = len(plus) // n
    scales = attribute_scales(probe, probe(plain))
    return [
        score_direction(j, plain, plus[j * n : (j + 1) * n], minus[j * n : (j + 1) * n], probe, scales)
        for j in range(k)
    ]


def _edit(
    model: DiffusionModel, x: torch.Tensor, dirs: Directions, alphas: torch.Tensor, cfg: EvalConfig, location: str
) -> torch.Tensor:
    """``edit_images`` with ``cfg``'s steps, t_edit, batch size and operator."""
    operator = cfg.operator or DEFAULT_OPERATOR
    edit = Edit(directions=dirs, alphas=alphas, t_edit=cfg.t_edit, location=location, operator=operator)
    return edit_images(model, x, edit, cfg.num_steps, cfg.batch_size)


def evaluate_directions(
    model: DiffusionModel,
    directions: Directions,
    seeds: list[int],
    alpha: float,
    num_steps: int = 20,
    t_edit: int = DEFAULT_T_EDIT,
    location: str = DEFAULT_LOCATION,
    batch_size: int = 128,
    progress: bool = False,
    probe: Probe | str = "shapes",
) -> tuple[list[DirectionScore], float]:
    """Score every direction at +alpha and -alpha on ``seeds`` with ``probe``; also returns the seconds spent
    editing. (The labelling path of the CLI and UI; ``run_evaluation`` is the full protocol.)"""
    x = noise_from_seeds(model, seeds)
    plain = sample(model, x, num_steps)
    k, n = len(directions), len(seeds)
    signs = torch.eye(k).repeat_interleave(n, dim=0)  # (k*n, k): row j*n+i edits seed i along direction j
    start = time.perf_counter()
    alphas = torch.cat([signs * alpha, signs * -alpha])
    edit = Edit(directions=directions, alphas=alphas, t_edit=t_edit, location=location)
    edited = edit_images(model, x.repeat(2 * k, 1, 1, 1), edit, num_steps, batch_size, progress)
    elapsed = time.perf_counter() - start
    return score_all(plain, edited[: k * n], edited[k * n :], probe), elapsed


def label_directions(directions: Directions, scores: list[DirectionScore]) -> Directions:
    """Store the automatic labels (e.g. "+size") and scores in the directions' metadata."""
    directions.metadata["labels"] = [s.label for s in scores]
    directions.metadata["scores"] = [
        {"concentration": round(s.concentration, 4), "effect": round(s.effect, 4), "monotonic": s.monotonic}
        for s in scores
    ]
    return directions


def summarize(scores: list[DirectionScore]) -> dict:
    """Probe summary of a method: monotonic one-attribute directions, directions that move anything (effect >=
    MIN_EFFECT), their mean concentration (None when none does: the concentration of a no-op is noise), and
    the best direction per attribute."""
    best = {}
    names = list(scores[0].plus) if scores else []
    for name in names:
        candidates = [s for s in scores if s.dominant == name and s.monotonic]
        if candidates:
            top = max(candidates, key=lambda s: s.effect * s.concentration)
            best[name] = {"index": top.index, "effect": top.effect, "concentration": top.concentration}
    n = max(1, len(scores))
    effective = [s for s in scores if s.effect >= MIN_EFFECT]
    return {
        "directions": len(scores),
        "effective": len(effective),
        "mean_concentration": sum(s.concentration for s in effective) / len(effective) if effective else None,
        "monotonic": sum(s.monotonic for s in scores),
        "monotonic_ordered": sum(s.monotonic and s.label[:1] in "+-" for s in scores),  # not a category flip
        "mean_effect": sum(s.effect for s in scores) / n,
        "mean_leakage": sum(s.leakage for s in scores) / n,
        "mean_valid_rate": sum(s.valid_rate for s in scores) / n,
        "mean_pixel_change": sum(s.pixel_change for s in scores) / n,
        "factors_found": sorted(best),
        "best": best,
    }


def summarize_records(records: list[dict], random_pixel_change: float | None) -> dict:
    """A method's summary from its per-direction records: the probe summary (where a probe scored them) and the
    label-free one (``effect_over_random``: mean pixel change over the random control's at the same strength)."""
    out: dict = {"directions": len(records)}
    probed = [DirectionScore(**r["probe"]) for r in records if r.get("probe")]
    if probed:
        out |= summarize(probed)
    free = [r["labelfree"] for r in records]
    n = max(1, len(free))
    pixel = sum(f["pixel_change"] for f in free) / n
    fds = [f["fd"] for f in free if f.get("fd") is not None]
    reference = random_pixel_change if random_pixel_change else None
    out |= {
        "mean_pixel_change": pixel,
        "effect_over_random": pixel / reference if reference else None,
        "mean_linearity": sum(f["linearity"] for f in free) / n,
        "mean_consistency": sum(f["consistency"] for f in free) / n,
        "mean_ssim": sum(f["ssim"] for f in free) / n,
        "mean_fd": sum(fds) / len(fds) if fds else None,
        "consistent_edits": sum(labelfree.is_consistent_edit(f, reference or 0.0) for f in free),
    }
    return out


def labelfree_key(summary: dict) -> tuple:
    """Label-free ranking, best first: consistent edits, then mean consistency, then effect over random."""
    return (-summary["consistent_edits"], -summary["mean_consistency"], -(summary["effect_over_random"] or 0.0))


def probe_key(summary: dict) -> tuple:
    """Probe ranking, best first: monotonic one-attribute directions, directions with any effect, their
    concentration, mean effect."""
    concentration = summary["mean_concentration"] or 0.0
    return (-summary["monotonic"], -summary["effective"], -concentration, -summary["mean_effect"])


def rank_key(summary: dict) -> tuple:
    """The probe ranking where a probe exists, else the label-free one."""
    return probe_key(summary) if "monotonic" in summary else labelfree_key(summary)


def direction_key(record: dict, random_pixel_change: float) -> tuple:
    """Label-free ranking of single directions: consistent edits first, then consistency x linearity."""
    f = record["labelfree"]
    return (-labelfree.is_consistent_edit(f, random_pixel_change), -f["consistency"] * max(f["linearity"], 0.0))


def as_records(scores: list[DirectionScore]) -> list[dict]:
    return [asdict(s) for s in scores]


def resummarize(runs: list[dict]) -> list[dict]:
    """Recompute every method's summaries from its stored per-direction records (e.g. after a metric change)."""
    for run in runs:
        methods = {k: m for k, m in run["methods"].items() if k != "timing"}
        for phase, key in (("directions", "summary"), ("selection_directions", "selection_summary")):
            random = methods.get("random", {}).get(phase)
            reference = summarize_records(random, None)["mean_pixel_change"] if random else None
            for method in methods.values():
                if phase in method:
                    method[key] = summarize_records(method[phase], reference)
    return runs


def split_seeds(
    pool: Sequence[int] | None, selection: Sequence[int] | None, test: Sequence[int] | None
) -> tuple[list[int], list[int]]:
    """Selection and test seeds from ``--seeds`` (the pool, default 0..15), ``--selection-seeds`` and
    ``--test-seeds``: a set not given is the rest of the pool, and with neither given the first quarter of the
    pool selects. Both sets need 2 seeds or more and must be disjoint."""
    if pool is not None and selection is not None and test is not None:
        raise ValueError("give --seeds or both --selection-seeds and --test-seeds, not all three")
    pool = list(range(16)) if pool is None else list(pool)
    if selection is None and test is None:
        cut = max(2, len(pool) // 4)
        selection, test = pool[:cut], pool[cut:]
    elif test is None:
        chosen = set(selection)
        test = [s for s in pool if s not in chosen]
    elif selection is None:
        chosen = set(test)
        selection = [s for s in pool if s not in chosen]
    selection, test = list(selection), list(test)
    overlap = sorted(set(selection) & set(test))
    if overlap:
        shown = ", ".join(map(str, overlap[:5])) + (" ..." if len(overlap) > 5 else "")
        raise ValueError(f"selection and test seeds overlap ({len(overlap)} seeds: {shown}); they must be disjoint")
    if len(selection) < 2 or len(test) < 2:
        raise ValueError(
            f"need at least 2 selection and 2 test seeds, got {len(selection)} and {len(test)} "
            "(give more --seeds, or --selection-seeds and --test-seeds)"
        )
    return selection, test


def seed_text(seeds: Sequence[int]) -> str:
    """Compact text of a seed list: 0-7, 1000-1031 or 3, 5, 9."""
    seeds = list(seeds)
    if seeds and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
    return ", ".join(map(str, seeds[:8])) + (" ..." if len(seeds) > 8 else "")


@dataclass
class EvalConfig:
    """What ``run_evaluation`` measures. ``seeds``: the test seeds (a count means 0..N-1); ``selection_seeds``:
    the seeds that choose (disjoint from the test seeds; empty: nothing is selected). ``alpha`` None: calibrated
    on the selection seeds (a random direction changes the image by ``TARGET_CHANGE``)."""

    seeds: int | Sequence[int] = 16
    selection_seeds: Sequence[int] = ()
    k: int = 6
    alpha: float | None = 1.0
    num_steps: int = 20
    t_edit: int = DEFAULT_T_EDIT
    location: str = DEFAULT_LOCATION
    pca_samples: int = 500
    pca_steps: int = 10
    pullback: PullbackRecipe = field(default_factory=PullbackRecipe)
    pullback_seeds: int | None = None  # None: every test seed (the pullback is per image and costly)
    layers: tuple[str, ...] | None = None  # None: every self-attention layer
    per_head: bool = True  # also each head and the fold-norm variant of the first layer
    baselines: tuple[str, ...] = ("pca-h", "pullback")
    timing_repeats: int = 5
    batch_size: int = 128
    operator: str | None = None  # an edit operator (None: DEFAULT_OPERATOR, shift)

    def test_seeds(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


def _median(values: list[float]) -> float:
    return float(torch.tensor(values).median())


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return _median(times)


def method_specs(model: DiffusionModel, cfg: EvalConfig) -> list[dict]:
    """Every weight decomposition to evaluate: each layer merged, plus heads and fold-norm of the first layer
    (the mid-block attention where the UNet has one)."""
    layers = list(cfg.layers or [layer.name for layer in model.attention_layers()])
    specs = [
        {"layer": layer, "decomposition": d, "head": None, "fold_norm": False}
        for layer in layers
        for d in DECOMPOSITIONS
    ]
    if cfg.per_head and layers:
        first = DEFAULT_LAYER if DEFAULT_LAYER in layers else layers[0]
        heads = model.attention_weights(first).heads
        if heads > 1:
            specs += [
                {"layer": first, "decomposition": d, "head": h, "fold_norm": False}
                for d in DECOMPOSITIONS
                for h in range(heads)
            ]
        specs += [{"layer": first, "decomposition": d, "head": None, "fold_norm": True} for d in DECOMPOSITIONS]
    return specs


def spec_name(spec: dict) -> str:
    name = f"{spec['decomposition']} {spec['layer']}"
    if spec["head"] is not None:
        name += f" head{spec['head']}"
    if spec["fold_norm"]:
        name += " fold-norm"
    return name


@dataclass
class SeedSet:
    """Seeds of one phase with their starting noise, unedited images and the probe's reads and units."""

    seeds: list[int]
    x: torch.Tensor
    plain: torch.Tensor
    reads: dict[str, torch.Tensor] | None
    scales: dict[str, float] | None

    @classmethod
    def make(cls, model: DiffusionModel, seeds: list[int], cfg: EvalConfig, probe: Probe | None, noise: NoiseFn):
        x = noise(model, seeds)
        plain = model.decode(torch.cat([sample(model, x[sl], cfg.num_steps) for sl in _slices(len(x), cfg.batch_size)]))
        reads = probe(plain) if probe else None
        return cls(seeds, x, plain, reads, attribute_scales(probe, reads) if probe else None)


def measure(images: SeedSet, edited: list[dict[float, torch.Tensor]], probe: Probe | None) -> list[dict]:
    """Per direction (``edited[j]``: strength multiple -> images of the seed set): its probe score (at +-1) and
    label-free score (all strengths)."""
    features = base = None
    if probe is not None:
        features, base = probe.feature_vectors, probe.feature_vectors(images.plain, images.reads)
    records = []
    for j, by_strength in enumerate(edited):
        free = labelfree.score(images.plain, by_strength, features, base)
        record: dict = {"labelfree": asdict(free), "probe": None}
        if probe is not None:
            score = score_reads(
                j, probe, images.reads, probe(by_strength[1.0]), probe(by_strength[-1.0]), images.scales,
                free.pixel_change,
            )  # fmt: skip
            record["probe"] = asdict(score)
        records.append(record)
    return records


def edit_strengths(
    model: DiffusionModel, images: SeedSet, dirs: Directions, alpha: float, cfg: EvalConfig, location: str
) -> tuple[list[dict[float, torch.Tensor]], float]:
    """Edit every seed along every direction alone at each of ``STRENGTHS`` x alpha; seconds spent editing."""
    k, n = len(dirs), len(images.seeds)
    eye = torch.eye(k).repeat_interleave(n, dim=0)  # (k*n, k)
    alphas = torch.cat([eye * s * alpha for s in STRENGTHS])
    start = time.perf_counter()
    out = _edit(model, images.x.repeat(len(STRENGTHS) * k, 1, 1, 1), dirs, alphas, cfg, location)
    elapsed = time.perf_counter() - start
    out = model.decode(out).view(len(STRENGTHS), k, n, *images.plain.shape[1:])
    return [{s: out[i, j] for i, s in enumerate(STRENGTHS)} for j in range(k)], elapsed


def calibrate_alpha(model: DiffusionModel, images: SeedSet, cfg: EvalConfig, channels: int) -> float:
    """The strength (2 significant digits) at which a random direction changes the images by ``TARGET_CHANGE``,
    measured at alpha = 1 on ``images`` (the selection seeds) and scaled linearly."""
    rand = Directions(random_directions(1, channels, seed=4321).float(), torch.zeros(1), {})
    alphas = torch.ones(len(images.seeds), 1)
    edited = _edit(model, images.x, rand, alphas, cfg, cfg.location)
    change = labelfree.pixel_change(images.plain, model.decode(edited))
    return float(f"{TARGET_CHANGE / max(change, 1e-8):.2g}")


def run_evaluation(
    model: DiffusionModel,
    cfg: EvalConfig,
    progress: bool = True,
    probe: Probe | str | None = "auto",
    noise: NoiseFn | None = None,
) -> dict:
    """Evaluate every method at ``cfg.location`` on the test seeds (attention methods and the random control
    also on the selection seeds, which choose); returns a JSON-ready dict. ``probe``: "auto" is the model's
    shipped probe (None for other models: label-free metrics only). ``noise``: seeds -> x_T (default: Gaussian
    noise from each seed; e.g. DDIM inversions of dataset images indexed by the seeds)."""
    if probe == "auto":
        probe = probe_for_model(model.model_id)
    elif isinstance(probe, str):
        probe = load_probe(probe)
    noise = noise or (lambda m, seeds: noise_from_seeds(m, seeds))
    test_seeds, selection_seeds = cfg.test_seeds(), list(cfg.selection_seeds)
    overlap = set(test_seeds) & set(selection_seeds)
    if overlap:
        raise ValueError(f"selection and test seeds overlap ({len(overlap)} seeds); they must be disjoint")
    test = SeedSet.make(model, test_seeds, cfg, probe, noise)
    selection = SeedSet.make(model, selection_seeds, cfg, probe, noise) if selection_seeds else None
    channels = location_dims(model, cfg.location)[0]
    alpha, alpha_source = cfg.alpha, "given"
    if alpha is None:
        if selection is None:
            raise ValueError("a calibrated alpha needs selection seeds")
        alpha, alpha_source = calibrate_alpha(model, selection, cfg, channels), "calibrated on the selection seeds"
        if progress:
            print(f"alpha {alpha:g} ({alpha_source})", flush=True)
    results: dict[str, dict] = {}

    def record(name: str, family: str, dirs: Directions, discovery_s: float, extra: dict | None = None):
        edited, _ = edit_strengths(model, test, dirs, alpha, cfg, cfg.location)
        results[name] = {"family": family, "discovery_s": discovery_s, "directions": measure(test, edited, probe)}
        if selection is not None and family in ("control", "attention"):
            edited, _ = edit_strengths(model, selection, dirs, alpha, cfg, cfg.location)
            results[name]["selection_directions"] = measure(selection, edited, probe)
        results[name] |= extra or {}
        if progress:
            print(f"{name:48s} done", flush=True)

    rand = Directions(random_directions(cfg.k, channels, seed=1234).float(), torch.zeros(cfg.k), {})
    record("random", "control", rand, 0.0)
    for spec in method_specs(model, cfg):
        args = (model.unet, spec["layer"], spec["decomposition"], spec["head"], spec["fold_norm"])
        dirs = compute_directions(*args, read=model.attention_weights)
        if len(dirs) < cfg.k or dirs.dim != channels:
            continue
        discovery = _time(
            lambda args=args: compute_directions(*args, read=model.attention_weights, **UNCACHED), cfg.timing_repeats
        )
        record(spec_name(spec), "attention", dirs.top(cfg.k), discovery, {"spec": spec})

    if "pca-h" in cfg.baselines:
        start = time.perf_counter()
        taken = set(test_seeds) | set(selection_seeds)
        pca_seeds = list(itertools.islice((s for s in itertools.count(10_000) if s not in taken), cfg.pca_samples))
        hidden = collect_hidden(model, pca_seeds, cfg.pca_steps, cfg.t_edit, cfg.location, cfg.batch_size)
        pca = pca_directions(hidden, cfg.k)
        record("pca-h", "baseline", pca, time.perf_counter() - start, {"samples": cfg.pca_samples})
    if "pullback" in cfg.baselines:
        results["pullback"] = evaluate_pullback(model, cfg, test, probe, progress)
    resummarize([{"methods": results}])
    if progress:
        for name, m in results.items():
            s = m["summary"]
            probe_part = f"mono {s['monotonic']}/{s['directions']} effect {s['mean_effect']:.2f} " if probe else ""
            print(
                f"{name:48s} {probe_part}x random {s['effect_over_random'] or 0:.2f} "
                f"R2 {s['mean_linearity']:.2f} cons {s['mean_consistency']:.2f} ssim {s['mean_ssim']:.2f}",
                flush=True,
            )
    results["timing"] = _edit_timing(model, cfg, test, alpha, channels)
    where = [cfg.location]
    if "pullback" in results:
        where.append(results["pullback"]["location"])
    sensitivity = {w: zeroing_sensitivity(model, test.x, cfg.num_steps, w) for w in dict.fromkeys(where)}
    config = asdict(cfg) | {"seeds": test_seeds, "selection_seeds": selection_seeds}
    return {
        "config": config,
        "model": model.model_id,
        "probe": None if probe is None else {"name": probe.name, "units": probe.units, "scales": test.scales},
        "seeds": {"selection": selection_seeds, "test": test_seeds},
        "alpha": alpha,
        "alpha_source": alpha_source,
        "methods": results,
        "zeroing_sensitivity": sensitivity,
    }


def evaluate_locations(
    model: DiffusionModel,
    cfg: EvalConfig,
    locations: list[str],
    progress: bool = True,
    probe: Probe | str | None = "auto",
    noise: NoiseFn | None = None,
) -> list[dict]:
    """One run per edit location. At an attention layer's own output only that layer's directions are scored
    (with random and h-space PCA there); elsewhere every layer's. Pullback (an x-space edit, independent of the
    location) runs at the first location only."""
    if probe == "auto":
        probe = probe_for_model(model.model_id)
    elif isinstance(probe, str):
        probe = load_probe(probe)
    attention_layers = {layer.name for layer in model.attention_layers()}
    runs = []
    for i, location in enumerate(locations):
        baselines = cfg.baselines if i == 0 else tuple(b for b in cfg.baselines if b != "pullback")
        if location in attention_layers:
            run_cfg = replace(cfg, location=location, layers=(location,), per_head=False, baselines=baselines)
        else:
            run_cfg = replace(cfg, location=location, baselines=baselines)
        if progress:
            print(f"== edits at {location}", flush=True)
        runs.append(run_evaluation(model, run_cfg, progress, probe, noise))
    return runs


def evaluate_pullback(
    model: DiffusionModel, cfg: EvalConfig, test: SeedSet, probe: Probe | None, progress: bool = False
) -> dict:
    """Park et al.'s pullback as published (``PullbackRecipe``): per image, DDIM to the edit timestep, the top
    ``rank`` right singular vectors of d h / d x_t there (subspace iteration to convergence), then x-space
    guidance along +-v (``guidance_steps`` steps at full strength, half as many at half strength) and DDIM to
    the end. The first ``min(k, rank)`` vectors of each image are its directions 0, 1, ..."""
    recipe = cfg.pullback
    location = pullback_location(model, recipe.location)
    count = len(test.seeds) if cfg.pullback_seeds is None else min(max(2, cfg.pullback_seeds), len(test.seeds))
    sub = SeedSet(
        test.seeds[:count], test.x[:count], test.plain[:count],
        None if test.reads is None else {k: v[:count] for k, v in test.reads.items()}, test.scales,
    )  # fmt: skip
    index = edit_index(model, cfg.num_steps, recipe.edit_t)
    t = int(model.scheduler.timesteps[index])
    x_edit = ddim_steps(model, sub.x, cfg.num_steps, 0, index)
    k = min(cfg.k, recipe.rank)
    basis, iterations, discovery = [], [], []
    for i in range(count):
        start = time.perf_counter()
        vectors, _, used = pullback_directions(
            model, x_edit[i], t, recipe.rank, recipe.max_iter, location, i, recipe.min_iter, recipe.tol
        )
        discovery.append(time.perf_counter() - start)
        basis.append(vectors[:k])
        iterations.append(used)
        if progress:
            print(f"pullback seed {sub.seeds[i]}: {used} iterations, {discovery[-1]:.1f} s", flush=True)
    v = torch.stack(basis, 1).flatten(0, 1)  # (k*count, ...): direction-major
    xs = x_edit.repeat(k, 1, 1, 1)
    half, full = recipe.guidance_steps // 2, recipe.guidance_steps
    edited: dict[float, torch.Tensor] = {}
    start = time.perf_counter()
    for sign in (1.0, -1.0):
        moved = x_space_guidance(model, xs, t, sign * v, [half, full], recipe.guidance_step, recipe.guidance_scale)
        for steps, strength in ((half, 0.5), (full, 1.0)):
            parts = [
                ddim_steps(model, moved[steps][sl], cfg.num_steps, index) for sl in _slices(len(xs), cfg.batch_size)
            ]
            out = torch.cat(parts)
            edited[sign * strength] = model.decode(out).view(k, count, *sub.plain.shape[1:])
    edit_s = (time.perf_counter() - start) / (4 * k * count)
    per_direction = [{s: edited[s][j] for s in STRENGTHS} for j in range(k)]
    return {
        "family": "baseline",
        "discovery_s": sum(discovery) / count,  # per image
        "edit_s_per_image": edit_s,  # guidance + the rest of sampling, one image at one strength
        "directions": measure(sub, per_direction, probe),
        "per_image": True,
        "seeds": sub.seeds,
        "location": location,
        "edit_location": f"x_t (h: {location})",
        "t": t,
        "iterations": iterations,
        "converged": sum(n < recipe.max_iter for n in iterations),
    }


def _slices(n: int, size: int) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


@torch.no_grad()
def zeroing_sensitivity(model: DiffusionModel, seeds: list[int] | torch.Tensor, num_steps: int, location: str) -> float:
    """Mean absolute pixel change (images in [0, 1]) when the output of ``location`` is replaced by zeros at
    every step: how much the rest of the UNet depends on it at all. Near 0 means no edit there can matter.
    ``seeds``: seeds, or their x_T."""
    x = seeds if isinstance(seeds, torch.Tensor) else noise_from_seeds(model, seeds)
    plain = sample(model, x, num_steps)
    handle = get_module(model.unet, location).register_forward_hook(
        lambda m, a, o: (torch.zeros_like(o[0]), *o[1:]) if isinstance(o, tuple) else torch.zeros_like(o)
    )
    try:
        zeroed = sample(model, x, num_steps)
    finally:
        handle.remove()
    return float((zeroed - plain).abs().mean() / 2)


def _edit_timing(model: DiffusionModel, cfg: EvalConfig, test: SeedSet, alpha: float, channels: int) -> dict:
    """Median seconds of plain sampling vs an edit, for one batch of the test seeds."""
    x = test.x[: cfg.batch_size]
    layer = next((s["layer"] for s in method_specs(model, cfg)), None)
    dirs = compute_directions(model.unet, layer, read=model.attention_weights).top(1) if layer else None
    if dirs is None or dirs.dim != channels:
        dirs = Directions(random_directions(1, channels, seed=1).float(), torch.zeros(1), {})
    alphas = torch.full((len(x), 1), alpha)
    plain = _time(lambda: sample(model, x, cfg.num_steps), cfg.timing_repeats)
    edit = _time(lambda: _edit(model, x, dirs, alphas, cfg, cfg.location), cfg.timing_repeats)
    return {"plain_sampling_s": plain, "edit_s": edit, "edit_over_plain": edit / plain, "batch": len(x)}


def direction_report(
    model: DiffusionModel,
    directions: Directions,
    seeds: list[int],
    alpha: float,
    num_steps: int,
    t_edit: int,
    location: str,
    probe: Probe | str | None = "auto",
    random_count: int = 3,
) -> dict:
    """The label-free metrics (and the probe's label, where there is a probe) of each direction on ``seeds``,
    with ``random_count`` random directions of the same dimension at the same strength as the reference."""
    if probe == "auto":
        probe = probe_for_model(model.model_id)
    elif isinstance(probe, str):
        probe = load_probe(probe)
    if len(seeds) < 2:
        raise ValueError("a report needs at least 2 seeds")
    cfg = EvalConfig(seeds=seeds, k=len(directions), alpha=alpha, num_steps=num_steps, t_edit=t_edit, location=location)
    images = SeedSet.make(model, list(seeds), cfg, probe, lambda m, s: noise_from_seeds(m, s))
    edited, _ = edit_strengths(model, images, directions, alpha, cfg, location)
    records = measure(images, edited, probe)
    rand = Directions(random_directions(random_count, directions.dim, seed=1234).float(), torch.zeros(random_count), {})
    edited, _ = edit_strengths(model, images, rand, alpha, cfg, location)
    random = summarize_records(measure(images, edited, None), None)
    summary = summarize_records(records, random["mean_pixel_change"])
    return {"directions": records, "summary": summary, "random": random, "seeds": list(seeds), "alpha": alpha}
