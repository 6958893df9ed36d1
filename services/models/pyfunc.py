"""A policy as an MLflow pyfunc with a chat signature: `mlflow.pyfunc.load_model("models:/policy@champion")` answers.

The registry logs this beside the Hugging Face folder of every causal-LM version
(`Registry.register_dir`), so any MLflow client, `mlflow models serve` included,
can load a policy without this project: the class is pickled by value and its
methods import only torch and transformers. Input: rows with `messages`, a list
of `{"role", "content"}` ending in a user turn; output: one answer string per
row. Generation params (max_new_tokens, temperature, top_p, seed) are pyfunc
params with defaults in the signature; temperature 0 is greedy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cloudpickle
import mlflow.pyfunc

from alignline.services.models.chat import LLAMA2_CHAT_TEMPLATE

HF_ARTIFACT = "hf_model"  # the key (and folder under artifacts/) of the Hugging Face model folder
DEFAULT_PARAMS = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0, "seed": 0}


def chat_signature():
    """messages (array of {role, content}) -> answer (string), with the generation params."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Object, ParamSchema, ParamSpec, Property, Schema

    message = Object([Property("role", "string"), Property("content", "string")])
    params = ParamSchema([ParamSpec("max_new_tokens", "long", DEFAULT_PARAMS["max_new_tokens"]),
                          ParamSpec("temperature", "double", DEFAULT_PARAMS["temperature"]),
                          ParamSpec("top_p", "double", DEFAULT_PARAMS["top_p"]),
                          ParamSpec("seed", "long", DEFAULT_PARAMS["seed"])])
    return ModelSignature(inputs=Schema([ColSpec(Array(message), "messages")]),
                          outputs=Schema([ColSpec("string", "answer")]), params=params)


def _dialogues(model_input: Any) -> list[list[dict[str, str]]]:
    """A DataFrame with a `messages` column, a dict with `messages`, or a list of either -> dialogues."""
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):  # pandas DataFrame
        rows = list(model_input["messages"])
    elif isinstance(model_input, dict):
        rows = [model_input["messages"]]
    else:
        rows = [r["messages"] if isinstance(r, dict) else r for r in model_input]
    return [[{"role": str(m["role"]), "content": str(m["content"])} for m in row] for row in rows]


class ChatPolicy(mlflow.pyfunc.PythonModel):
    """Loads the Hugging Face folder from the model's artifacts; answers in the tokenizer's chat template."""

    def load_context(self, context) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = context.artifacts[HF_ARTIFACT]
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if getattr(self.tokenizer, "chat_template", None) is None:  # tokenizers trained here use Llama 2's format
            self.tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
        self.model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> list[str]:
        import torch

        p = {**DEFAULT_PARAMS, **(params or {})}
        answers = []
        for messages in _dialogues(model_input):
            if not messages or messages[-1]["role"] != "user":
                raise ValueError("each row's messages must end with a user turn")
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]  # (1, T)
            torch.manual_seed(int(p["seed"]))
            sample = float(p["temperature"]) > 0
            extra = {"temperature": float(p["temperature"]), "top_p": float(p["top_p"])} if sample else {}
            with torch.no_grad():
                out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=sample,
                                          max_new_tokens=int(p["max_new_tokens"]),
                                          pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                                          eos_token_id=self.tokenizer.eos_token_id, **extra)
            answers.append(self.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
        return answers


def is_chat_model_folder(folder: str | Path) -> bool:
    """A Hugging Face causal-LM folder with a tokenizer: what gets a pyfunc beside it."""
    import json

    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    archs = config.get("architectures") or []
    has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()
    return has_tokenizer and any(str(a).endswith("ForCausalLM") for a in archs)


def save_chat_pyfunc(hf_folder: str | Path, dest: str | Path) -> Path:
    """An MLflow pyfunc model folder at `dest`: MLmodel, the pickled ChatPolicy, the HF folder under artifacts/."""
    import sys

    import torch
    import transformers

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # loadable where alignline is not installed
    try:
        mlflow.pyfunc.save_model(
            path=str(dest), python_model=ChatPolicy(), artifacts={HF_ARTIFACT: str(hf_folder)},
            signature=chat_signature(),
            # Named, not inferred: inference loads the model in a subprocess (slow, and it would need alignline).
            pip_requirements=[f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
                              f"transformers=={transformers.__version__}", "cloudpickle", "pandas"])
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    return Path(dest)
