"""Safety data scaling (Llama 2 Figs. 15, 33): nested safety subsets, the table and the plot."""
import pyarrow as pa
import pytest

from alignline.services.data import default_sft_table
from alignline.services.evaluation.safety_sweep import SweepPoint, plot_sweep, sweep_markdown, with_safety_share


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
    assert "| 0% | 0 | 0.610 | 0.200 | 0.000 | 0.050 | - |" in md
    assert "| 100% | 12 | 0.600 | 0.550 | 0.020 | 0.150 | 0.750 (30 pairs) |" in md
    path = plot_sweep(points, tmp_path / "sweep.png")
    assert path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"

