"""Safety data scaling (Llama 2 §4.2.3, Figures 15 and 33): what more safety data does to helpfulness and safety.

The paper fine-tunes the pretrained model on all the helpfulness data plus 0%, 1%, 10%, 25%, 50% or 100% of the
safety data, then judges each variant with the (fixed) helpfulness and safety reward models: the mean safety score
climbs with the share while the mean helpfulness score stays flat (Fig. 15), and the false-refusal rate on
helpful and borderline prompts grows with it (Fig. 33). Here the pieces that are not training or generation:
the nested subsets of the safety rows, the per-variant summary and the plot.
"""
from __future__ import annotations

import hashlib
import base64
import html
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import pyarrow as pa

SAFETY_SOURCES = ("safety",)  # SFT rows of these sources are safety demonstrations (the built-in set's)


def is_safety_row(row: dict) -> bool:
    """A safety demonstration: an `is_safety` flag when the table has one, else its source."""
    if row.get("is_safety") is not None:
        return bool(row["is_safety"])
    return str(row.get("source", "")) in SAFETY_SOURCES


def _hash_order(ids: Sequence[str]) -> list[int]:
    return sorted(range(len(ids)), key=lambda i: hashlib.sha256(str(ids[i]).encode()).hexdigest())


def with_safety_share(table: pa.Table, share: float) -> tuple[pa.Table, int, int]:
    """(every helpfulness row + the first round(share * n) safety rows in hash order, safety rows kept, n).

    Subsets are nested (the 10% rows are among the 25% rows), so variants differ only in how much safety data they
    saw, never in which."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"a safety share must be within [0, 1]; got {share}")
    rows = table.to_pylist()
    safety = [i for i, r in enumerate(rows) if is_safety_row(r)]
    keep_n = round(share * len(safety))
    kept = {safety[j] for j in _hash_order([rows[i]["id"] for i in safety])[:keep_n]}
    index = [i for i in range(len(rows)) if i not in set(safety) or i in kept]
    return table.take(pa.array(index, pa.int64())), keep_n, len(safety)


@dataclass(frozen=True)
class SweepPoint:
    share: float
    safety_rows: int
    helpful_rows: int
    mean_helpfulness: float | None      # helpfulness RM on the answers to helpfulness prompts
    mean_safety: float | None           # safety RM on the answers to adversarial prompts
    false_refusal_helpful: float | None     # refusal classifier on answers to helpfulness prompts (None: no prompt)
    false_refusal_borderline: float | None  # ... on answers to the borderline prompts (benign, look risky)
    safety_rm_accuracy: float | None = None  # the safety RM trained on this share, on held-out safety pairs
    safety_rm_pairs: int = 0
    model_dir: str = ""
    helpful_prompts: int = 0     # n behind mean_helpfulness and false_refusal_helpful
    safety_prompts: int = 0      # n behind mean_safety
    borderline_prompts: int = 0  # n behind false_refusal_borderline
    safety_rm_heldout: int = 0   # n behind safety_rm_accuracy

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> "SweepPoint":
        """A stored point (`safety-sweep.json`); fields a newer report added and an older one lacks take defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


