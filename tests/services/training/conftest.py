import numpy as np
import pytest

from alignline.services.models import build_model, save_model
from alignline.services.training import pack_documents


@pytest.fixture(scope="session")
def pretrain_rows(tokenizer, real_texts, tmp_path_factory):
    """Packed rows (N, 64) of all source texts but the last, which is held out."""
    docs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in real_texts[:-1]]
    rows = pack_documents(docs, 64, tokenizer.bos_token_id, tokenizer.eos_token_id)
    path = tmp_path_factory.mktemp("rows") / "rows.npy"
    np.save(path, rows.input_ids)
    return path


@pytest.fixture(scope="module")
def base_dir(micro_config, tokenizer, tmp_path_factory):
    """A freshly initialised micro Llama (seed 0) saved with its tokenizer: the base every recipe test starts from."""
    path = tmp_path_factory.mktemp("base")
    save_model(build_model(micro_config, tokenizer=tokenizer, seed=0), tokenizer, path)
    return path
