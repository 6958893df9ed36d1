"""What `alignline release` ships besides the weights: license, acceptable-use policy and card metadata.

The LICENSE and acceptable-use policy are templates a team edits: point
`license_file` / `aup_file` at its own text (placeholders {model},
{organization}, {year}, {license_name} are filled in), else the built-in
templates are used. Llama 2 was released with a license and an acceptable-use
policy beside the weights (Touvron et al., 2023, §6 Responsible release strategy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .fields import setting

LICENSE_SOURCE = "Llama 2 §6 (release with a license and an acceptable use policy); huggingface.co/docs/hub/model-cards"


@dataclass(frozen=True)
class ReleaseConfig:
    organization: str = setting("the alignline team", "Who publishes the release: named in LICENSE, the acceptable-use policy and the model card.", source=LICENSE_SOURCE)
    license_id: str = setting("other", "License id in the Hugging Face card's metadata (`license:`), e.g. apache-2.0, llama2; 'other' with `license_name` for a team's own license.", source="huggingface.co/docs/hub/repositories-licenses")
    license_name: str = setting("alignline-model-license", "The license's name in the card's metadata when license_id is 'other'.")
    license_file: str = setting("", "The team's LICENSE template (a text file); empty: the built-in template.", source=LICENSE_SOURCE)
    aup_file: str = setting("", "The team's acceptable-use policy template (Markdown); empty: the built-in template.", source=LICENSE_SOURCE)
    base_model: str = setting("", "The card's `base_model` metadata (e.g. a hub id such as meta-llama/Llama-2-7b-hf) when the line started from a public checkpoint; empty: the registered base model the policy descends from.")
    gguf: bool = setting(False, "Also export the weights as GGUF (llama.cpp, on-device) when the architecture and tokenizer allow it (a byte-level BPE Llama).")
    gguf_type: Literal["f32", "f16"] = setting("f16", "Tensor type of the GGUF export.")

    def validate(self) -> None:
        from pathlib import Path

        from .fields import ConfigError

        for name in ("license_file", "aup_file"):
            path = getattr(self, name)
            if path and not Path(path).expanduser().is_file():
                raise ConfigError(f"release.{name} = {path!r} is not allowed; allowed: an existing file, or empty for "
                                  "the built-in template")
        if not self.license_id.strip() or not self.organization.strip():
            raise ConfigError("release.license_id and release.organization are not allowed empty; allowed: a name")
