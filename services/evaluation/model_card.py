"""The model card and evaluation report: one self-contained HTML file (plots inlined) per policy version.

Llama 2 §4 / Model Card (Table 52): intended use, evaluation results, safety
results, limitations, license. Plots: reward and win rate across iterations,
helpfulness against safety score per response (Figure 14-style), RM accuracy by
rating level (Table 8-style).
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

INTENDED_USE = ("Research and evaluation of the alignment pipeline; an assistant for questions about the Python "
                "standard library on the built-in data. Not for unsupervised deployment.")
LIMITATIONS = ("English-centric (the corpus keeps English text); knowledge limited to the text the corpus was built "
               "from; tiny presets are far below the paper's scale and answer poorly; reward-model judgements "
               "stand in for human evaluation between iterations and can be gamed; the safety oracle on built-in data "
               "detects destructive shell/SQL commands only.")
LICENSE = "Weights trained here carry the license of their corpus and base checkpoint; the code is Apache-2.0."


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'


def trend_plot(history: Sequence[dict[str, Any]]) -> str:
    """Mean reward, win rate against the previous version, safety violations and false refusals per iteration."""
    labels = [h["policy"] for h in history]
    nan = float("nan")  # a version judged before any reward model existed has no RM score
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    axes[0].plot(labels, [nan if h.get("mean_reward") is None else h["mean_reward"] for h in history], marker="o", label="combined RM score")
    axes[0].plot(labels, [h.get("mean_oracle", 0.0) for h in history], marker="s", label="oracle score")
    axes[0].set_title("reward by version")
    axes[0].legend(fontsize=7)
    axes[1].plot(labels, [h["rm_win"].get("win_rate", nan) for h in history], marker="o", label="RM-judged")
    axes[1].plot(labels, [h["oracle_win"].get("win_rate", 0.0) for h in history], marker="s", label="oracle-judged")
    axes[1].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("win rate vs baseline")
    axes[1].legend(fontsize=7)
    axes[2].plot(labels, [h["safety_violation_rate"] for h in history], marker="o", label="safety violations")
    axes[2].plot(labels, [h["false_refusal"].get("any_refusal", 0.0) for h in history], marker="s", label="false refusals")
    axes[2].set_ylim(0, 1)
    axes[2].set_title("safety by version")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    return _png(fig)


def suite_trend_plot(history: Sequence[dict[str, Any]]) -> str:
    """Each suite's headline metrics (top-level keys) per version."""
    labels = [h["policy"] for h in history]
    series: dict[str, list[float]] = {}
    for i, h in enumerate(history):
        for name, suite in (h.get("suites") or {}).items():
            for key, value in suite.get("metrics", {}).items():
                if "." not in key or key.count(".") == 1 and key.startswith(("safe.", "unsafe.")):
                    series.setdefault(f"{name}.{key}", [float("nan")] * len(history))[i] = value
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for key, values in sorted(series.items()):
        ax.plot(labels, values, marker="o", label=key)
    ax.set_title("suite metrics by version")
    ax.legend(fontsize=6)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    return _png(fig)


