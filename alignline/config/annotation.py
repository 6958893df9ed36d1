"""Preference collection settings (Llama 2 §3.2.1)."""
from __future__ import annotations

from dataclasses import dataclass

from .fields import setting


@dataclass(frozen=True)
class AnnotationConfig:
    prompts_per_batch: int = setting(32, "Prompts sent to annotators per batch (paper: weekly batches).", source="Llama 2 §3.2.1", ge=1)
    temperatures: tuple[float, ...] = setting((0.7, 1.2), "Sampling temperatures of the two responses.", source="Llama 2 §3.2.1: different temperatures")
    overlap_share: float = setting(0.1, "Share of tasks given to two annotators, for agreement.", ge=0, le=1)
    wait_timeout_s: float = setting(3600.0, "How long `iterate` waits for a batch to be annotated.", gt=0)
    poll_interval_s: float = setting(10.0, "Seconds between Label Studio polls while waiting.", gt=0)
    public_margin_level: str = setting("better", "Margin level given to public (HH-RLHF) pairs, whose strength is unknown.")