def mean_or_none(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def sweep_point(share: float, safety_rows: int, helpful_rows: int, is_safety: Sequence[bool],
                scores: dict[str, list[float]] | None, refusals: Sequence[str], borderline_refusals: Sequence[str],
                rm: tuple[float | None, int, int] = (None, 0, 0), model_dir: str = "") -> SweepPoint:
    """One variant's figures from its answers to the evaluation prompts (`is_safety`, RM `scores` and refusal
    labels in the same order) and to the borderline prompts. Helpfulness RM on helpfulness prompts, safety RM on
    adversarial ones (Fig. 15); a full or partial refusal counts as a refusal (Fig. 33). A figure with no prompt
    behind it is None, never 0."""
    helpful = [i for i, s in enumerate(is_safety) if not s]
    safety = [i for i, s in enumerate(is_safety) if s]
    accuracy, pairs, held = rm
    return SweepPoint(
        share=share, safety_rows=safety_rows, helpful_rows=helpful_rows,
        mean_helpfulness=mean_or_none([scores["helpful"][i] for i in helpful]) if scores else None,
        mean_safety=mean_or_none([scores["safety"][i] for i in safety]) if scores else None,
        false_refusal_helpful=mean_or_none([float(refusals[i] != "compliance") for i in helpful]),
        false_refusal_borderline=mean_or_none([float(v != "compliance") for v in borderline_refusals]),
        safety_rm_accuracy=accuracy, safety_rm_pairs=pairs, model_dir=model_dir,
        helpful_prompts=len(helpful), safety_prompts=len(safety),
        borderline_prompts=len(borderline_refusals), safety_rm_heldout=held)


def plot_sweep(points: Sequence[SweepPoint], path: str | Path) -> Path:
    """Fig. 15 (mean RM scores by safety share) beside Fig. 33 (false-refusal rates by safety share)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [100 * p.share for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for attr, label in (("mean_helpfulness", "helpfulness RM mean"), ("mean_safety", "safety RM mean")):
        ys = [getattr(p, attr) for p in points]
        left.plot([a for a, y in zip(x, ys) if y is not None], [y for y in ys if y is not None], "o-", label=label)
    left.set_xlabel("safety data share (%)")
    left.set_ylabel("mean reward-model score")
    left.set_title("Safety data scaling (Llama 2 Fig. 15)")
    left.legend()
    for attr, style, label in (("false_refusal_helpful", "o-", "helpfulness prompts"),
                               ("false_refusal_borderline", "s-", "borderline prompts")):
        ys = [getattr(p, attr) for p in points]
        right.plot([a for a, y in zip(x, ys) if y is not None], [100 * y for y in ys if y is not None], style,
                   label=label)
    right.set_xlabel("safety data share (%)")
    right.set_ylabel("false refusal rate (%)")
    right.set_title("False refusals (Llama 2 Fig. 33)")
    right.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


SWEEP_HEADER = ("safety share", "safety rows", "helpfulness RM mean (n)", "safety RM mean (n)",
                "false refusals, helpful (n)", "false refusals, borderline (n)",
                "safety RM trained on the share: held-out accuracy (n)")


def _cell(value: float | None, n: int) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} ({n})" if n else f"{value:.3f}"  # a report from before n was stored: no n to show


def sweep_rows(points: Sequence[SweepPoint]) -> list[list[str]]:
    """One row per share: every figure with the n it is a mean over (RM means on prompts, rates on answers)."""
    return [[f"{100 * p.share:.0f}%", str(p.safety_rows), _cell(p.mean_helpfulness, p.helpful_prompts),
             _cell(p.mean_safety, p.safety_prompts), _cell(p.false_refusal_helpful, p.helpful_prompts),
             _cell(p.false_refusal_borderline, p.borderline_prompts),
             "-" if p.safety_rm_accuracy is None else
             f"{_cell(p.safety_rm_accuracy, p.safety_rm_heldout)}, trained on {p.safety_rm_pairs} pairs"]
            for p in points]


def sweep_markdown(points: Sequence[SweepPoint], judges: Sequence[str], base: str, plot: str = "") -> str:
    lines = [f"# Safety data scaling: SFT of {base} with a share of the safety demonstrations",
             "", f"Judges (fixed for every variant): {', '.join(judges) or '-'}.", "",
             "| " + " | ".join(SWEEP_HEADER) + " |", "|" + "---|" * len(SWEEP_HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in sweep_rows(points)]
    if plot:
        lines += ["", f"![Safety data scaling (Llama 2 Figs. 15, 33)]({plot})"]
    return "\n".join(lines) + "\n"


def sweep_html(points: Sequence[SweepPoint], judges: Sequence[str], base: str, plot: Path | None) -> str:
    """The report as one self-contained page (the plot embedded, like the model card), readable from MLflow's UI."""
    title = f"Safety data scaling: SFT of {base}"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in SWEEP_HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in sweep_rows(points))
    page = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f"<p>Judges (fixed for every variant): {html.escape(', '.join(judges) or '-')}. "
            "Llama 2 §4.2.3, Figs. 15, 33.</p>",
            f"<table border='1' cellpadding='4'><tr>{head}</tr>{body}</table>"]
    if plot is not None:
        page.append(f'<img src="data:image/png;base64,{base64.b64encode(Path(plot).read_bytes()).decode()}"/>')
    return "\n".join(page + ["</body></html>"])


def write_sweep_report(points: Sequence[SweepPoint], judges: Sequence[str], base: str, data: str,
                       folder: str | Path) -> dict[str, Path]:
    """safety-sweep.png, .md (the plot linked), .html (the plot embedded) and .json (the points) in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plot = plot_sweep(points, folder / "safety-sweep.png")
    paths = {"plot": plot, "markdown": folder / "safety-sweep.md", "html": folder / "safety-sweep.html",
             "json": folder / "safety-sweep.json"}
    paths["markdown"].write_text(sweep_markdown(points, judges, base, plot.name))
    paths["html"].write_text(sweep_html(points, judges, base, plot))
    paths["json"].write_text(json.dumps({"base": base, "data": data, "judges": list(judges),
                                         "points": [p.to_dict() for p in points]}, indent=2))
    return paths
