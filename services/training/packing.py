"""Packed training rows and the deterministic data order shared by the recipes.

Llama 2 §2.2 and §3.1 train on packed sequences. Rows are right-padded with the
pad id and labelled IGNORE_INDEX there; because attention is causal, real tokens
never attend to the padding after them, so no attention mask is needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

from alignline.services.models.chat import IGNORE_INDEX, EncodedDialogue


@dataclass(frozen=True)
class PackedRows:
    input_ids: np.ndarray  # (N, T) int64
    labels: np.ndarray     # (N, T) int64, IGNORE_INDEX where no loss
    truncated: int = 0     # examples cut to fit one row

    def __len__(self) -> int:
        return len(self.input_ids)


def pack_documents(token_lists: Iterable[Sequence[int]], seq_len: int, bos_id: int, eos_id: int) -> PackedRows:
    """Pretraining: `<s> doc </s>` concatenated into one stream, cut into (N, seq_len) rows; the tail is dropped."""
    stream: list[int] = []
    for ids in token_lists:
        stream += [bos_id, *ids, eos_id]
    n = len(stream) // seq_len
    if n == 0:
        raise ValueError(f"the corpus has {len(stream)} tokens, fewer than one row of seq_len={seq_len}")
    rows = np.asarray(stream[: n * seq_len], dtype=np.int64).reshape(n, seq_len)
    return PackedRows(rows, rows.copy())


def pack_dialogues(examples: Sequence[EncodedDialogue], seq_len: int, pad_id: int) -> PackedRows:
    """SFT: whole examples packed greedily (next-fit) into rows; each starts with <s> and answers end with </s>,
    which separate examples. An example longer than a row is truncated (counted)."""
    rows_ids: list[list[int]] = []
    rows_labels: list[list[int]] = []
    ids_row: list[int] = []
    labels_row: list[int] = []
    truncated = 0
    for ex in examples:
        ids, labels = ex.input_ids[:seq_len], ex.labels[:seq_len]
        truncated += len(ex.input_ids) > seq_len
        if len(ids_row) + len(ids) > seq_len:
            rows_ids.append(ids_row)
            rows_labels.append(labels_row)
            ids_row, labels_row = [], []
        ids_row += ids
        labels_row += labels
    if ids_row:
        rows_ids.append(ids_row)
        rows_labels.append(labels_row)
    input_ids = np.full((len(rows_ids), seq_len), pad_id, dtype=np.int64)
    out_labels = np.full((len(rows_ids), seq_len), IGNORE_INDEX, dtype=np.int64)
    for i, (ids, labels) in enumerate(zip(rows_ids, rows_labels)):
        input_ids[i, : len(ids)] = ids
        out_labels[i, : len(labels)] = labels
    return PackedRows(input_ids, out_labels, truncated)


@lru_cache(maxsize=4)
def _epoch_order(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def step_rows(num_rows: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Row indices of global batch `step`: epochs are seeded permutations laid end to end,
    so the batch depends only on (seed, step) and a resumed run continues the same order."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = np.divmod(positions, num_rows)
    return np.array([_epoch_order(num_rows, seed, int(e))[o] for e, o in zip(epochs, offsets)], dtype=np.int64)
