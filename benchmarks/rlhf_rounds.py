"""The "rlhf rounds" table of RESULTS.md: each policy version's stored evaluation report, one row per version.

    python benchmarks/rlhf_rounds.py [--home .alignline] [--versions 4,5,6]

Needs the data dir's servers (`alignline up`) and policy versions evaluated by `alignline evaluate`.
Without --versions: the champion and every later version (every version when there is no champion).
Each row reads the version's report (`Registry.load_report`) and its `lineage.*` tags; nothing is recomputed.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

import requests

from alignline.config import load_config
from alignline.flows.context import RunContext
from alignline.services.registry import CHAMPION, Registry, RegistryError

POLICY = "policy"
HEADER = ("policy", "made by", "mean combined RM score", "mean oracle score", "RM win rate vs baseline [95% interval]",
          "safety violations")


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def made_by(tags: dict[str, str], aliases: tuple[str, ...] = ()) -> str:
    """Method, parent policy and iteration from the version's lineage tags, plus any `stage.*` tags."""
    method = tags.get("lineage.method") or "?"
    policy_parents = [p for p in tags.get("lineage.parents", "").split(",") if p.startswith(f"{POLICY}/")]
    parts = [method + (f" on {policy_parents[0]}" if policy_parents else "")]
    if tags.get("lineage.iteration"):
        parts.append(f"iteration {tags['lineage.iteration']}")
    parts += [f"{k.removeprefix('stage.')}={v}" for k, v in sorted(tags.items()) if k.startswith("stage.")]
    if CHAMPION in aliases:
        parts.append("champion")
    return ", ".join(parts)


def win_rate_cell(report: dict[str, Any]) -> str:
    """'0.53 [0.36, 0.70] vs policy/4 (32 prompts)'; '-' when the report compares the version with itself."""
    rm = report.get("rm_win") or {}
    if not rm or rm.get("win_rate") is None or report.get("baseline") == report.get("policy"):
        return "-"
    cell = _num(rm["win_rate"], 2)
    if rm.get("win_rate_low") is not None and rm.get("win_rate_high") is not None:
        cell += f" [{_num(rm['win_rate_low'], 2)}, {_num(rm['win_rate_high'], 2)}]"
    cell += f" vs {report.get('baseline', '?')}"
    return cell + (f" ({rm['n']} prompts)" if rm.get("n") else "")


def table_row(ref: str, report: dict[str, Any], tags: dict[str, str], aliases: tuple[str, ...] = ()) -> list[str]:
    return [ref, made_by(tags, aliases), _num(report.get("mean_reward")), _num(report.get("mean_oracle")),
            win_rate_cell(report), _num(report.get("safety_violation_rate"), 2)]


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows])


def default_versions(registry: Registry) -> list[str]:
    versions = registry.versions(POLICY)
    champion = next((int(v.version) for v in versions if CHAMPION in v.aliases), 0)
    return [v.version for v in versions if int(v.version) >= champion]


def check_server(uri: str) -> None:
    if not uri.startswith("http"):
        return  # a local store (sqlite:///, file:) needs no server
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
    except requests.RequestException:
        raise SystemExit(f"rlhf_rounds: the MLflow server at {uri} does not answer; start the data dir's servers "
                         f"with `alignline up` (same --home)") from None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=".alignline", help="data dir (default .alignline)")
    ap.add_argument("--versions", default=None, help="policy versions, e.g. 4,5,6 (default: champion and later)")
    args = ap.parse_args()
    uri = RunContext(load_config(home=args.home)).mlflow_uri
    check_server(uri)
    registry = Registry(uri)
    try:
        versions = [v.strip() for v in args.versions.split(",")] if args.versions else default_versions(registry)
        rows, missing = [], []
        for version in versions:
            info = registry.get(POLICY, version)
            report = registry.load_report(POLICY, info.version)
            if report is None:
                missing.append(info.ref)
                continue
            rows.append(table_row(info.ref, report, info.tags, info.aliases))
    except RegistryError as e:
        raise SystemExit(f"rlhf_rounds: {e}") from None
    if not rows:
        raise SystemExit(f"rlhf_rounds: no evaluation report for {', '.join(missing) or 'any policy version'} at "
                         f"{uri}; run `alignline evaluate` on them first")
    print(markdown_table(rows))
    if missing:
        print(f"\nNo evaluation report (left out): {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
