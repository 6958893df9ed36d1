"""Train a byte-level BPE tokenizer with the Llama 2 special tokens (Llama 2 §2.2: BPE, 32k vocabulary).

Llama 2 uses SentencePiece BPE with byte fallback; byte-level BPE from `tokenizers`
gives the same guarantee (every string encodes, nothing is <unk>) and trains in
seconds on a corpus version. The chat markers are added as special tokens so the
template's structure is always one token each and never merges with user text.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .chat import LLAMA2_CHAT_TEMPLATE

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
# Llama 2 chat markers (meta-llama/llama generation.py: B_INST, E_INST, B_SYS, E_SYS).
CHAT_MARKERS = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")
# Ids 0-2 as in Llama 2 (unk, bos, eos); a pad distinct from eos so a reward model
# can find the last real token (TRL's reward trainer makes the same demand).
SPECIAL_TOKENS = (UNK, BOS, EOS, PAD, *CHAT_MARKERS)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """BPE over bytes, trained on `texts`; returns a HF fast tokenizer carrying the Llama 2 chat template."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """HF wrapper: no BOS/EOS added implicitly (the chat format places them), left padding for generation."""
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, additional_special_tokens=list(CHAT_MARKERS),
                                   padding_side="left", clean_up_tokenization_spaces=False)
    fast.chat_template = LLAMA2_CHAT_TEMPLATE
    return fast
