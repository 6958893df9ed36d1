"""GGUF export of a Llama-architecture Hugging Face folder (llama.cpp, on-device use) with the `gguf` package.

Follows llama.cpp's `convert_hf_to_gguf.py` for LLaMA: metadata keys of the
`llama` architecture, tensor names from `gguf.TensorNameMap`, and the q/k
projection rows permuted from Hugging Face's rotary layout (halves) to GGML's
(interleaved pairs). The tokenizer must be byte-level BPE (`tokenizer.json`,
as tokenizers trained here are): it is written as the "gpt2" model with its
vocabulary, token types and merges; a SentencePiece tokenizer is refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


class GGUFUnsupported(ValueError):
    """The folder's architecture or tokenizer cannot be written as GGUF here; the message says which."""


def permute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """(n_head * head_dim, hidden) rows from HF's [first halves | second halves] to GGML's interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _bpe_vocab(folder: Path) -> tuple[list[str], list[int], list[str], dict]:
    import gguf

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise GGUFUnsupported("no tokenizer.json (a SentencePiece-only tokenizer is not exported here)")
    spec = json.loads(path.read_text())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise GGUFUnsupported(f"tokenizer model {model.get('type')!r} is not byte-level BPE")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in spec.get("added_tokens", [])}
    for content, t in added.items():
        vocab[content] = t["id"]
    size = max(vocab.values()) + 1
    tokens, types = [f"[PAD{i}]" for i in range(size)], [gguf.TokenType.UNUSED] * size
    for text, i in vocab.items():
        tokens[i] = text
        types[i] = gguf.TokenType.CONTROL if text in added and added[text].get("special") else gguf.TokenType.NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, [int(t) for t in types], merges, added


def export_gguf(folder: str | Path, dest: str | Path, out_type: str = "f16") -> Path:
    """Write `dest` (.gguf) from the HF folder; GGUFUnsupported when it is not a byte-level-BPE Llama."""
    import gguf
    from safetensors.torch import load_file

    folder, dest = Path(folder), Path(dest)
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "llama":
        raise GGUFUnsupported(f"model_type {config.get('model_type')!r} is not llama")
    tokens, types, merges, added = _bpe_vocab(folder)
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    n_layer = config["num_hidden_layers"]
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    if "lm_head.weight" not in state:  # tied embeddings
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    dest.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(dest), "llama")
    writer.add_name(folder.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(config.get("head_dim") or config["hidden_size"] // n_head)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if out_type == "f16" else gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, adder in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                       ("pad_token_id", writer.add_pad_token_id)):
        if isinstance(config.get(key), int):
            adder(config[key])
    tok_config = folder / "tokenizer_config.json"
    template = folder / "chat_template.jinja"
    if template.is_file():
        writer.add_chat_template(template.read_text())
    elif tok_config.is_file() and json.loads(tok_config.read_text()).get("chat_template"):
        writer.add_chat_template(json.loads(tok_config.read_text())["chat_template"])
    for name, tensor in state.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        t = tensor.float()
        if name.endswith("q_proj.weight"):
            t = permute_rotary(t, n_head)
        elif name.endswith("k_proj.weight"):
            t = permute_rotary(t, n_kv)
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise GGUFUnsupported(f"tensor {name!r} has no GGUF name")
        data = t.numpy()
        # llama.cpp keeps 1-D tensors (norms) in f32 whatever the file type
        writer.add_tensor(mapped, data.astype(np.float16 if out_type == "f16" and data.ndim > 1 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest
