"""Safety data scaling sweep (Llama 2 §4.2.3, Figures 15 and 33)."""
from __future__ import annotations

from dataclasses import dataclass

from .fields import ConfigError, setting


@dataclass(frozen=True)
class SweepConfig:
    safety_shares: tuple[float, ...] = setting((0.0, 0.1, 0.25, 0.5, 1.0), "Shares of the safety demonstrations (and safety comparisons) each variant is trained with.", source="Llama 2 §4.2.3: 0%, 1%, 10%, 25%, 50%, 100%")
    eval_prompts: int = setting(48, "Held-out evaluation prompts each variant answers (0: all).", ge=0)
    max_new_tokens: int = setting(48, "Answer length limit of the variants' answers.", ge=1)

    def validate(self) -> None:
        if not self.safety_shares:
            raise ConfigError("sweep.safety_shares = [] is not allowed; allowed: at least one share in [0, 1]")
        for share in self.safety_shares:
            if not 0.0 <= share <= 1.0:
                raise ConfigError(f"sweep.safety_shares = {list(self.safety_shares)} is not allowed; allowed: shares in [0, 1]")
