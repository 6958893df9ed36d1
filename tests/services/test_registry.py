"""The registry against a real MLflow server: register with lineage, aliases, promotion history."""
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from alignline.services.registry import CANDIDATE, CHAMPION, REPORT_DIGEST_TAG, Lineage, Registry, RegistryError
from alignline.services.tracking import tracked_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registry(servers):
    return Registry(servers.servers.url(servers.servers.mlflow_port))


def _register(registry, name, tmp_path, marker):
    folder = tmp_path / f"model-{marker}"
    folder.mkdir()
    (folder / "config.json").write_text('{"marker": "%s"}' % marker)
    with tracked_run(registry.tracking_uri, "registry-tests", f"register {marker}") as run_id:
        return registry.register_dir(name, folder, Lineage(datasets=("corpus@abc",), parents=("base/1",),
                                                           config_hash="cfg1", method="sft"), run_id)


def test_register_records_lineage_and_candidate(registry, tmp_path):
    name = f"policy-{uuid.uuid4().hex[:6]}"
    v = _register(registry, name, tmp_path, "one")
    assert v.version == "1" and CANDIDATE in v.aliases
    assert v.tags["lineage.datasets"] == "corpus@abc" and v.tags["lineage.parents"] == "base/1"
    assert v.tags["lineage.method"] == "sft" and v.tags["lineage.config_hash"] == "cfg1"
    # the commit of this checkout (the "unknown" fallback must not hide a broken lookup when git works)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert v.tags["lineage.git_commit"] == (head.stdout.strip() if head.returncode == 0 else "unknown")
    folder, info = registry.download(name, CANDIDATE, tmp_path / "dl")
    assert '"one"' in (folder / "config.json").read_text() and info.version == "1"


def test_promote_moves_champion_and_keeps_history(registry, tmp_path):
    name = f"policy-{uuid.uuid4().hex[:6]}"
    _register(registry, name, tmp_path, "a")
    _register(registry, name, tmp_path, "b")
    assert registry.latest(name).version == "2"  # no champion yet: candidate
    registry.promote(name, "1", reviewer="ada", reason="first release")
    assert registry.latest(name).version == "1"  # champion wins over candidate
    gates = [{"name": f"gate_{i}", "passed": True, "value": 0.6, "threshold": 0.5, "rule": "x" * 300} for i in range(40)]
    record = registry.promote(name, "2", reviewer="grace", reason="wins 60%", gates=gates)
    assert record["previous"] == "1"
    assert registry.get(name, CHAMPION).version == "2"
    history = registry.promotion_history(name)
    assert [(h["version"], h["reviewer"], h["previous"]) for h in history] == [("1", "ada", None), ("2", "grace", "1")]
    assert history[1]["gates"] == gates  # in full: 40 gates of ~350 characters would not fit a 5,000-character tag
    tags = registry.get(name, "2").tags
    assert tags["promotion.reviewer"] == "grace" and tags["promotion.reason"] == "wins 60%"


def test_promote_needs_reviewer_and_reason(registry, tmp_path):
    name = f"policy-{uuid.uuid4().hex[:6]}"
    _register(registry, name, tmp_path, "a")
    with pytest.raises(RegistryError, match="reviewer and a reason"):
        registry.promote(name, "1", reviewer="", reason="x")
    with pytest.raises(RegistryError, match="no version or alias"):
        registry.get(name, CHAMPION)


def test_a_50kb_report_roundtrips_and_a_changed_one_is_refused(registry, tmp_path):
    name = f"policy-{uuid.uuid4().hex[:6]}"
    _register(registry, name, tmp_path, "a")
    report = {"policy": f"{name}/1", "rows": [{"prompt": f"p{i}", "answer": "y" * 90} for i in range(500)]}
    assert len(json.dumps(report)) > 50_000
    with tracked_run(registry.tracking_uri, "registry-tests", "evaluate") as run_id:
        registry.store_report(name, "1", report, run_id)
    assert registry.load_report(name, "1") == report
    registry.set_tags(name, "1", {REPORT_DIGEST_TAG: "0" * 64})
    with pytest.raises(RegistryError, match="does not match its recorded SHA-256"):
        registry.load_report(name, "1")
