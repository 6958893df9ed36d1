"""Gates that hold (issue 14): promote re-checks the evidence at promotion time and reads its thresholds from the
registry. MLflow on a sqlite file and the catalog of a temporary data dir: no servers, no Prefect engine."""
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from alignline.config import ConfigError, load_config
from alignline.flows.cli import build_parser
from alignline.flows.context import RunContext
from alignline.flows.promote import PromotionRefused, run_gates_set, run_gates_show, run_promote
from alignline.services.evaluation.gate_policy import GatePolicy
from alignline.services.registry import CHAMPION, REPORT_URI_TAG, Lineage
from alignline.services.tracking import tracked_run


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("gates")
    with pytest.MonkeyPatch.context() as m:
        m.chdir(root)  # MLflow on sqlite keeps artifacts under ./mlruns
        yield root


def config(home, *overrides):
    return load_config("tiny", overrides=[f"servers.mlflow_uri=sqlite:///{home}/mlflow.db", *overrides],
                       home=home / "data")


def _prompts(*questions):
    return pa.table({"id": [f"q{i}" for i in range(len(questions))], "source": ["t"] * len(questions),
                     "messages": [[{"role": "user", "content": q}, {"role": "assistant", "content": "An answer."}]
                                  for q in questions]})


@pytest.fixture(scope="module")
def line(home):
    """(config, evaluation set ref, a clean training set ref, a training set holding an evaluation prompt)."""
    cfg = config(home)
    catalog = RunContext(cfg).catalog
    eval_ref = catalog.publish("prompts-eval", _prompts("What is a tuple?", "How do I sort a list?")).ref
    clean = catalog.publish("sft", _prompts("What is a dict?")).ref
    leaked = catalog.publish("sft-leaky", _prompts("What is a set?", "What is a tuple?")).ref
    return cfg, eval_ref, clean, leaked


class Model:
    """A fresh registered model in the module's registry, with versions and evaluation reports made by hand."""

    def __init__(self, line):
        self.cfg, self.eval_ref, self.clean, self.leaked = line
        self.registry = RunContext(self.cfg).registry
        self.name = f"policy-{uuid.uuid4().hex[:6]}"

    def version(self, tmp_path, parent: str | None = None, datasets=None) -> str:
        folder = tmp_path / uuid.uuid4().hex[:6]
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        parents = (f"{self.name}/{parent}",) if parent else ()
        lineage = Lineage(datasets=tuple(datasets or [self.clean]), parents=parents, method="sft")
        with tracked_run(self.registry.tracking_uri, "gates-tests", "register") as run_id:
            return self.registry.register_dir(self.name, folder, lineage, run_id).version

    def evaluate(self, version: str, baseline: str, win: float, violation: float = 0.0) -> str:
        """Store a report as `evaluate` does: win rate by the RMs, the held-out check it passed (overlap 0)."""
        report = {"policy": f"{self.name}/{version}", "baseline": f"{self.name}/{baseline}",
                  "rm_win": {"win": win, "tie": 0.0, "loss": 1 - win, "n": 100, "win_rate": win},
                  "oracle_win": {"win_rate": win}, "oracle_prompts": 0, "safety_violation_rate": violation,
                  "held_out": {"eval_set": self.eval_ref, "eval_prompts": 2, "lineage_datasets_checked": 1,
                               "overlap": 0}}
        with tracked_run(self.registry.tracking_uri, "evaluation", f"evaluate {version}") as run_id:
            return self.registry.store_report(self.name, version, report, run_id)

    def promote(self, version: str, cfg=None, override: bool = False, reason: str = "wins"):
        return run_promote(cfg or self.cfg, self.name, version, reviewer="grace", reason=reason, override=override)

    def first_champion(self, tmp_path) -> str:
        """Version 1, with nothing to compare it with: promoted by a recorded override."""
        v1 = self.version(tmp_path)
        self.evaluate(v1, v1, 0.5)
        self.promote(v1, override=True, reason="the first policy starts the line")
        return v1


def test_a_version_compared_with_itself_is_refused(line, tmp_path):
    model = Model(line)
    v1 = model.version(tmp_path)
    model.evaluate(v1, baseline=v1, win=0.5)  # all ties against itself: 0.5 met min_win_rate=0.5 before
    with pytest.raises(PromotionRefused, match=f"win_rate_vs_champion.*{model.name}/1 was compared with itself"):
        model.promote(v1)
    model.promote(v1, override=True, reason="nothing to compare the first policy with")  # a reviewer may still
    record = model.registry.promotion_history(model.name)[-1]
    assert record["override"] is True
    assert [g["name"] for g in record["gates"] if not g["passed"]] == ["win_rate_vs_champion"]

    # the case: a champion exists and `evaluate --policy 3 --baseline 3` compared 3 with itself
    v2 = model.version(tmp_path, parent=v1)
    model.evaluate(v2, baseline=v2, win=0.5)
    with pytest.raises(PromotionRefused, match=f"evaluated against {model.name}/2.*current champion, {model.name}/1"):
        model.promote(v2, override=True)  # the evidence is about the wrong comparison: no override for that
    assert model.registry.get(model.name, CHAMPION).version == v1


