"""Safety data scaling (Llama 2 §4.2.3, Figures 15 and 33): what more safety data does to helpfulness and safety.

The paper fine-tunes the pretrained model on all the helpfulness data plus 0%, 1%, 10%, 25%, 50% or 100% of the
safety data, then judges each variant with the (fixed) helpfulness and safety reward models: the mean safety score
climbs with the share while the mean helpfulness score stays flat (Fig. 15), and the false-refusal rate on
helpful and borderline prompts grows with it (Fig. 33). Here the pieces that are not training or generation:
the nested subsets of the safety rows, the per-variant summary and the plot.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
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
    false_refusal_helpful: float        # refusal classifier on answers to helpfulness prompts
    false_refusal_borderline: float     # ... on answers to the borderline prompts (benign, look risky)
    safety_rm_accuracy: float | None = None  # the safety RM trained on this share, on held-out safety pairs
    safety_rm_pairs: int = 0
    model_dir: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def mean_or_none(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


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
    right.plot(x, [100 * p.false_refusal_helpful for p in points], "o-", label="helpfulness prompts")
    right.plot(x, [100 * p.false_refusal_borderline for p in points], "s-", label="borderline prompts")
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


def sweep_markdown(points: Sequence[SweepPoint], judges: Sequence[str], base: str) -> str:
    lines = [f"# Safety data scaling: SFT of {base} with a share of the safety demonstrations",
             "", f"Judges (fixed for every variant): {', '.join(judges) or '-'}.", "",
             "| safety share | safety rows | helpfulness RM mean | safety RM mean | false refusals (helpful) "
             "| false refusals (borderline) | safety RM trained on the share: held-out accuracy |",
             "|---|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for p in points:
        rm = "-" if p.safety_rm_accuracy is None else f"{p.safety_rm_accuracy:.3f} ({p.safety_rm_pairs} pairs)"
        lines.append(f"| {100 * p.share:.0f}% | {p.safety_rows} | {fmt(p.mean_helpfulness)} | {fmt(p.mean_safety)} | "
                     f"{p.false_refusal_helpful:.3f} | {p.false_refusal_borderline:.3f} | {rm} |")
    return "\n".join(lines) + "\n"
