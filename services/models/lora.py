"""LoRA (Hu et al. 2021) for the policy and the reward models, merged back into the weights on save.

Adapters are injected in place (peft's `inject_adapter_in_model`): every targeted `nn.Linear` becomes a peft
`lora.Linear` holding the frozen base layer and the low-rank pair B A, so code that calls a model's submodules
directly (`RewardModel.pooled`, `PolicyWithValue`) runs through the adapters unchanged. Only the adapters train,
plus any module the caller marks trainable (a reward model's fresh scalar head, PPO's value head). `merge_lora`
folds W + (alpha / r) B A into each base layer and puts the plain `nn.Linear` back, so a saved folder is an ordinary
Hugging Face folder that the rest of the line (and TRL, vLLM, ...) loads without peft.
"""
from __future__ import annotations

import torch
from torch import nn

from alignline.config.model import ModelConfig


def lora_config(cfg: ModelConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_target_modules), bias="none")


def add_lora(model: nn.Module, cfg: ModelConfig) -> int:
    """Freeze `model` and inject rank-`cfg.lora_rank` adapters into `cfg.lora_target_modules` (adapters in float32
    whatever the base dtype, as peft's autocast_adapter_dtype does). -> trainable parameter count."""
    from peft import inject_adapter_in_model

    if cfg.lora_rank <= 0:
        raise ValueError(f"model.lora_rank = {cfg.lora_rank} is not allowed here; allowed: > 0")
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = sorted(set(cfg.lora_target_modules) - names)
    if missing:
        raise ValueError(f"model.lora_target_modules names {missing}, which {type(model).__name__} does not have; "
                         f"allowed: {', '.join(sorted(names))}")
    model.requires_grad_(False)
    inject_adapter_in_model(lora_config(cfg), model)
    for name, param in model.named_parameters():
        if ".lora_" in name:
            param.data = param.data.float()
            param.requires_grad_(True)
    return trainable_parameters(model)


def has_lora(model: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer and put the plain base layer back (in place). -> model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in targets:
        layer.merge()  # W <- W + (alpha / r) B A, in W's dtype
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    if "peft_config" in vars(model):  # left by the injection; the merged model is plain again
        del model.peft_config
    return model


@torch.no_grad()
def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the plain model the adapters stand for (W + (alpha / r) B A under the base layers' names),
    computed without touching `model`: training can go on after a mid-run save. Untouched tensors are the model's
    own (tied embeddings stay tied for `save_pretrained`)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    state = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k}
    for name, layer in model.named_modules():
        if isinstance(layer, BaseTunerLayer):
            weight = layer.get_base_layer().weight
            delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters)
            state[f"{name}.weight"] = (weight.float() + delta.float()).to(weight.dtype)
    return state


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
