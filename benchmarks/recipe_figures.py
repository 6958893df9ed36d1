"""The recipe figures of a data dir, from what its runs stored (nothing recomputed):

    python benchmarks/recipe_figures.py [--home .alignline] [--plot DIR]

- Ghost Attention (Llama 2 Table 30): instruction adherence at each measured turn, the policy before GAtt ("without")
  and after it ("with"), per iteration (`rlhf.gatt_enabled`; the GAtt stage measures both on the same dialogues).
- Best of K (Fig. 7): the mean over prompts of the expected maximum and median reward of k of the K rejection
  sampling answers, k = 1..K, per iteration (exact order statistics of each round's samples).
- Context distillation by risk category (Fig. 16 style): safety RM score before / after, prompts and kept.
- Safety data scaling (Figs. 15, 33): the newest `alignline sweep` report: RM means and false-refusal rates per share,
  each with its n.

`--plot DIR` writes best-of-k.png and safety-sweep.png (redrawn from the stored points).

The iteration figures come from the iteration ledgers (`<home>/iterations/iteration-N.json`, step `rlhf`); the
sweep from `<home>/work/sweep/*/report/safety-sweep.json`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def iteration_results(home: Path) -> dict[int, dict[str, Any]]:
    """iteration -> the ledger's rlhf result, for every iteration whose RLHF step finished."""
    out = {}
    for path in sorted((home / "iterations").glob("iteration-*.json")):
        name = path.stem.removeprefix("iteration-")
        if not name.isdigit():
            continue
        rlhf = json.loads(path.read_text()).get("steps", {}).get("rlhf", {})
        result = rlhf.get("result", rlhf)
        if isinstance(result, dict) and result.get("stages"):
            out[int(name)] = result
    return out


def gatt_table(results: dict[int, dict[str, Any]]) -> list[str]:
    lines = []
    for it, result in sorted(results.items()):
        adherence = result["stages"].get("gatt", {}).get("adherence")
        if not adherence:
            continue
        turns = sorted({int(t) for row in adherence.values() for t in row})
        lines += [f"iteration {it}: instruction adherence by turn (Llama 2 Table 30; paper with GAtt: 100% to turn 20)",
                  "| policy | " + " | ".join(f"turn {t}" for t in turns) + " |", "|---" * (len(turns) + 1) + "|"]
        for label in ("without", "with"):
            row = adherence.get(label, {})
            lines.append(f"| {label} GAtt | " + " | ".join(f"{100 * row[str(t)]:.0f}%" if str(t) in row else "-"
                                                         for t in turns) + " |")
        lines.append("")
    return lines


def best_of_k_table(results: dict[int, dict[str, Any]]) -> list[str]:
    lines = []
    for it, result in sorted(results.items()):
        curve = result["stages"].get("rejection_sampling", {}).get("best_of_k")
        if not curve:
            continue
        lines += [f"iteration {it}: reward of the best and the median of k samples (Llama 2 Fig. 7)",
                  "| k | max | median | max - median |", "|---|---|---|---|"]
        lines += [f"| {p['k']} | {p['max']:.4f} | {p['median']:.4f} | {p['max'] - p['median']:.4f} |" for p in curve]
        lines.append("")
    return lines


def distillation_table(results: dict[int, dict[str, Any]]) -> list[str]:
    lines = []
    for it, result in sorted(results.items()):
        table = result["stages"].get("context_distillation", {}).get("by_category")
        if not table:
            continue
        lines += [f"iteration {it}: safety context distillation by risk category (Llama 2 §4.2.4, Fig. 16)",
                  "| category | prompts | kept | safety RM before | preprompted | after |", "|---|---|---|---|---|---|"]
        lines += [f"| {c} | {r['prompts']:.0f} | {r['kept']:.0f} | {r['safety_before']:.3f} | "
                  f"{r['safety_preprompted']:.3f} | {r['safety_after']:.3f} |" for c, r in sorted(table.items())]
        lines.append("")
    return lines


def newest_sweep(home: Path) -> dict[str, Any] | None:
    found = sorted((home / "work" / "sweep").glob("*/report/safety-sweep.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text()) if found else None


def sweep_points(sweep: dict[str, Any]) -> list:
    from alignline.services.evaluation.safety_sweep import SweepPoint

    return [SweepPoint.from_dict(p) for p in sweep["points"]]


def sweep_table(sweep: dict[str, Any] | None) -> list[str]:
    """The sweep's table as its report wrote it: every mean with its n (an older report without n shows 0)."""
    from alignline.services.evaluation.safety_sweep import SWEEP_HEADER, sweep_rows

    if not sweep:
        return []
    lines = [f"safety data scaling from {sweep['base']} (judges {', '.join(sweep['judges'])}; Llama 2 Figs. 15, 33)",
             "| " + " | ".join(SWEEP_HEADER) + " |", "|" + "---|" * len(SWEEP_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in sweep_rows(sweep_points(sweep))]
    return lines + [""]


def plot_sweep_figure(sweep: dict[str, Any] | None, folder: Path) -> Path | None:
    """Figs. 15 and 33 redrawn from the stored points (the same drawing as the sweep's own report)."""
    from alignline.services.evaluation.safety_sweep import plot_sweep

    return plot_sweep(sweep_points(sweep), folder / "safety-sweep.png") if sweep else None


def plot_best_of_k(results: dict[int, dict[str, Any]], folder: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {it: r["stages"]["rejection_sampling"]["best_of_k"] for it, r in sorted(results.items())
              if r["stages"].get("rejection_sampling", {}).get("best_of_k")}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for it, curve in curves.items():
        ax.plot([p["k"] for p in curve], [p["max"] for p in curve], "o-", label=f"iteration {it}: max")
        ax.plot([p["k"] for p in curve], [p["median"] for p in curve], "x--", label=f"iteration {it}: median")
    ax.set_xlabel("k samples per prompt")
    ax.set_ylabel("combined reward")
    ax.set_title("Best of k (Llama 2 Fig. 7)")
    ax.legend(fontsize=7)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "best-of-k.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=".alignline", help="data dir (default .alignline)")
    parser.add_argument("--plot", metavar="DIR", help="also write best-of-k.png and safety-sweep.png here")
    args = parser.parse_args(argv)
    home = Path(args.home)
    results, sweep = iteration_results(home), newest_sweep(home)
    lines = gatt_table(results) + best_of_k_table(results) + distillation_table(results) + sweep_table(sweep)
    if not lines:
        print(f"no RLHF iteration or sweep results under {home} (run `alignline iterate` / `alignline sweep`)",
              file=sys.stderr)
        return 1
    print("\n".join(lines))
    if args.plot:
        for path in (plot_best_of_k(results, Path(args.plot)), plot_sweep_figure(sweep, Path(args.plot))):
            if path is not None:
                print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
