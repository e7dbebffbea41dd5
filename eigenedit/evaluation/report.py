"""Turn evaluation runs (``evaluate.run_evaluation``, one per edit location) into JSON, Markdown and a plot.

Every number in the tables comes from the test seeds; the choices ("best weight decomposition", the label-free
favourite) are made on the selection seeds and then reported with their test-seed numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

from eigenedit.core.io import atomic_write
from eigenedit.evaluation.evaluate import direction_key, labelfree_key, probe_key, rank_key, seed_text

LEGEND_PROBE = (
    "Probe columns (at +-alpha): *monotonic one-attribute*: the direction's main attribute moves one way for +alpha "
    "and the other way for -alpha, each by >= 0.25 units (a categorical attribute, e.g. shapes kind or fashion "
    "class, counts when it changes for >= 25% of images at both signs; *ordered*: those whose main attribute is not "
    "categorical); *concentration*: share of the total "
    "attribute change that goes to the main attribute; *effect* and *leakage*: mean change of the main attribute "
    "and of each other one, in the probe's units (spread over the data, else over the unedited test images); "
    "*valid*: share of edited images the probe can still read."
)
LEGEND_FREE = (
    "Label-free columns: *effect / random*: mean pixel change over the random control's at the same alpha; "
    "*linearity R^2*: per-pixel change against alpha over 5 strengths (-alpha, -alpha/2, 0, alpha/2, alpha); "
    "*consistency*: mean cosine similarity of (edited - plain) across test seeds; *SSIM* plain vs edited; *FD*: "
    "Frechet distance plain vs edited on the probe's features. A *consistent edit* moves images at least as much as "
    "random directions, with consistency >= 0.3 and R^2 >= 0.7."
)


def _methods(run: dict) -> dict[str, dict]:
    return {name: m for name, m in run["methods"].items() if name != "timing"}


def has_probe(runs: list[dict]) -> bool:
    return runs[0].get("probe") is not None


def method_rows(runs: list[dict]) -> list[dict]:
    """One row per (location, method) with its test-seed summary, best first (``rank_key``); "beats" = more
    monotonic one-attribute directions (with a probe) or more consistent edits (without) than the random control
    at the same location."""
    rows = []
    for run in runs:
        location = run["config"]["location"]
        random = run["methods"]["random"]["summary"]
        for name, m in _methods(run).items():
            s = m["summary"]
            key = "monotonic" if "monotonic" in s else "consistent_edits"
            row = {"name": name, "location": m.get("edit_location", location), "family": m["family"], "summary": s}
            row["selection_summary"] = m.get("selection_summary")
            rows.append(row | {"beats": s[key] > random[key]})
    return sorted(rows, key=lambda r: rank_key(r["summary"]))


def _chosen(runs: list[dict], key) -> dict:
    """The attention method ranked first by ``key`` on the selection seeds (on the test seeds when a run has
    no selection seeds; ``selected_on`` says which)."""
    rows = [r for r in method_rows(runs) if r["family"] == "attention"]
    if not rows:
        raise ValueError("no attention method was evaluated")
    if all(r["selection_summary"] for r in rows):
        return min(rows, key=lambda r: key(r["selection_summary"])) | {"selected_on": "selection seeds"}
    return min(rows, key=lambda r: key(r["summary"])) | {"selected_on": "test seeds (no selection seeds)"}


def best_attention_method(runs: list[dict]) -> dict:
    """The weight decomposition and location the probe (else the label-free metrics) rank first."""
    return _chosen(runs, probe_key if has_probe(runs) else labelfree_key)


def best_labelfree_method(runs: list[dict]) -> dict:
    return _chosen(runs, labelfree_key)


def top_directions(runs: list[dict], n: int | None = 3) -> list[dict]:
    """The single directions the label-free metrics rank first over every method and location (test seeds),
    with the probe's label where there is one."""
    found = []
    for run in runs:
        methods = _methods(run)
        reference = methods["random"]["summary"]["mean_pixel_change"]
        for name, m in methods.items():
            if name == "random":
                continue
            for j, r in enumerate(m["directions"]):
                label = r["probe"]["label"] if r.get("probe") else None
                where = m.get("edit_location", run["config"]["location"])
                entry = {"method": name, "location": where, "index": j, "label": label, "family": m["family"]}
                found.append(entry | {"labelfree": r["labelfree"], "key": direction_key(r, reference)})
    return sorted(found, key=lambda e: e["key"])[:n] if n is not None else sorted(found, key=lambda e: e["key"])


def speed_rows(runs: list[dict]) -> dict:
    """Ratios of discovery and edit times, measured in the same run (the one that includes the baselines).
    A new-direction edit: ours = the layer's decomposition + one edit; pullback = its per-image subspace
    iteration + x-space guidance and the rest of sampling."""
    run = next((r for r in runs if "pullback" in r["methods"]), runs[0])
    methods = run["methods"]
    timing = methods["timing"]
    per_image_edit = timing["edit_s"] / timing["batch"]
    attention = [m for m in _methods(run).values() if m["family"] == "attention"]
    rows = {"edit_over_plain_sampling": timing["edit_over_plain"]}
    if not attention:
        return rows
    ours = sorted(m["discovery_s"] for m in attention)[len(attention) // 2]  # median over decompositions
    rows["ours_discovery_s"] = ours
    if "pca-h" in methods:
        rows["pca_discovery_over_ours"] = methods["pca-h"]["discovery_s"] / ours
    if "pullback" in methods:
        pull = methods["pullback"]
        pullback_new = pull["discovery_s"] + pull["edit_s_per_image"]
        rows["pullback_discovery_per_image_over_ours"] = pull["discovery_s"] / ours
        rows["pullback_new_direction_edit_s"] = pullback_new
        rows["ours_new_direction_edit_s"] = ours + per_image_edit
        rows["new_direction_edit_time_saved_vs_pullback"] = 1 - (ours + per_image_edit) / pullback_new
    return rows


def _fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(runs: list[dict]) -> str:
    cfg, first = runs[0]["config"], runs[0]
    probe = first.get("probe")
    seeds = first.get("seeds", {"selection": [], "test": cfg["seeds"]})
    alphas = ", ".join(dict.fromkeys(f"{r['config']['location']} {r['alpha']:g}" for r in runs))
    lines = [
        f"Model `{first['model']}`; probe: {probe['name'] if probe else 'none (label-free metrics only)'}. "
        f"Test seeds {seed_text(seeds['test'])} ({len(seeds['test'])}; every number below); selection seeds "
        f"{seed_text(seeds['selection']) or '-'} ({len(seeds['selection'])}; they choose). Top {cfg['k']} "
        f"directions per method, alpha ({first.get('alpha_source', 'given')}) per location: {alphas}; "
        f"{cfg['num_steps']} DDIM steps, edits at t >= {cfg['t_edit']}.",
        "",
    ]
    free_cols = "| effect / random | linearity R^2 | consistency | SSIM | FD (probe features) |"
    if probe:
        lines += [
            "| method | edit location | monotonic one-attribute (ordered) | moves anything | concentration of those "
            "| mean effect (units) | leakage | valid | attributes found " + free_cols + " beats random |",
            "|---" * 15 + "|",
        ]
    else:
        lines += ["| method | edit location | consistent edits " + free_cols + " beats random |", "|---" * 9 + "|"]
    for r in method_rows(runs):
        s = r["summary"]
        beats = "control" if r["name"] == "random" else ("yes" if r["beats"] else "no")
        free = (
            f"| {_fmt(s['effect_over_random'])} | {s['mean_linearity']:.2f} | {s['mean_consistency']:.2f} "
            f"| {s['mean_ssim']:.3f} | {_fmt(s['mean_fd'], '.3g')} |"
        )
        if probe:
            lines.append(
                f"| {r['name']} | {r['location']} | {s['monotonic']}/{s['directions']} "
                f"({s.get('monotonic_ordered', '-')}) | {s['effective']} "
                f"| {_fmt(s['mean_concentration'])} | {s['mean_effect']:.2f} | {s['mean_leakage']:.2f} "
                f"| {s['mean_valid_rate']:.2f} | {', '.join(s['factors_found']) or '-'} {free} {beats} |"
            )
        else:
            lines.append(
                f"| {r['name']} | {r['location']} | {s['consistent_edits']}/{s['directions']} {free} {beats} |"
            )
    lines += ["", LEGEND_PROBE + " " + LEGEND_FREE if probe else LEGEND_FREE, "", *chosen_lines(runs)]
    zeroing = {k: v for run in runs for k, v in run.get("zeroing_sensitivity", {}).items()}
    if zeroing:
        parts = ", ".join(f"`{where}` {value:.4f}" for where, value in zeroing.items())
        lines += ["", f"Mean pixel change (0..1) when a module's output is replaced by zeros at every step: {parts}."]
    lines += ["", *pullback_lines(runs), *speed_lines(runs)]
    return "\n".join(lines) + "\n"


def chosen_lines(runs: list[dict]) -> list[str]:
    """What the probe and the label-free metrics rank first, chosen on the selection seeds, with test numbers."""
    lines = []
    if has_probe(runs):
        best = best_attention_method(runs)
        s = best["summary"]
        lines.append(
            f"Best weight decomposition by the probe (chosen on the {best['selected_on']}): **{best['name']}** at "
            f"`{best['location']}`; on the test seeds {s['monotonic']}/{s['directions']} monotonic "
            f"({s.get('monotonic_ordered', '-')} ordered), mean effect "
            f"{s['mean_effect']:.2f}, attributes {', '.join(s['factors_found']) or '-'}."
        )
    free = best_labelfree_method(runs)
    s = free["summary"]
    lines.append(
        f"Ranked first by the label-free metrics (chosen on the {free['selected_on']}): **{free['name']}** at "
        f"`{free['location']}`; on the test seeds {s['consistent_edits']}/{s['directions']} consistent edits, "
        f"consistency {s['mean_consistency']:.2f}, linearity {s['mean_linearity']:.2f}, effect "
        f"{_fmt(s['effect_over_random'])}x random"
        + (f", monotonic {s['monotonic']}/{s['directions']}." if "monotonic" in s else ".")
    )
    ranked = top_directions(runs, None)
    if ranked:

        def describe(t: dict) -> str:
            free = t["labelfree"]
            probe = f", probe: {t['label']}" if t["label"] else ""
            return (
                f"{t['method']} #{t['index']} at `{t['location']}` (consistency {free['consistency']:.2f}, "
                f"R^2 {free['linearity']:.2f}{probe})"
            )

        first_weight = next((t for t in ranked if t["family"] == "attention"), None)
        lines.append(
            "Single directions the label-free metrics rank first (test seeds): "
            + "; ".join(describe(t) for t in ranked[:3])
            + (f"; first weight direction: {describe(first_weight)}." if first_weight else ".")
        )
    return lines


def pullback_lines(runs: list[dict]) -> list[str]:
    run = next((r for r in runs if "pullback" in r["methods"]), None)
    if run is None:
        return []
    p, recipe = run["methods"]["pullback"], run["config"]["pullback"]
    return [
        f"Pullback (Park et al. 2023, as in their code): h = `{p['location']}`, rank {recipe['rank']}, subspace "
        f"iteration until no entry moves more than {recipe['tol']:g} after {recipe['min_iter']} iterations (at most "
        f"{recipe['max_iter']}; {p['converged']}/{len(p['iterations'])} images converged, median "
        f"{sorted(p['iterations'])[len(p['iterations']) // 2]} iterations), at t = {p['t']} (edit_t "
        f"{recipe['edit_t']:g}), x-space guidance {recipe['guidance_steps']} steps of size "
        f"{recipe['guidance_step']:g}, scale {recipe['guidance_scale']:g} (half strength: half the steps); on "
        f"test seeds {seed_text(p['seeds'])}. Its strength is not matched to alpha, and its directions are per "
        "image with arbitrary signs (an SVD's), so its cross-seed consistency is not comparable with the others'.",
        "",
    ]


def speed_lines(runs: list[dict]) -> list[str]:
    speed = speed_rows(runs)
    lines = ["| speed (same run, medians) | ratio |", "|---|---|"]
    lines.append(f"| edit / plain DDIM sampling | {speed['edit_over_plain_sampling']:.3f} |")
    if "pca_discovery_over_ours" in speed:
        lines.append(f"| discovery: h-space PCA / ours | {speed['pca_discovery_over_ours']:.0f}x |")
    if "pullback_discovery_per_image_over_ours" in speed:
        ratio = speed["pullback_discovery_per_image_over_ours"]
        saved = speed["new_direction_edit_time_saved_vs_pullback"]
        lines.append(f"| discovery: pullback per image / ours (whole layer) | {ratio:.0f}x |")
        lines.append(
            f"| new-direction edit, one image: ours {speed['ours_new_direction_edit_s']:.3f} s, pullback "
            f"{speed['pullback_new_direction_edit_s']:.2f} s: time saved | {100 * saved:.0f}% |"
        )
    run = next((r for r in runs if "pullback" in r["methods"]), runs[0])
    notes = {m.get("discovery_note") for m in _methods(run).values()} - {None}
    if notes:
        lines += ["", f"Our discovery times: {'; '.join(sorted(notes))}."]
    return lines


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = method_rows(runs)[::-1]
    names = [f"{r['name']} @ {r['location']}" for r in rows]
    colours = {"control": "grey", "attention": "tab:blue", "baseline": "tab:orange"}
    family = [colours[r["family"]] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.25 * len(rows) + 1.5), sharey=True)
    if has_probe(runs):
        axes[0].barh(names, [r["summary"]["monotonic"] for r in rows], color=family)
        axes[0].set_xlabel("monotonic one-attribute directions (of top k), test seeds")
    else:
        axes[0].barh(names, [r["summary"]["consistent_edits"] for r in rows], color=family)
        axes[0].set_xlabel("consistent edits (of top k), test seeds")
    axes[1].barh(names, [r["summary"]["mean_consistency"] for r in rows], color=family)
    axes[1].set_xlabel("cross-seed consistency (grey: random control)")
    axes[0].tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def write_report(runs: list[dict], out_dir: Path, stem: str = "evaluation") -> list[Path]:
    """``stem``.json (every record, both seed lists), .md and .png in ``out_dir``, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    text, table = json.dumps(runs, indent=1) + "\n", markdown(runs)
    atomic_write(paths[0], lambda tmp: Path(tmp).write_text(text))
    atomic_write(paths[1], lambda tmp: Path(tmp).write_text(table))
    atomic_write(paths[2], lambda tmp: plot(runs, Path(tmp)))
    return paths
