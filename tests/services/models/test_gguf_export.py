"""GGUF export (release.gguf): transformers' own GGUF reader loads the file back with the same logits."""
import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignline.services.models import build_model, save_model
from alignline.services.models.gguf_export import GGUFUnsupported, export_gguf, permute_rotary


@pytest.fixture(scope="module")
def hf_dir(tokenizer, micro_config, tmp_path_factory):
    return save_model(build_model(micro_config, tokenizer=tokenizer, seed=1), tokenizer,
                      tmp_path_factory.mktemp("gguf") / "hf")


@pytest.mark.parametrize("out_type, tolerance", [("f32", 0.0), ("f16", 2e-3)])
def test_exported_gguf_loads_back_with_the_same_logits(hf_dir, tokenizer, tmp_path, out_type, tolerance):
    path = export_gguf(hf_dir, tmp_path / f"policy-{out_type}.gguf", out_type)
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name)
    original = AutoModelForCausalLM.from_pretrained(str(hf_dir))
    ids = torch.tensor([tokenizer("[INST] What does json.dumps return? [/INST]")["input_ids"]])  # (1, T)
    assert (loaded(ids).logits - original(ids).logits).abs().max().item() <= tolerance


def test_rotary_rows_are_interleaved_by_head():
    w = torch.arange(8.0)[:, None]  # one head of dim 8: rows [0..3 | 4..7] -> pairs (0,4), (1,5), ...
    assert permute_rotary(w, 1)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_a_tokenizer_that_is_not_byte_level_bpe_is_refused(hf_dir, tmp_path):
    folder = tmp_path / "wp"
    shutil.copytree(hf_dir, folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["model"]["type"] = "WordPiece"
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(GGUFUnsupported, match="not byte-level BPE"):
        export_gguf(folder, tmp_path / "x.gguf")
