"""`alignline release`: a champion's release stack from the real MLflow registry, loaded back with transformers and
checked against its manifest (issue 17.5)."""
import hashlib
import json
import tarfile
import uuid

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignline.flows.cli import main
from alignline.flows.context import RunContext
from alignline.services.models import build_model, save_model
from alignline.services.registry import Lineage
from alignline.services.release import ReleaseError, fill, verify
from alignline.services.tracking import log_artifact, tracked_run
from tests.conftest import TEST_HOME, TEST_SERVER_OVERRIDES
from tests.services.conftest import micro_config, real_texts, tokenizer  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

DATASET = "sft-default@0123456789abcdef"
ACCURACY = {"significantly_better": 0.9, "better": 0.75, "slightly_better": 0.6, "negligibly_better": 0.52}


def _cli(*args: str) -> int:
    sets = [x for o in TEST_SERVER_OVERRIDES for x in ("--set", o)]
    return main([*args, "--home", str(TEST_HOME), *sets])


@pytest.fixture()
def registered(servers, tokenizer, micro_config, tmp_path):
    """A policy version made from a reward model and a dataset, evaluated (report, suites, HTML card): a candidate."""
    registry, tag = RunContext(servers).registry, uuid.uuid4().hex[:6]
    name, rm = f"policy-{tag}", f"rm-helpfulness-{tag}"
    rm_dir = tmp_path / "rm"
    rm_dir.mkdir()
    (rm_dir / "config.json").write_text('{"architectures": ["LlamaForSequenceClassification"]}')
    (tmp_path / "table.md").write_text("| level | accuracy |\n")
    with tracked_run(registry.tracking_uri, "release-tests", "reward") as run_id:
        rm_info = registry.register_dir(rm, rm_dir, Lineage(datasets=("comparisons@89abcdef01234567",), method="reward"), run_id)
        log_artifact(registry.tracking_uri, run_id, tmp_path / "table.md", artifact_path="eval")
    registry.set_tags(rm, rm_info.version, {"eval.accuracy_by_level": json.dumps(ACCURACY)})
    policy_dir = save_model(build_model(micro_config, tokenizer=tokenizer, seed=5), tokenizer, tmp_path / "policy")
    with tracked_run(registry.tracking_uri, "release-tests", "sft") as run_id:
        info = registry.register_dir(name, policy_dir, Lineage(datasets=(DATASET,), parents=(rm_info.ref,), method="sft"), run_id)
    report = {"policy": info.ref, "baseline": f"{name}/0", "rm_win": {"win_rate": 0.625, "n": 16},
              "oracle_win": {"win_rate": 0.5}, "safety_violation_rate": 0.0, "held_out": {"eval_set": "prompts-eval@1"},
              "suites": {"borderline": {"metrics": {"false_refusal_rate": 0.125}}}, "gates": []}
    (tmp_path / "model_card.html").write_text("<html><body>card of the evaluation</body></html>")
    with tracked_run(registry.tracking_uri, "release-tests", "evaluate") as run_id:
        registry.store_report(name, info.version, report, run_id)
        log_artifact(registry.tracking_uri, run_id, tmp_path / "model_card.html")
        registry.set_tags(name, info.version, {"eval.card": f"runs:/{run_id}/model_card.html"})
    return registry, name, info, policy_dir, rm_info


