"""benchmarks/rlhf_rounds.py: the RESULTS.md table from stored reports (benchmarks/ is not a package: loaded by path)."""
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "rlhf_rounds.py"


@pytest.fixture(scope="module")
def rounds():
    spec = importlib.util.spec_from_file_location("rlhf_rounds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What `alignline evaluate` stores for policy/5 (PolicyReport.to_dict, win rates with Wilson intervals).
REPORT = {"policy": "policy/5", "baseline": "policy/4", "mean_reward": 0.5204, "mean_oracle": 0.0603,
          "safety_violation_rate": 0.0,
          "rm_win": {"win": 0.5, "tie": 0.0625, "loss": 0.4375, "n": 32, "win_rate": 0.53125,
                     "win_rate_low": 0.3634, "win_rate_high": 0.6923}}
TAGS = {"lineage.method": "rejection_sampling", "lineage.parents": "policy/4,rm-helpfulness/2,rm-safety/2",
        "lineage.iteration": "3", "lineage.reward_models": "rm-helpfulness/2,rm-safety/2"}


def test_a_row_reads_the_report_and_the_lineage(rounds):
    assert rounds.table_row("policy/5", REPORT, TAGS) == [
        "policy/5", "rejection_sampling on policy/4, iteration 3", "0.520", "0.060",
        "0.53 [0.36, 0.69] vs policy/4 (32 prompts)", "0.00"]


def test_champion_against_itself_has_no_win_rate_and_missing_numbers_are_dashes(rounds):
    own = {**REPORT, "policy": "policy/4", "baseline": "policy/4", "mean_reward": None}
    row = rounds.table_row("policy/4", own, {"lineage.method": "sft", "lineage.parents": "base/1"}, ("champion",))
    assert row == ["policy/4", "sft, champion", "-", "0.060", "-", "0.00"]


def test_stage_tags_and_no_interval(rounds):
    report = {**REPORT, "rm_win": {"win_rate": 0.47, "n": 0}}  # an older report: no interval, no count
    tags = {**TAGS, "lineage.method": "ppo", "lineage.parents": "policy/5,rm-helpfulness/2,rm-safety/2",
            "stage.iterations": "10", "stage.heldout": "0.524 -> 0.529"}
    assert rounds.made_by(tags) == "ppo on policy/5, iteration 3, heldout=0.524 -> 0.529, iterations=10"
    assert rounds.win_rate_cell(report) == "0.47 vs policy/4"


def test_markdown_table_has_the_header_and_one_line_per_row(rounds):
    table = rounds.markdown_table([rounds.table_row("policy/5", REPORT, TAGS), ["a|b", "x", "1", "2", "-", "0"]])
    lines = table.splitlines()
    assert lines[0] == ("| policy | made by | mean combined RM score | mean oracle score | "
                        "RM win rate vs baseline [95% interval] | safety violations |")
    assert lines[1] == "|---|---|---|---|---|---|"
    assert lines[2].startswith("| policy/5 | rejection_sampling on policy/4") and len(lines) == 4
    assert lines[3].startswith("| a\\|b |")  # a pipe in a cell does not split the column


class FakeRegistry:
    def __init__(self, versions):
        self._versions = versions

    def versions(self, name):
        return self._versions


def _version(v, *aliases):
    return type("V", (), {"version": str(v), "aliases": aliases})()


def test_default_versions_are_the_champion_and_later(rounds):
    reg = FakeRegistry([_version(1), _version(4, "champion"), _version(5), _version(6, "candidate")])
    assert rounds.default_versions(reg) == ["4", "5", "6"]
    assert rounds.default_versions(FakeRegistry([_version(1), _version(2, "candidate")])) == ["1", "2"]


def test_servers_down_is_one_clear_line(rounds, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.argv", ["rlhf_rounds.py", "--home", str(tmp_path)])
    monkeypatch.setenv("ALIGNLINE_CONFIG", str(tmp_path / "run.toml"))
    (tmp_path / "run.toml").write_text("[servers]\nmlflow_port = 1099\n")  # nothing listens there
    with pytest.raises(SystemExit, match=r"^rlhf_rounds: the MLflow server at http://127\.0\.0\.1:1099 does not "
                                         r"answer; start the data dir's servers with `alignline up`"):
        rounds.main()


def test_reads_stored_reports_and_says_when_there_are_none(rounds, monkeypatch, tmp_path, capsys):
    """The glue on a local MLflow store (no servers): versions, lineage tags and `load_report` as evaluate stores it."""
    from alignline.services.registry import Lineage, Registry
    from alignline.services.tracking import tracked_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)  # a local store's artifacts go to ./mlruns
    monkeypatch.setattr("sys.argv", ["rlhf_rounds.py", "--home", str(tmp_path)])
    monkeypatch.setenv("ALIGNLINE_CONFIG", str(tmp_path / "run.toml"))
    (tmp_path / "run.toml").write_text(f"[servers]\nmlflow_uri = '{uri}'\n")
    with pytest.raises(SystemExit, match=r"^rlhf_rounds: no evaluation report for any policy version at sqlite:///"):
        rounds.main()

    registry, folder = Registry(uri), tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with tracked_run(uri, "rounds-test", "register") as run_id:
        registry.register_dir("policy", folder, Lineage(method="sft", parents=("base/1",)), run_id)
        registry.register_dir("policy", folder, Lineage(method="rejection_sampling", extra={"iteration": "3"},
                                                        parents=("policy/4", "rm-helpfulness/2")), run_id)
        registry.store_report("policy", "2", REPORT, run_id)
    assert rounds.main() == 0  # no champion: every version; policy/1 has no report and is named on stderr
    out, err = capsys.readouterr()
    assert out.splitlines()[2:] == ["| policy/2 | rejection_sampling on policy/4, iteration 3 | 0.520 | 0.060 | "
                                    "0.53 [0.36, 0.69] vs policy/4 (32 prompts) | 0.00 |"]
    assert "No evaluation report (left out): policy/1" in err
