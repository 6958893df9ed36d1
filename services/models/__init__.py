"""models: Llama-architecture model and tokenizer factory, chat format with answer-only loss masks."""
from .checkpoints import CHECKPOINTS, CheckpointUnavailable, convert_smollm2
from .chat import (IGNORE_INDEX, LLAMA2_CHAT_TEMPLATE, ChatFormatError, EncodedDialogue, Message, Role,
                   encode_dialogue, encode_prompt, render_llama2, validate_dialogue)
from .factory import (build_model, count_parameters, llama_config, load_model, load_registered, load_tokenizer,
                      registered_folder, save_model)
from .reward_model import RewardModel, load_reward_model, reward_model_from_policy, save_reward_model
from .tokenizer import SPECIAL_TOKENS, train_bpe_tokenizer

__all__ = ["CHECKPOINTS", "CheckpointUnavailable", "convert_smollm2", "IGNORE_INDEX", "LLAMA2_CHAT_TEMPLATE",
           "ChatFormatError", "EncodedDialogue", "Message", "Role", "encode_dialogue", "encode_prompt", "render_llama2",
           "validate_dialogue", "build_model", "count_parameters", "llama_config", "load_model", "load_registered",
           "load_tokenizer", "registered_folder", "save_model", "RewardModel", "load_reward_model", "reward_model_from_policy",
           "save_reward_model", "SPECIAL_TOKENS", "train_bpe_tokenizer"]
