"""Reward model (Llama 2 §3.2.2): the chat model's transformer with a scalar regression head in place of the LM head.

`RewardModel` is model code only: a thin wrapper over the transformers `<Family>ForSequenceClassification` of the
policy's family (`LlamaForSequenceClassification`, `MistralFor...`, `Qwen2For...`; num_labels=1; its `score` is the
scalar head), so a saved RM folder is a plain Hugging Face folder that
`AutoModelForSequenceClassification.from_pretrained(folder)` loads (TRL, OpenRLHF). HF pools at the rightmost token
that is not `config.pad_token_id`; with right padding and a pad distinct from eos (services/models/tokenizer.py) that
is the last real token, the one `RewardModel` reads, so both give the same scores. The factory functions at the
bottom build one from a policy, save it and load it back (also from the older trunk + `reward_head.pt` folders).
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import (AutoModel, AutoModelForSequenceClassification, LlamaModel, PretrainedConfig,
                          PreTrainedModel, PreTrainedTokenizerBase)

MARKER_FILE = "reward_model.json"
FORMAT = "LlamaForSequenceClassification"  # the marker's format for Llama RMs; other families record their own class
LEGACY_HEAD_FILE = "reward_head.pt"  # folders saved before the HF format: a LlamaModel trunk plus this head
LEGACY_KEY_PREFIXES = {"backbone.": "classifier.model.", "head.": "classifier.score."}  # their state-dict names
log = logging.getLogger(__name__)


class RewardModel(nn.Module):
    def __init__(self, classifier: PreTrainedModel):
        super().__init__()
        if classifier.config.num_labels != 1:
            raise ValueError(f"config.num_labels = {classifier.config.num_labels} is not allowed; a reward model "
                             "has one scalar output (num_labels = 1)")
        self.classifier = classifier
        # Training checkpoints written before the HF wrapper name the weights backbone.* and head.*.
        self.register_load_state_dict_pre_hook(_rename_legacy_keys)

    @property
    def backbone(self) -> PreTrainedModel:
        """The transformer trunk (LlamaModel, MistralModel, Qwen2Model, ...): `.layers`, `.norm`."""
        return getattr(self.classifier, self.classifier.base_model_prefix)

    @property
    def head(self) -> nn.Linear:
        # No bias: the ranking loss depends only on r_c - r_r, so a bias would never receive a gradient
        # (Llama 2 §3.2.2 loss; HF's `score` has none either).
        return self.classifier.score

    @property
    def config(self) -> PretrainedConfig:
        return self.classifier.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask (B, T), left or right padded -> scores (B,), read at the last real token."""
        pooled = self.pooled(input_ids, attention_mask)                                       # (B, H)
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)                       # (B,)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The trunk's final hidden state at the last real token, (B, H): what the head reads (and what
        trainable='head' caches once)."""
        # Positions count real tokens only, so a left-padded row sees the same RoPE positions as unpadded (with
        # right padding they are HF's default 0..T-1, hence the same scores as LlamaForSequenceClassification).
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)                   # (B, T)
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids).last_hidden_state                  # (B, T, H)
        index = torch.arange(input_ids.size(1), device=input_ids.device)
        last = (index * attention_mask.long()).argmax(-1)                                     # (B,) last real token
        return hidden[torch.arange(len(last), device=hidden.device), last]                    # (B, H)


def _rename_legacy_keys(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    for key in list(state_dict):
        for old, new in LEGACY_KEY_PREFIXES.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)


def _classifier_class(config: PretrainedConfig) -> type:
    """The family's sequence-classification class (LlamaForSequenceClassification for a Llama config, ...)."""
    return AutoModelForSequenceClassification._model_mapping[type(config)]


def _reward_config(config: PretrainedConfig, pad_token_id: int | None = None) -> PretrainedConfig:
    """A copy of a policy's config for a scalar RM: one label and the pad id HF pools by."""
    config = copy.deepcopy(config)
    config.num_labels = 1
    config.architectures = [_classifier_class(config).__name__]
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id
    return config


def _classifier(config: PretrainedConfig, backbone: PreTrainedModel, head: nn.Linear) -> PreTrainedModel:
    """<Family>ForSequenceClassification around existing parts (built on meta: nothing is allocated twice)."""
    with torch.device("meta"):
        classifier = _classifier_class(config)(config)
    setattr(classifier, classifier.base_model_prefix, backbone)
    classifier.score = head
    return classifier


