"""Turn evaluation runs (``evaluation.run_evaluation``, one per edit location) into JSON, Markdown and a plot."""

from __future__ import annotations

import json
from pathlib import Path


def method_rows(runs: list[dict]) -> list[dict]:
    """One row per (location, method), best first (see ``rank_key``); "beats" = more monotonic one-factor
    directions than the random control at the same location."""
    rows = []
    for run in runs:
        location = run["config"]["location"]
        random = run["methods"]["random"]["summary"]
        for name, m in run["methods"].items():
            if name == "timing":
                continue
            s = m["summary"]
            beats = s["monotonic"] > random["monotonic"]
            rows.append({"name": name, "location": location, "family": m["family"], "summary": s, "beats": beats})
    return sorted(rows, key=rank_key)


def rank_key(row: dict) -> tuple:
    """Best first: monotonic one-factor directions, then directions with any effect, then their concentration."""
    s = row["summary"]
    return (-s["monotonic"], -s["effective"], -(s["mean_concentration"] or 0.0), -s["mean_effect"])


def best_attention_method(runs: list[dict]) -> dict:
    return next(r for r in method_rows(runs) if r["family"] == "attention")


def speed_rows(runs: list[dict]) -> dict:
    """Ratios of discovery and edit times, measured in the same run (the one that includes the baselines)."""
    run = next((r for r in runs if "pullback" in r["methods"]), runs[0])
    methods = run["methods"]
    timing = methods["timing"]
    per_image_edit = timing["edit_s"] / timing["batch"]
    attention = [m for m in methods.values() if isinstance(m, dict) and m.get("family") == "attention"]
    ours = sorted(m["discovery_s"] for m in attention)[len(attention) // 2]  # median over decompositions
    rows = {"edit_over_plain_sampling": timing["edit_over_plain"], "ours_discovery_s": ours}
    if "pca-h" in methods:
        rows["pca_discovery_over_ours"] = methods["pca-h"]["discovery_s"] / ours
    if "pullback" in methods:
        pullback_new = methods["pullback"]["discovery_s"] + per_image_edit
        rows["pullback_discovery_per_image_over_ours"] = methods["pullback"]["discovery_s"] / ours
        rows["new_direction_edit_time_saved_vs_pullback"] = 1 - (ours + per_image_edit) / pullback_new
    return rows


def markdown(runs: list[dict]) -> str:
    cfg = runs[0]["config"]
    lines = [
        f"Model `{runs[0]['model']}`; {cfg['seeds']} seeds, top {cfg['k']} directions per method, alpha = "
        f"+/-{cfg['alpha']}, {cfg['num_steps']} DDIM steps, edits at t >= {cfg['t_edit']}.",
        "",
        "| method | edit location | monotonic one-factor | moves anything | concentration of those | mean effect (std) "
        "| leakage (std) | valid | factors found | beats random there |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in method_rows(runs):
        s = r["summary"]
        beats = "control" if r["name"] == "random" else ("yes" if r["beats"] else "no")
        conc = "-" if s["mean_concentration"] is None else f"{s['mean_concentration']:.2f}"
        lines.append(
            f"| {r['name']} | {r['location']} | {s['monotonic']}/{s['directions']} | {s['effective']} | {conc} "
            f"| {s['mean_effect']:.2f} | {s['mean_leakage']:.2f} | {s['mean_valid_rate']:.2f} "
            f"| {', '.join(s['factors_found']) or '-'} | {beats} |"
        )
    best = best_attention_method(runs)
    zeroing = {k: v for run in runs for k, v in run.get("zeroing_sensitivity", {}).items()}
    speed = speed_rows(runs)
    lines += ["", f"Best weight decomposition: **{best['name']}**, edited at `{best['location']}`."]
    if zeroing:
        parts = ", ".join(f"`{where}` {value:.4f}" for where, value in zeroing.items())
        lines += ["", f"Mean pixel change (0..1) when a module's output is replaced by zeros at every step: {parts}."]
    lines += [
        "",
        "| speed (same run, medians) | ratio |",
        "|---|---|",
        f"| edit / plain DDIM sampling | {speed['edit_over_plain_sampling']:.3f} |",
    ]
    if "pca_discovery_over_ours" in speed:
        lines.append(f"| discovery: h-space PCA / ours | {speed['pca_discovery_over_ours']:.0f}x |")
    if "pullback_discovery_per_image_over_ours" in speed:
        ratio = speed["pullback_discovery_per_image_over_ours"]
        saved = speed["new_direction_edit_time_saved_vs_pullback"]
        lines.append(f"| discovery: pullback per image / ours (whole layer) | {ratio:.0f}x |")
        lines.append(f"| new-direction edit: time saved vs pullback | {100 * saved:.0f}% |")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = method_rows(runs)[::-1]
    names = [f"{r['name']} @ {r['location']}" for r in rows]
    colours = {"control": "grey", "attention": "tab:blue", "baseline": "tab:orange"}
    family = [colours[r["family"]] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.25 * len(rows) + 1.5), sharey=True)
    axes[0].barh(names, [r["summary"]["monotonic"] for r in rows], color=family)
    axes[0].set_xlabel("monotonic one-factor directions (of top k)")
    axes[1].barh(names, [r["summary"]["mean_effect"] for r in rows], color=family)
    axes[1].set_xlabel("mean effect on the main factor, data std (grey: random control)")
    axes[0].tick_params(axis="y", labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(runs: list[dict], out_dir: Path, stem: str = "evaluation") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    paths[0].write_text(json.dumps(runs, indent=1))
    paths[1].write_text(markdown(runs))
    plot(runs, paths[2])
    return paths