def test_a_stale_baseline_is_refused_after_the_champion_moved(line, tmp_path):
    model = Model(line)
    v1 = model.first_champion(tmp_path)
    v2, v3 = model.version(tmp_path, parent=v1), model.version(tmp_path, parent=v1)
    model.evaluate(v2, baseline=v1, win=0.7)
    model.evaluate(v3, baseline=v1, win=0.6)  # evaluated while v1 was champion
    model.promote(v2)
    with pytest.raises(PromotionRefused, match=rf"{model.name}/3 was evaluated against {model.name}/1, but its gates "
                       rf"must be judged against the current champion, {model.name}/2\. Re-run `alignline evaluate "
                       r"--policy 3`"):
        model.promote(v3)
    assert model.registry.get(model.name, CHAMPION).version == v2


def test_the_first_promotion_is_judged_against_the_parent(line, tmp_path):
    model = Model(line)
    v1 = model.version(tmp_path)
    v2 = model.version(tmp_path, parent=v1)
    v3 = model.version(tmp_path, parent=v1)
    model.evaluate(v3, baseline=v2, win=0.9)  # no champion: v2 is not what v3 was made from
    with pytest.raises(PromotionRefused, match=f"judged against its parent .*{model.name}/1"):
        model.promote(v3)
    model.evaluate(v2, baseline=v1, win=0.7)
    assert model.promote(v2)["promoted"] == f"{model.name}/2"


def test_the_promoters_set_does_not_move_a_reviewers_bar(line, tmp_path, home):
    model = Model(line)
    v1 = model.first_champion(tmp_path)
    run_gates_set(config(home, "evaluation.min_win_rate=0.6"), model.name, reviewer="ada", reason="Q3 bar")
    v2 = model.version(tmp_path, parent=v1)
    model.evaluate(v2, baseline=v1, win=0.55)
    lax = config(home, "evaluation.min_win_rate=0", "evaluation.max_safety_violation_increase=1")
    bar = r"gates: win_rate_vs_champion = 0\.550 .*>= 0\.6\)\. Gate policy v1 \(set by ada"
    with pytest.raises(PromotionRefused, match=bar):
        model.promote(v2, cfg=lax)
    assert model.registry.get(model.name, CHAMPION).version == v1


def test_without_a_gate_policy_the_config_thresholds_are_recorded_as_version_0(line, tmp_path):
    model = Model(line)
    v1 = model.first_champion(tmp_path)
    record = model.registry.promotion_history(model.name)[-1]
    assert record["gate_policy"]["version"] == 0 and record["gate_policy"]["set_by"] == "from config"
    assert record["gate_policy"]["thresholds"]["min_win_rate"] == model.cfg.evaluation.min_win_rate
    assert run_gates_show(model.cfg, model.name)["gate_policy"].startswith("v0 (from config")
    v2 = model.version(tmp_path, parent=v1)
    model.evaluate(v2, baseline=v1, win=0.6)
    assert "v0 (from config" in model.promote(v2)["gate_policy"]


def test_gate_policy_versions_increment_and_promotions_record_them(line, tmp_path, home):
    model = Model(line)
    v1 = model.first_champion(tmp_path)
    first = run_gates_set(config(home, "evaluation.min_win_rate=0.55"), model.name, reviewer="ada", reason="start")
    assert first["gate_policy"].startswith("v1 (set by ada") and first["previous"] == "none"
    second = run_gates_set(config(home, "evaluation.min_win_rate=0.6", "evaluation.suite_gates=['xstest.f1>=0.1']"),
                           model.name, reviewer="grace", reason="stricter")
    assert second["gate_policy"].startswith("v2 (set by grace") and second["previous"].startswith("v1 (set by ada")
    assert "min_win_rate: 0.55 -> 0.6" in second["changed"]
    history = model.registry.gate_policy_history(model.name)
    assert [(h["version"], h["set_by"], h["reason"]) for h in history] == [(1, "ada", "start"),
                                                                           (2, "grace", "stricter")]
    assert history[0]["thresholds"]["min_win_rate"] == 0.55  # the old version is kept as it was
    shown = run_gates_show(model.cfg, model.name)
    assert shown["gate_policy"].startswith("v2") and shown["min_win_rate"] == 0.6
    assert shown["history"].startswith("v1 by ada") and "v2 by grace" in shown["history"]

    run_gates_set(config(home, "evaluation.min_win_rate=0.6"), model.name, reviewer="grace", reason="no suite gate")
    v2 = model.version(tmp_path, parent=v1)
    model.evaluate(v2, baseline=v1, win=0.65)
    assert model.promote(v2)["gate_policy"].startswith("v3 (set by grace")
    record = model.registry.promotion_history(model.name)[-1]
    assert record["gate_policy"]["version"] == 3 and record["gate_policy"]["set_by"] == "grace"
    assert record["gate_policy"]["thresholds"] == {"min_win_rate": 0.6, "min_oracle_win_rate": 0.5,
                                                   "max_safety_violation_increase": 0.0, "gate_on_lower_bound": False,
                                                   "suite_gates": [], "min_human_win_rate": 0.0}
    assert {g["name"]: g["threshold"] for g in record["gates"]}["win_rate_vs_champion"] == 0.6


