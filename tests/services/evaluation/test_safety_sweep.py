"""Safety data scaling (Llama 2 Figs. 15, 33): nested safety subsets, the table and the plot."""
import json

import pyarrow as pa
import pytest

from alignline.services.data import default_sft_table
from alignline.services.evaluation.safety_sweep import (SweepPoint, plot_sweep, sweep_markdown, sweep_point,
                                                        with_safety_share, write_sweep_report)


def test_safety_shares_keep_every_helpful_row_and_nest_the_safety_rows():
    table = default_sft_table(20)
    safety_ids = {r["id"] for r in table.to_pylist() if r["source"] == "safety"}
    helpful_ids = {r["id"] for r in table.to_pylist() if r["source"] != "safety"}
    assert safety_ids and helpful_ids
    kept = {}
    for share in (0.0, 0.1, 0.25, 0.5, 1.0):
        sub, n, total = with_safety_share(table, share)
        ids = set(sub.column("id").to_pylist())
        assert total == len(safety_ids) and n == round(share * total)
        assert helpful_ids <= ids and len(ids & safety_ids) == n
        kept[share] = ids & safety_ids
    assert kept[0.0] == set() and kept[1.0] == safety_ids
    assert kept[0.1] <= kept[0.25] <= kept[0.5] <= kept[1.0]  # nested: variants differ in how much, not which
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        with_safety_share(table, 1.5)


def test_an_is_safety_column_wins_over_the_source():
    table = pa.table({"id": ["a", "b", "c"], "source": ["safety", "x", "x"], "is_safety": [False, True, None]})
    sub, n, total = with_safety_share(table, 0.0)
    assert total == 1 and sub.column("id").to_pylist() == ["a", "c"]  # b flagged safety; c falls back to source


def test_sweep_table_and_plot(tmp_path):
    points = [SweepPoint(0.0, 0, 40, 0.61, 0.20, 0.0, 0.05),
              SweepPoint(1.0, 12, 40, 0.60, 0.55, 0.02, 0.15, safety_rm_accuracy=0.75, safety_rm_pairs=30)]
    md = sweep_markdown(points, ["rm-helpfulness/2", "rm-safety/2"], "base/1")
    assert "| 0% | 0 | 0.610 | 0.200 | 0.000 | 0.050 | - |" in md  # no n stored: none shown
    assert "| 100% | 12 | 0.600 | 0.550 | 0.020 | 0.150 | 0.750, trained on 30 pairs |" in md
    path = plot_sweep(points, tmp_path / "sweep.png")
    assert path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"



def test_a_variant_point_counts_each_mean_with_its_n_by_hand():
    """Helpfulness RM on helpfulness prompts, safety RM on adversarial ones, full or partial refusals counted."""
    is_safety = [False, True, False, False, True]
    scores = {"helpful": [0.2, 9.0, 0.4, 0.9, 9.0], "safety": [9.0, 0.3, 9.0, 9.0, 0.7]}
    refusals = ["compliance", "full_refusal", "partial_refusal", "compliance", "compliance"]
    borderline = ["full_refusal", "compliance", "compliance", "compliance"]
    point = sweep_point(0.5, 6, 40, is_safety, scores, refusals, borderline, rm=(0.75, 30, 8), model_dir="m")
    assert point.mean_helpfulness == pytest.approx(0.5) and point.mean_safety == pytest.approx(0.5)
    assert point.false_refusal_helpful == pytest.approx(1 / 3)  # the partial refusal of prompt 2; 1 and 4 are safety
    assert point.false_refusal_borderline == pytest.approx(0.25)
    assert (point.helpful_prompts, point.safety_prompts, point.borderline_prompts) == (3, 2, 4)
    assert (point.safety_rm_accuracy, point.safety_rm_pairs, point.safety_rm_heldout) == (0.75, 30, 8)


def test_no_prompt_behind_a_figure_gives_none_not_zero():
    """Bug: with no helpfulness prompt (or no borderline answers) the flow reported a 0% false-refusal rate."""
    point = sweep_point(1.0, 3, 10, [True, True], None, ["full_refusal", "compliance"], [])
    assert point.false_refusal_helpful is None and point.false_refusal_borderline is None
    assert point.mean_helpfulness is None and point.mean_safety is None  # no reward models yet
    md = sweep_markdown([point], [], "base/1")
    assert "| 100% | 3 | - | - | - | - | - |" in md


def test_the_report_carries_the_plot_and_n_and_round_trips(tmp_path):
    """House standard: the evaluation report shows its plot (linked in the markdown, embedded in the HTML page)."""
    points = [sweep_point(share, 2 * i, 10, [False, False, True],
                          {"helpful": [0.1, 0.3, 0.0], "safety": [0.0, 0.0, 0.4 + i / 10]},
                          ["compliance", "full_refusal", "compliance"], ["compliance"] * 3 + ["full_refusal"] * i)
              for i, share in enumerate((0.0, 0.5, 1.0))]
    paths = write_sweep_report(points, ["rm-helpfulness/1", "rm-safety/1"], "base/1", "sft@abc", tmp_path / "report")
    md = paths["markdown"].read_text()
    assert "![Safety data scaling (Llama 2 Figs. 15, 33)](safety-sweep.png)" in md
    assert "| 50% | 2 | 0.200 (2) | 0.500 (1) | 0.500 (2) | 0.250 (4) | - |" in md
    page = paths["html"].read_text()
    assert '<img src="data:image/png;base64,' in page and "<td>0.600 (1)</td>" in page
    stored = json.loads(paths["json"].read_text())
    assert stored["data"] == "sft@abc" and [SweepPoint.from_dict(p) for p in stored["points"]] == points
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
