"""Shared tiny parts: a BPE tokenizer trained on real text from this machine and a micro Llama config."""
from __future__ import annotations

import importlib
import inspect

import pytest

from alignline.config.model import ModelConfig
from alignline.services.models import train_bpe_tokenizer

SOURCE_MODULES = ("json", "os", "re", "collections", "pathlib", "inspect", "argparse", "typing")


@pytest.fixture(scope="session")
def real_texts() -> list[str]:
    """Python standard-library sources: real English comments, docstrings and code (~0.5 MB)."""
    return [inspect.getsource(importlib.import_module(m)) for m in SOURCE_MODULES]


@pytest.fixture(scope="session")
def tokenizer(real_texts):
    return train_bpe_tokenizer(real_texts, vocab_size=512)


@pytest.fixture(scope="session")
def tokenizer_dir(tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def micro_config() -> ModelConfig:
    """~0.1M parameters, GQA (4 query / 2 key-value heads): fast enough for loops in unit tests."""
    return ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
