"""Turn an evaluation result (``evaluation.run_evaluation``) into JSON, a Markdown table and a plot."""

from __future__ import annotations

import json
from pathlib import Path


def ranked_methods(methods: dict) -> list[tuple[str, dict]]:
    """Methods best first: monotonic single-factor directions, then mean concentration; timing excluded."""
    rows = [(name, m) for name, m in methods.items() if name != "timing"]
    return sorted(rows, key=lambda r: (-r[1]["summary"]["monotonic"], -r[1]["summary"]["mean_concentration"]))


def best_attention_method(methods: dict) -> str:
    return next(name for name, m in ranked_methods(methods) if m["family"] == "attention")


def speed_rows(methods: dict) -> dict:
    """Ratios of discovery and edit times, all measured in the same run."""
    timing = methods["timing"]
    per_image_edit = timing["edit_s"] / timing["batch"]
    best = methods[best_attention_method(methods)]
    ours_new = best["discovery_s"] + per_image_edit
    rows = {"edit_over_plain_sampling": timing["edit_over_plain"], "ours_discovery_s": best["discovery_s"]}
    if "pca-h" in methods:
        rows["pca_discovery_over_ours"] = methods["pca-h"]["discovery_s"] / best["discovery_s"]
    if "pullback" in methods:
        pullback_new = methods["pullback"]["discovery_s"] + per_image_edit
        rows["pullback_discovery_per_image_over_ours"] = methods["pullback"]["discovery_s"] / best["discovery_s"]
        rows["new_direction_edit_time_saved_vs_pullback"] = 1 - ours_new / pullback_new
    return rows


def markdown(result: dict) -> str:
    methods = result["methods"]
    cfg = result["config"]
    rand = methods["random"]["summary"]
    lines = [
        f"Model `{result['model']}`; {cfg['seeds']} seeds, top {cfg['k']} directions per method, alpha = "
        f"+/-{cfg['alpha']}, {cfg['num_steps']} DDIM steps, edit at t >= {cfg['t_edit']} on `{cfg['location']}`.",
        "",
        "| method | mean concentration | monotonic one-factor | mean effect (std) | leakage (std) | valid | "
        "factors found | beats random |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in ranked_methods(methods):
        s = m["summary"]
        beats = s["monotonic"] > rand["monotonic"] and s["mean_concentration"] > rand["mean_concentration"]
        beats_text = "control" if name == "random" else ("yes" if beats else "no")
        lines.append(
            f"| {name} | {s['mean_concentration']:.2f} | {s['monotonic']}/{s['directions']} | {s['mean_effect']:.2f} "
            f"| {s['mean_leakage']:.2f} | {s['mean_valid_rate']:.2f} | {', '.join(s['factors_found']) or '-'} "
            f"| {beats_text} |"
        )
    speed = speed_rows(methods)
    zeroing = result.get("zeroing_sensitivity", {})
    if zeroing:
        parts = ", ".join(f"`{where}` {value:.4f}" for where, value in zeroing.items())
        lines += ["", f"Mean pixel change (0..1) when a module's output is replaced by zeros at every step: {parts}."]
    lines += [
        "",
        f"Best weight decomposition: **{best_attention_method(methods)}**.",
        "",
        "| speed (same run, medians) | ratio |",
        "|---|---|",
        f"| edit / plain DDIM sampling | {speed['edit_over_plain_sampling']:.3f} |",
    ]
    if "pca_discovery_over_ours" in speed:
        lines.append(f"| discovery: h-space PCA / ours | {speed['pca_discovery_over_ours']:.0f}x |")
    if "pullback_discovery_per_image_over_ours" in speed:
        ratio, saved = (
            speed["pullback_discovery_per_image_over_ours"],
            speed["new_direction_edit_time_saved_vs_pullback"],
        )
        lines.append(f"| discovery: pullback per image / ours (whole model) | {ratio:.0f}x |")
        lines.append(f"| new-direction edit: time saved vs pullback | {100 * saved:.0f}% |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ranked_methods(result["methods"])
    names = [n for n, _ in rows][::-1]
    conc = [m["summary"]["mean_concentration"] for _, m in rows][::-1]
    mono = [m["summary"]["monotonic"] for _, m in rows][::-1]
    colours = {"control": "grey", "attention": "tab:blue", "baseline": "tab:orange"}
    family = [colours[m["family"]] for _, m in rows][::-1]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.28 * len(rows) + 1.5), sharey=True)
    axes[0].barh(names, mono, color=family)
    axes[0].set_xlabel("monotonic one-factor directions (of top k)")
    axes[1].barh(names, conc, color=family)
    axes[1].axvline(result["methods"]["random"]["summary"]["mean_concentration"], color="grey", ls="--")
    axes[1].set_xlabel("mean concentration (dashed: random)")
    axes[0].tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(result: dict, out_dir: Path, stem: str = "evaluation") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    paths[0].write_text(json.dumps(result, indent=1))
    paths[1].write_text(markdown(result))
    plot(result, paths[2])
    return paths
