"""The Markdown a reviewer reads in the MLflow UI for a version and for the registered model."""
from alignline.services.evaluation.descriptions import history_description, version_description


def test_version_description_has_lineage_evaluation_intervals_gates_and_card():
    tags = {"lineage.method": "rejection_sampling", "lineage.parents": "policy/1,rm-helpfulness/2",
            "lineage.datasets": "prompts-default@ab,rs-pool@cd"}
    report = {"baseline": "policy/1", "held_out": {"eval_set": "prompts-eval-default@ee", "eval_prompts": 68, "overlap": 0},
              "rm_win": {"win_rate": 0.5625, "win_rate_low": 0.393, "win_rate_high": 0.718, "n": 32},
              "oracle_win": {"win_rate": 0.64, "n": 32}, "safety_violation_rate": 0.0,
              "false_refusal": {"any_refusal": 0.05},
              "suites": {"borderline": {"metrics": {"false_refusal_rate": 0.05, "per_type.x.false_refusal_rate": 0.1}}},
              "gates": [{"name": "win_rate_vs_champion", "passed": True, "value": 0.5625, "threshold": 0.5}]}
    md = version_description("policy/3", tags, report, "runs:/r1/model_card.html")
    assert "made by `rejection_sampling` from `policy/1`, `rm-helpfulness/2`" in md
    assert "on `prompts-eval-default@ee` (68 held-out prompts, overlap with the lineage = 0)" in md
    assert "| win rate, reward models | 0.56 [0.39, 0.72] over 32 prompts |" in md
    assert "| win rate, oracle | 0.64 over 32 prompts |" in md  # no interval recorded: none shown
    assert "| suite borderline: false_refusal_rate | 0.05 |" in md and "per_type" not in md
    assert "| win_rate_vs_champion | pass | 0.56 | 0.50 |" in md and "`runs:/r1/model_card.html`" in md


def test_history_description_is_a_table_newest_first():
    history = [{"at": "t1", "version": "1", "previous": None, "reviewer": "ada", "reason": "start", "override": True,
                "gates": [], "gate_policy": {"version": 0}},
               {"at": "t2", "version": "3", "previous": "1", "reviewer": "grace", "reason": "wins | clearly",
                "override": False, "gates": [{"name": "win_rate_vs_champion", "passed": True}],
                "gate_policy": {"version": 2}}]
    rows = history_description("policy", history).splitlines()[4:]
    assert rows == ["| t2 | 3 | 1 | grace | wins / clearly | no | win_rate_vs_champion=pass | v2 |",
                    "| t1 | 1 | - | ada | start | yes | - | v0 |"]
