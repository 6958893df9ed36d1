"""collect -> bot annotators -> harvest against the real Label Studio, sampling from a tiny Llama.

Covers: idempotent import (rerun imports nothing), bot users annotating through the API,
skips and drafts counted, a harvest killed between publish and ledger recording each
annotation exactly once, lineage of the published comparisons.
"""
import json
import shutil
import uuid

import pytest
import requests

from alignline.annotation import Judgement, connect, find_project, result_for
from alignline.config import load_config
from alignline.flows.annotate import run_bot
from alignline.flows.collect import run_collect
from alignline.flows.harvest import run_harvest
from alignline.services.generation import SamplingParams, generate_chat
from alignline.services.models import build_model
from alignline.storage import Catalog
from tests.conftest import TEST_HOME, TEST_SERVER_OVERRIDES
from tests.services.conftest import micro_config, real_texts, tokenizer  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_sampler(tokenizer, micro_config):
    import torch

    torch.manual_seed(0)
    model = build_model(micro_config, tokenizer=tokenizer)

    def sample(dialogues, temperature, seed):
        params = SamplingParams(max_new_tokens=12, temperature=temperature, top_p=0.9, seed=seed)
        return generate_chat(model, tokenizer, dialogues, params), "policy/1"
    return sample


@pytest.fixture
def cfg(prefect_server, tmp_path):
    (tmp_path / "secrets").mkdir(mode=0o700)
    shutil.copy(TEST_HOME / "secrets" / "label-studio.json", tmp_path / "secrets" / "label-studio.json")
    run = uuid.uuid4().hex[:8]
    return load_config(overrides=[*TEST_SERVER_OVERRIDES, f"annotation.helpfulness_project=help {run}",
                                  f"annotation.safety_project=safety {run}", "annotation.prompts_per_batch=8",
                                  "annotation.stdlib_prompts=40", "annotation.overlap_share=0.5"], home=tmp_path)


def test_collect_annotate_harvest_exactly_once(cfg, tiny_sampler, monkeypatch):
    first = run_collect(cfg, iteration=1, batch=1, sampler=tiny_sampler)
    imported = first["helpfulness"]["imported"] + first["safety"]["imported"]
    assert first["safety"]["imported"] == 2 and imported + first["identical_pairs_dropped"] == 8
    again = run_collect(cfg, iteration=1, batch=1, sampler=tiny_sampler)
    assert again["helpfulness"]["imported"] == again["safety"]["imported"] == 0

    bots = run_bot(cfg)
    assert bots["helpfulness/bot-1"]["submitted"] == first["helpfulness"]["imported"]
    assert 0 < bots["helpfulness/bot-2"]["submitted"] < bots["helpfulness/bot-1"]["submitted"]  # overlap share only

    # A second batch: the admin skips one task and leaves a draft on another before the bots come.
    url, token = cfg.servers.url(cfg.servers.label_studio_port), json.loads((cfg.home / "secrets" / "label-studio.json").read_text())["token"]
    admin = connect(url, token)
    run_collect(cfg, iteration=1, batch=2, sampler=tiny_sampler)
    project = find_project(admin, cfg.annotation.helpfulness_project)
    fresh = [t for t in admin.tasks.list(project=project, fields="all") if not t.annotations]
    admin.annotations.create(id=fresh[0].id, result=[], was_cancelled=True)
    draft = requests.post(f"{url}/api/tasks/{fresh[1].id}/drafts", headers={"Authorization": f"Token {token}"},
                          json={"result": result_for(Judgement("a", "better")), "lead_time": 2.0})
    assert draft.status_code == 201, draft.text
    run_bot(cfg)

    # Killed after publishing, before the ledger file is written: the rerun must not record anything twice.
    import alignline.flows.harvest as harvest_flow

    real = harvest_flow.harvest

    def killed(*args, **kwargs):
        return real(*args, **kwargs, after_publish=lambda: (_ for _ in ()).throw(KeyboardInterrupt("killed")))
    monkeypatch.setattr("alignline.flows.harvest.harvest", killed)
    with pytest.raises(BaseException, match="killed"):
        run_harvest(cfg)
    monkeypatch.setattr("alignline.flows.harvest.harvest", real)
    out = run_harvest(cfg)
    assert out["helpfulness"]["new_annotations"] == 0  # the killed run's publish already recorded them
    final = run_harvest(cfg)
    assert final["helpfulness"]["new_annotations"] == 0 and final["safety"]["new_annotations"] == 0

    catalog = Catalog(cfg.home / "lake")
    table = catalog.read("comparisons-helpfulness").to_pylist()
    submitted = [a for t in admin.tasks.list(project=project, fields="all") for a in (t.annotations or [])
                 if not a["was_cancelled"]]
    assert sorted(r["annotation_id"] for r in table) == sorted(a["id"] for a in submitted)
    assert {r["margin_level"] for r in table} <= {"significantly_better", "better", "slightly_better", "negligibly_better"}
    assert all(r["chosen"] != r["rejected"] and r["annotator"].startswith("annotator-bot-") for r in table)
    assert {r["chosen_policy"] for r in table} == {"policy/1"} and all(r["lead_time_s"] >= 0 for r in table)
    meta = catalog.get("comparisons-helpfulness").metadata
    assert meta["agreement"]["overlapping_tasks"] > 0 and meta["agreement"]["preference_agreement"] == 1.0
    version = catalog.get("comparisons-helpfulness")
    assert any(p.startswith("preference-tasks-helpfulness@") for p in version.parents)
    assert catalog.get("preference-tasks-helpfulness").parents[0].startswith("prompts-default@")
    safety = catalog.read("comparisons-safety").to_pylist()
    assert safety and all(r["safety_category"] != "chosen_unsafe_rejected_safe" for r in safety)
    assert meta["counts"]["skipped"] == 1 and meta["counts"]["drafts"] == 1  # counted, not used
    quarantined = catalog.read("comparisons-helpfulness-quarantine").to_pylist()
    skipped = [a["id"] for t in admin.tasks.list(project=project, fields="all") for a in (t.annotations or [])
               if a["was_cancelled"]]
    assert [(q["record_id"], q["reason"]) for q in quarantined] == [(str(skipped[0]), "skipped")]  # kept, with why
    assert len(catalog.versions("comparisons-helpfulness")) == 1
