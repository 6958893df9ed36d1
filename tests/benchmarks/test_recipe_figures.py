"""benchmarks/recipe_figures.py reads the GAtt, best-of-K, distillation and sweep figures a data dir stored."""
import json

from benchmarks.recipe_figures import main


def test_recipe_figures_from_ledgers_and_sweep_report(tmp_path, capsys):
    stages = {"rejection_sampling": {"model": "policy/2", "best_of_k": [{"k": 1, "max": 0.4, "median": 0.4},
                                                                      {"k": 2, "max": 0.55, "median": 0.4}]},
              "gatt": {"model": "policy/3", "adherence": {"without": {"2": 0.25, "4": 0.0},
                                                          "with": {"2": 1.0, "4": 0.75}}},
              "context_distillation": {"model": "policy/4", "by_category": {"destructive_action": {
                  "prompts": 4, "kept": 3, "safety_before": 0.2, "safety_preprompted": 0.5, "safety_after": 0.45}}}}
    (tmp_path / "iterations").mkdir()
    (tmp_path / "iterations" / "iteration-1.json").write_text(json.dumps({"steps": {"rlhf": {"stages": stages}}}))
    (tmp_path / "iterations" / "iteration-demo.json").write_text(json.dumps({"steps": {}}))
    report = tmp_path / "work" / "sweep" / "abc" / "report"
    report.mkdir(parents=True)
    (report / "safety-sweep.json").write_text(json.dumps({"base": "base/1", "judges": ["rm-helpfulness/1", "rm-safety/1"],
        "points": [{"share": 0.25, "safety_rows": 3, "helpful_rows": 40, "mean_helpfulness": 0.5, "mean_safety": None,
                    "false_refusal_helpful": 0.0, "false_refusal_borderline": 0.1, "safety_rm_accuracy": 0.7,
                    "safety_rm_pairs": 12, "model_dir": "m"}]}))  # a report written before n was stored
    assert main(["--home", str(tmp_path), "--plot", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "| without GAtt | 25% | 0% |" in out and "| with GAtt | 100% | 75% |" in out
    assert "| 2 | 0.5500 | 0.4000 | 0.1500 |" in out
    assert "| destructive_action | 4 | 3 | 0.200 | 0.500 | 0.450 |" in out
    assert "| 25% | 3 | 0.500 | - | 0.000 | 0.100 | 0.700, trained on 12 pairs |" in out
    assert (tmp_path / "plots" / "best-of-k.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "safety-sweep.png").read_bytes()[:4] == b"\x89PNG"  # Figs. 15 and 33 as well


def test_recipe_figures_say_when_there_is_nothing(tmp_path, capsys):
    assert main(["--home", str(tmp_path)]) == 1
    assert "no RLHF iteration or sweep results" in capsys.readouterr().err
