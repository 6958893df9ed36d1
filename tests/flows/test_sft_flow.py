"""pretrain -> sft through the Prefect engine: registry versions carry the lineage of data and parents."""
import importlib
import inspect

import pyarrow as pa
import pytest
import torch
from prefect.testing.utilities import prefect_test_harness

from alignline.config import load_config
from alignline.flows.pretrain import run_pretrain
from alignline.flows.sft import run_sft
from alignline.services.generation import SamplingParams, generate_chat
from alignline.services.models import load_registered
from alignline.services.registry import Registry
from alignline.storage import Catalog

MICRO = ["model.vocab_size=512", "model.hidden_size=64", "model.intermediate_size=172", "model.num_hidden_layers=2",
         "model.num_attention_heads=4", "model.num_key_value_heads=2", "model.max_position_embeddings=256",
         "pretrain.max_steps=6", "pretrain.seq_len=64", "pretrain.batch_size=8", "pretrain.use_ray=false",
         "sft.seq_len=256", "sft.batch_size=8", "sft.epochs=1", "sft.use_ray=false", "sft.stdlib_examples=30"]


@pytest.fixture(scope="module")
def prefect_engine():
    with prefect_test_harness():
        yield


def test_pretrain_then_sft_registers_base_and_policy_with_lineage(prefect_engine, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_config("tiny", overrides=[*MICRO, f"servers.mlflow_uri={uri}"], home=tmp_path / "home")
    docs = [inspect.getsource(importlib.import_module(m)) for m in ("json", "os", "re", "pathlib")]
    corpus = Catalog(cfg.home / "lake").publish("corpus", pa.table({"id": [str(i) for i in range(len(docs))], "text": docs}))

    base = run_pretrain(cfg)
    assert base["model"] == "base/1" and base["corpus"] == corpus.ref and base["tokenizer"].startswith("tokenizer@")
    registry = Registry(uri)
    tags = registry.get("base", "1").tags
    assert tags["lineage.datasets"] == f"{corpus.ref},{base['tokenizer']}" and tags["lineage.method"] == "pretrain"
    assert Catalog(cfg.home / "lake").get("tokenizer").parents == (corpus.ref,)

    policy = run_sft(cfg)
    info = registry.get("policy", "candidate")
    assert policy["model"] == info.ref == "policy/1" and policy["parent"] == "base/1"
    assert info.tags["lineage.parents"] == "base/1" and info.tags["lineage.datasets"] == policy["data"]
    assert policy["data"].startswith("sft-default@") and info.tags["lineage.method"] == "sft"

    model, tokenizer, loaded = load_registered(registry, "policy", "candidate", tmp_path / "dl")
    base_model, base_tokenizer, _ = load_registered(registry, "base", "1", tmp_path / "dl-base")
    assert loaded.version == "1" and tokenizer.get_vocab() == base_tokenizer.get_vocab()  # SFT keeps the tokenizer
    # the registered policy holds the SFT-trained weights, not a copy of its parent
    changed = [k for k, w in model.state_dict().items() if not torch.equal(w, base_model.state_dict()[k])]
    assert "lm_head.weight" in changed and len(changed) == len(model.state_dict())
    answers = generate_chat(model, tokenizer, [[{"role": "user", "content": "What does `json.dumps` do?"}]],
                            SamplingParams(max_new_tokens=8, temperature=0.8, top_p=0.9, seed=0))
    assert len(answers) == 1  # the downloaded folder is a complete chat model