def score_scatter(helpful: Sequence[float], safety: Sequence[float], is_safety: Sequence[bool]) -> str:
    """Helpfulness against safety RM score per response (Llama 2 Figure 14)."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    colors = ["tab:red" if s else "tab:blue" for s in is_safety]
    ax.scatter(safety, helpful, c=colors, s=12, alpha=0.7)
    ax.set_xlabel("safety RM score")
    ax.set_ylabel("helpfulness RM score")
    ax.set_title("responses (red: adversarial prompts)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    return _png(fig)


def accuracy_by_level_plot(by_model: dict[str, dict[str, float]]) -> str:
    """RM accuracy per rating level for each reward model (Llama 2 Table 8)."""
    levels = ["significantly_better", "better", "slightly_better", "negligibly_better"]
    fig, ax = plt.subplots(figsize=(6, 3))
    width = 0.8 / max(1, len(by_model))
    for i, (name, acc) in enumerate(by_model.items()):
        ax.bar([j + i * width for j in range(len(levels))], [acc.get(lv, 0.0) for lv in levels], width, label=name)
    ax.set_xticks([j + width * (len(by_model) - 1) / 2 for j in range(len(levels))])
    ax.set_xticklabels([lv.replace("_", " ") for lv in levels], fontsize=7)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(0, 1)
    ax.set_title("reward model accuracy by rating level")
    ax.legend(fontsize=7)
    return _png(fig)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


REDTEAM_REPORT = "redteam_report.json"   # what `alignline redteam report` writes (newest over older) in its folder


def read_redteam_report(folder: str | Path) -> dict[str, Any] | None:
    """The newest red-team report in `folder` (the data dir's `reports/redteam`), None when there is none or it is
    unreadable (the card then says so rather than failing an evaluation)."""
    path = Path(folder) / REDTEAM_REPORT
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def _rate_cell(rate: dict[str, Any]) -> tuple[str, str, str]:
    num = lambda k: float(rate[k]) if isinstance(rate.get(k), (int, float)) else None  # noqa: E731
    return (_fmt(num("rate")), f"[{_fmt(num('rate_low'))}, {_fmt(num('rate_high'))}]",
            f"{rate.get('violations', '?')} / {rate.get('n', '?')}")


def redteam_section(redteam: dict[str, Any] | None, model: str) -> list[str]:
    """Llama 2 §4.3 on the card: violation rate by risk category with its 95% Wilson interval, overall, and the
    robustness measure, from the red-team report; which model answered is named (it may be an earlier version)."""
    head = "<h2>Red teaming (Llama 2 §4.3)</h2>"
    if not redteam or not redteam.get("prompts"):
        return [head, "<p>No reviewed red-team prompts yet (<code>alignline redteam round</code>, then "
                      "<code>alignline redteam report</code>).</p>"]
    answered = str(redteam.get("model", "?"))
    other = "" if model in {m.strip() for m in answered.split(",")} else f" (not {html.escape(model)}: an earlier version)"
    per_hour = redteam.get("violations_per_person_hour")
    rows = [(cat, *_rate_cell(rate)) for cat, rate in (redteam.get("by_category") or {}).items()]
    overall = {k: redteam.get(f"overall_{k}") for k in ("rate", "rate_low", "rate_high", "violations", "n")}
    return [head,
            f"<p>{redteam['prompts']} reviewed adversarial prompts answered by <code>{html.escape(answered)}</code>"
            f"{other}, from <code>{html.escape(str(redteam.get('dataset', '?')))}</code>"
            + (" <b>(SIMULATED red-teamers and reviewers: scripted bots, not people)</b>" if redteam.get("simulated")
               else "")
            + ". A prompt violates when most of its reviews say the answer breaks the safety policy.</p>",
            _table(rows + [("all categories", *_rate_cell(overall))],
                   ("risk category", "violation rate", "95% interval", "violations / prompts")),
            f"<p>Robustness: {_fmt(per_hour) if per_hour == per_hour else 'n/a'} violating prompts per person-hour "
            f"of red-teaming ({_fmt(redteam.get('person_hours'))} person-hours).</p>"]


def write_model_card(path: str | Path, *, model: str, lineage: dict[str, str], report: dict[str, Any],
                     history: Sequence[dict[str, Any]], scatter: dict[str, Sequence] | None = None,
                     rm_accuracy: dict[str, dict[str, float]] | None = None,
                     gates: Sequence[dict[str, Any]] = (), redteam: dict[str, Any] | None = None) -> Path:
    """The card; `redteam`: the newest red-team report (`read_redteam_report`), shown by risk category."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = [(k, _fmt(v)) for k, v in report.items() if not isinstance(v, (dict, list))]
    for group in ("rm_win", "oracle_win", "false_refusal"):
        flat += [(f"{group}.{k}", _fmt(v)) for k, v in report.get(group, {}).items()]
    held_out = report.get("held_out") or {}
    parts = [
        f"<html><head><meta charset='utf-8'><title>Model card: {html.escape(model)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}</style></head><body>",
        f"<h1>Model card: {html.escape(model)}</h1>",
        "<h2>Intended use</h2>", f"<p>{INTENDED_USE}</p>",
        "<h2>Lineage</h2>", _table(sorted(lineage.items()), ("tag", "value")),
        "<h2>Evaluation set</h2>",
        f"<p>{held_out.get('eval_prompts', '?')} prompts of <code>{html.escape(str(held_out.get('eval_set', '?')))}</code>, "
        f"checked against {held_out.get('lineage_datasets_checked', '?')} dataset versions in this model's lineage: "
        f"overlap = {held_out.get('overlap', '?')}"
        + (f"; not checkable here (another data dir's): {html.escape(', '.join(held_out['unverified_datasets']))}"
           if held_out.get("unverified_datasets") else "") + ".</p>",
        "<h2>Win rates (95% Wilson intervals)</h2>",
        _table([(judge, _fmt(w.get("win_rate")), f"[{_fmt(w.get('win_rate_low'))}, {_fmt(w.get('win_rate_high'))}]",
                 w.get("n", 0)) for judge, w in (("reward models", report.get("rm_win") or {}),
                                                 ("oracle", report.get("oracle_win") or {})) if w],
               ("judge", "win rate", "95% interval", "prompts")),
        "<h2>Evaluation</h2>", _table(flat, ("metric", "value")),
    ]
    for name, suite in (report.get("suites") or {}).items():
        parts += [f"<h2>Suite: {html.escape(name)} ({html.escape(suite['kind'])}, {suite['counts'].get('items', 0)} items, "
                  f"{suite['counts'].get('quarantined', 0)} quarantined)</h2>",
                  _table(sorted((k, _fmt(v)) for k, v in suite["metrics"].items()), ("metric", "value"))]
        plot = path.parent / suite.get("plot", "")
        if suite.get("plot") and plot.is_file():
            parts.append(f'<img src="data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()}"/>')
    if len(history) > 1 and any(h.get("suites") for h in history):
        parts += ["<h2>Suites across versions</h2>", suite_trend_plot(history)]
    if gates:
        parts += ["<h2>Promotion gates</h2>",
                  _table([(g["name"], "pass" if g["passed"] else "FAIL", _fmt(g["value"]), _fmt(g["threshold"]), g["rule"])
                          for g in gates], ("gate", "result", "value", "threshold", "rule"))]
    if history:
        parts += ["<h2>Across iterations</h2>", trend_plot(history)]
    if scatter:
        parts += ["<h2>Helpfulness against safety (Figure 14-style)</h2>",
                  score_scatter(scatter["helpful"], scatter["safety"], scatter["is_safety"])]
    if rm_accuracy:
        parts += ["<h2>Reward models by rating level (Table 8-style)</h2>", accuracy_by_level_plot(rm_accuracy)]
    parts += ["<h2>Safety</h2>",
              f"<p>Safety violation rate on adversarial prompts: {_fmt(report.get('safety_violation_rate', 0.0))}; "
              f"false refusals on borderline benign prompts: {_fmt(report.get('false_refusal', {}).get('any_refusal', 0.0))}; "
              f"toxicity proxy: {_fmt(report.get('toxicity', 0.0))}.</p>",
              *redteam_section(redteam, model),
              "<h2>Limitations</h2>", f"<p>{LIMITATIONS}</p>",
              "<h2>License</h2>", f"<p>{LICENSE}</p></body></html>"]
    path.write_text("\n".join(parts))
    return path
