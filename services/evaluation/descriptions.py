"""What a reviewer reads in the MLflow UI: Markdown descriptions of a policy version and of the registered model.

A version's description says what it is (method, parents, datasets), how it was evaluated (against what, on which
held-out set, win rates with intervals, safety) with the gates' verdicts, and where its model card is. The
registered model's description is its promotion history as a table.
"""
from __future__ import annotations

from typing import Any, Sequence


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def _win(w: dict[str, Any]) -> str:
    if not w or w.get("win_rate") is None:
        return "-"
    interval = f" [{_pct(w.get('win_rate_low'))}, {_pct(w.get('win_rate_high'))}]" if "win_rate_low" in w else ""
    return f"{_pct(w['win_rate'])}{interval} over {int(w.get('n', 0))} prompts"


def version_description(ref: str, tags: dict[str, str], report: dict[str, Any], card_uri: str) -> str:
    held = report.get("held_out") or {}
    gates = report.get("gates") or []
    lines = [f"**{ref}**: made by `{tags.get('lineage.method', '?')}` from "
             f"{', '.join(f'`{p}`' for p in tags.get('lineage.parents', '').split(',') if p) or 'no registered parent'}.",
             "",
             f"Datasets: {', '.join(f'`{d}`' for d in tags.get('lineage.datasets', '').split(',') if d) or '-'}.",
             "",
             f"Evaluated against `{report.get('baseline', '?')}` on `{held.get('eval_set', '?')}` "
             f"({held.get('eval_prompts', '?')} held-out prompts, overlap with the lineage = {held.get('overlap', '?')}).",
             "",
             "| measure | value |", "|---|---|",
             f"| win rate, reward models | {_win(report.get('rm_win') or {})} |",
             f"| win rate, oracle | {_win(report.get('oracle_win') or {})} |",
             f"| safety violation rate | {_pct(report.get('safety_violation_rate'))} |",
             f"| false refusal rate | {_pct((report.get('false_refusal') or {}).get('any_refusal'))} |"]
    lines += [f"| suite {name}: {key} | {_pct(value)} |" for name, suite in (report.get("suites") or {}).items()
              for key, value in suite.get("metrics", {}).items() if "." not in key]
    if gates:
        lines += ["", "| gate | result | value | threshold |", "|---|---|---|---|"]
        lines += [f"| {g['name']} | {'pass' if g['passed'] else 'FAIL'} | {_pct(g['value'])} | {_pct(g['threshold'])} |"
                  for g in gates]
    lines += ["", f"Model card: `{card_uri}` (evaluation run artifacts)."]
    return "\n".join(lines)


def history_description(name: str, history: Sequence[dict[str, Any]]) -> str:
    lines = [f"**{name}**: `champion` is what a reviewer promoted through the gates; `candidate` is the latest made.",
             "", "| promoted | version | previous | reviewer | reason | override | gates | gate policy |",
             "|---|---|---|---|---|---|---|---|"]
    for h in reversed(history):
        gates = ", ".join(f"{g['name']}={'pass' if g['passed'] else 'FAIL'}" for g in h.get("gates") or []) or "-"
        policy = h.get("gate_policy") or {}
        lines.append(f"| {h.get('at', '')} | {h.get('version')} | {h.get('previous') or '-'} | {h.get('reviewer')} | "
                     f"{str(h.get('reason', '')).replace('|', '/')} | {'yes' if h.get('override') else 'no'} | {gates} | "
                     f"v{policy.get('version', 0)} |")
    return "\n".join(lines)