def reward_model_from_policy(policy: PreTrainedModel, seed: int = 0, init_std: float | None = None) -> RewardModel:
    """Copy the policy's transformer (Llama 2 §3.2.2: RMs start from the chat model checkpoint, so they know what
    it knows) and put a freshly initialised scalar head where the LM head was. Any Llama-family causal LM."""
    config = _reward_config(policy.config)
    trunk = getattr(policy, policy.base_model_prefix)
    backbone = AutoModel.from_config(policy.config)  # LlamaModel, MistralModel, Qwen2Model, ...
    backbone.load_state_dict(trunk.state_dict())
    generator = torch.Generator().manual_seed(seed)  # same seed -> same head on every DDP rank
    head = nn.Linear(policy.config.hidden_size, 1, bias=False)
    std = init_std if init_std is not None else policy.config.initializer_range
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * std)
    return RewardModel(_classifier(config, backbone, head)).to(device=policy.device, dtype=policy.dtype)


def empty_reward_model(config: PretrainedConfig) -> RewardModel:
    """A freshly initialised RewardModel of an RM config (num_labels=1): the whole copy that the weights gathered
    from FSDP shards are loaded into before saving."""
    return RewardModel(_classifier_class(config)(config))


def save_reward_model(rm: RewardModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> Path:
    """A HF `<Family>ForSequenceClassification` folder (config with num_labels=1 and the tokenizer's pad id,
    safetensors weights) with the tokenizer beside it, saved to right-pad (how HF's pooling reads it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rm = getattr(rm, "module", rm)  # unwrap DDP
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        log.warning("tokenizer pad id %s is missing or equals eos: HF's LlamaForSequenceClassification will not "
                    "score this reward model at the last real token", tokenizer.pad_token_id)
    rm.config.pad_token_id = tokenizer.pad_token_id
    from .lora import has_lora, merged_state_dict

    if getattr(rm.config, "use_cache", True) is False:
        rm.config.use_cache = True
    # LoRA adapters are saved folded into the weights: the folder stays a plain HF classifier
    rm.classifier.save_pretrained(str(folder), state_dict=merged_state_dict(rm.classifier) if has_lora(rm.classifier) else None)
    (folder / LEGACY_HEAD_FILE).unlink(missing_ok=True)  # re-saving (converting) an old folder in place
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        tokenizer.save_pretrained(str(folder))
    finally:
        tokenizer.padding_side = side
    (folder / MARKER_FILE).write_text(json.dumps({"kind": "reward_model", "format": type(rm.classifier).__name__,
                                                  "hidden_size": rm.config.hidden_size}))
    return folder


def is_reward_model_folder(folder: str | Path) -> bool:
    return (Path(folder) / MARKER_FILE).is_file()


def load_reward_model(folder: str | Path, device: str | torch.device = "cpu",
                      dtype: str | torch.dtype | None = None) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """(RewardModel in eval mode, tokenizer) from a folder written by `save_reward_model`; an older folder (LlamaModel
    trunk + reward_head.pt) is converted in memory, and `save_reward_model` writes it in the HF format."""
    from .factory import load_tokenizer, resolve_dtype

    dtype = resolve_dtype(dtype, device)  # 'auto' / None: float32 on CPU, bfloat16 on CUDA
    folder = Path(folder)
    if not is_reward_model_folder(folder):
        raise FileNotFoundError(f"{str(folder)!r} is not a reward model folder (no {MARKER_FILE})")
    tokenizer = load_tokenizer(folder)
    if (folder / LEGACY_HEAD_FILE).is_file():
        backbone = LlamaModel.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
        head = nn.Linear(backbone.config.hidden_size, 1, bias=False)
        head.load_state_dict(torch.load(folder / LEGACY_HEAD_FILE, map_location="cpu", weights_only=True))
        classifier = _classifier(_reward_config(backbone.config, tokenizer.pad_token_id), backbone, head)
    else:
        classifier = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    return RewardModel(classifier).to(device=device, dtype=dtype).eval(), tokenizer


def reward_model_for_training(policy_dir: str | Path, cfg, device: str | torch.device = "cpu", seed: int = 0,
                              lora: bool = True) -> RewardModel:
    """A RewardModel from a policy folder under `cfg`'s (a ModelConfig) precision, memory and LoRA settings: with
    `cfg.lora_rank > 0` (and `lora`) the trunk is frozen in the compute dtype with adapters, and the fresh scalar head
    trains in full (float32); otherwise float32 master weights with autocast. Saved by `save_reward_model`, which
    merges the adapters."""
    from .factory import load_model, prepare_for_training, resolve_dtype
    from .lora import add_lora

    use_lora = lora and cfg.lora_rank > 0
    weights = resolve_dtype(cfg.dtype, device) if use_lora else torch.float32
    rm = reward_model_from_policy(load_model(policy_dir, device=device, dtype=weights), seed=seed)
    if use_lora:
        add_lora(rm.classifier, cfg)
        rm.head.float().requires_grad_(True)  # the head is new: it trains in full, like peft's modules_to_save
    return prepare_for_training(rm, cfg, device)