def test_only_the_champion_is_released_unless_allowed(registered, tmp_path, capsys):
    registry, name, info, _, _ = registered
    assert _cli("release", name, info.version, "--dest", str(tmp_path / "dist")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not the champion" in err and "--allow-candidate" in err
    assert not (tmp_path / "dist").exists()
    assert _cli("release", name, info.version, "--dest", str(tmp_path / "dist"), "--allow-candidate") == 0
    manifest = json.loads((tmp_path / "dist" / f"{name}-v{info.version}" / "manifest.json").read_text())
    assert manifest["champion"] is False and manifest["allow_candidate"] is True
    capsys.readouterr()
    assert _cli("release", f"{name}-missing", "1", "--dest", str(tmp_path / "dist")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no version or alias" in err and "alignline status" in err


def test_champion_release_loads_with_transformers_and_matches_its_manifest(registered, tmp_path):
    registry, name, info, policy_dir, rm_info = registered
    registry.promote(name, info.version, reviewer="ada", reason="release test")
    dest = tmp_path / "dist"
    assert _cli("release", name, "champion", "--dest", str(dest), "--set", "release.organization=ACME ML",
                "--set", "release.gguf=true", "--set", "release.gguf_type=f32") == 0
    folder = dest / f"{name}-v{info.version}"
    # transformers loads the folder as it is; the weights are the registered ones, the chat template rides along
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    original = AutoModelForCausalLM.from_pretrained(policy_dir, local_files_only=True)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), original.state_dict().values()))
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert "[/INST]" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                add_generation_prompt=True)
    assert not list(folder.glob("*.bin")) and (folder / "model.safetensors").is_file()
    # the manifest lists every other file with its SHA-256, and the lineage
    manifest = json.loads((folder / "manifest.json").read_text())
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk and verify(folder) == []
    for rel, entry in manifest["files"].items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == entry["sha256"]
    assert manifest["model"] == info.ref and manifest["champion"] is True
    assert manifest["lineage"]["datasets"] == [DATASET, "comparisons@89abcdef01234567"]
    assert [m["ref"] for m in manifest["lineage"]["models"]] == [info.ref, rm_info.ref]
    assert manifest["evaluation"]["headline"]["rm_win_rate"] == 0.625
    # the GGUF export (llama.cpp) loads back through transformers' GGUF reader with the same weights
    assert manifest["gguf"]["exported"] is True
    gguf = folder / manifest["gguf"]["file"]
    from_gguf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert all(torch.equal(a, b) for a, b in zip(from_gguf.state_dict().values(), original.state_dict().values()))
    # the Hugging Face card's metadata, the HTML card, reward-model tables, license and policy
    front = yaml.safe_load((folder / "README.md").read_text().split("---\n")[1])
    assert front["license"] == "other" and front["license_link"] == "LICENSE" and DATASET in front["datasets"]
    metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics["rm_win_rate"] == 0.625 and metrics["borderline.false_refusal_rate"] == 0.125
    assert "card of the evaluation" in (folder / "evaluation" / "model_card.html").read_text()
    assert json.loads((folder / "evaluation" / "report.json").read_text())["rm_win"]["win_rate"] == 0.625
    assert json.loads((folder / "reward_models" / "accuracy_by_level.json").read_text()) == {rm_info.ref: ACCURACY}
    assert (folder / "reward_models" / rm_info.ref.replace("/", "-v") / "table.md").is_file()
    assert "ACME ML" in (folder / "LICENSE").read_text() and "ACME ML" in (folder / "ACCEPTABLE_USE_POLICY.md").read_text()
    # one archive holding the same files, its SHA-256 beside it
    archive = dest / f"{folder.name}.tar.gz"
    digest, fname = (dest / f"{folder.name}.tar.gz.sha256").read_text().split()
    assert fname == archive.name and hashlib.sha256(archive.read_bytes()).hexdigest() == digest
    with tarfile.open(archive) as tar:
        assert {m.name for m in tar.getmembers() if m.isfile()} == {f"{folder.name}/{p}" for p in on_disk | {"manifest.json"}}
    # a rerun keeps the intact release; a changed file is found and a rerun refuses to overwrite it
    assert _cli("release", name, info.version, "--dest", str(dest)) == 0
    (folder / "LICENSE").write_text("edited")
    assert verify(folder) == ["changed: LICENSE"]
    assert _cli("release", name, info.version, "--dest", str(dest)) == 1


def test_a_version_without_a_report_is_refused_with_the_fix(prefect_server, tokenizer, micro_config, tmp_path):
    from alignline.flows.release import run_release

    servers = prefect_server
    registry, name = RunContext(servers).registry, f"policy-{uuid.uuid4().hex[:6]}"
    folder = save_model(build_model(micro_config, tokenizer=tokenizer), tokenizer, tmp_path / "p")
    with tracked_run(registry.tracking_uri, "release-tests", "sft") as run_id:
        registry.register_dir(name, folder, Lineage(method="sft"), run_id)
    with pytest.raises(ReleaseError, match="alignline evaluate --policy 1"):
        run_release(servers, name, "1", str(tmp_path / "dist"), allow_candidate=True)


def test_team_templates_keep_their_own_braces():
    assert fill("{model} by {organization}; keep {this}", {"model": "policy v3", "organization": "ACME"}) == \
        "policy v3 by ACME; keep {this}"