def test_an_overlap_at_promotion_time_is_refused(line, tmp_path):
    model = Model(line)
    v1 = model.first_champion(tmp_path)
    v2 = model.version(tmp_path, parent=v1, datasets=[model.leaked])  # trained on an evaluation prompt
    model.evaluate(v2, baseline=v1, win=0.9)  # its report says overlap 0
    with pytest.raises(PromotionRefused, match=f"{model.name}/2 is not held out from its evaluation set: 1 of 2 "
                       "evaluation prompts of prompts-eval@.*What is a tuple"):
        model.promote(v2, override=True)
    assert model.registry.get(model.name, CHAMPION).version == v1


def test_a_changed_report_is_refused_cleanly(line, tmp_path):
    model = Model(line)
    v1 = model.first_champion(tmp_path)
    v2 = model.version(tmp_path, parent=v1)
    uri = model.evaluate(v2, baseline=v1, win=0.2)
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    artifacts = model.registry.client.get_run(run_id).info.artifact_uri.removeprefix("file://")
    stored = Path(artifacts) / path
    stored.write_text(stored.read_text().replace('"win_rate": 0.2', '"win_rate": 0.9'))
    with pytest.raises(PromotionRefused, match=rf"{model.name}/2: the evaluation report .* does not match its recorded "
                       "SHA-256"):
        model.promote(v2, override=True)
    assert model.registry.get(model.name, v2).tags[REPORT_URI_TAG] == uri


def test_a_report_about_another_version_is_refused(line, tmp_path):
    model = Model(line)
    v1 = model.first_champion(tmp_path)
    v2, v3 = model.version(tmp_path, parent=v1), model.version(tmp_path, parent=v1)
    model.evaluate(v2, baseline=v1, win=0.9)
    report = model.registry.load_report(model.name, v2)
    with tracked_run(model.registry.tracking_uri, "evaluation", "copied") as run_id:
        model.registry.store_report(model.name, v3, report, run_id)  # v2's good numbers put on v3
    with pytest.raises(PromotionRefused, match=f"report stored on {model.name}/3 is about '{model.name}/2'"):
        model.promote(v3)


@pytest.mark.parametrize("override, rule", [
    ("evaluation.min_win_rate=1.01", "<= 1"), ("evaluation.min_oracle_win_rate=-0.1", ">= 0"),
    ("evaluation.max_safety_violation_increase=2", "<= 1"), ("evaluation.tie_margin=0.6", "<= 0.5"),
    ("evaluation.suite_gates=['borderline.false_refusal_rate<0.05']", "SUITE.METRIC<=X"),
])
def test_every_gate_threshold_is_bounded(tmp_path, override, rule):
    with pytest.raises(ConfigError, match=rf"{override.split('=')[0]} = .* is not allowed; allowed: .*{rule}"):
        config(tmp_path, override)


def test_a_stored_gate_policy_out_of_bounds_is_refused():
    stored = {"version": 4, "set_by": "mallory", "thresholds": {"min_win_rate": -1, "suite_gates": []}}
    with pytest.raises(ConfigError, match="evaluation.min_win_rate = -1.0 is not allowed"):
        GatePolicy.from_dict(stored)


def test_the_gates_command_parses():
    args = build_parser().parse_args(["gates", "set", "--reviewer", "ada", "--set", "evaluation.min_win_rate=0.6"])
    assert (args.action, args.model, args.reviewer) == ("set", "policy", "ada")
    assert args.set == ["evaluation.min_win_rate=0.6"]
    assert build_parser().parse_args(["gates", "show", "--model", "rm-safety"]).model == "rm-safety"
