"""Preference collection settings (Llama 2 §3.2.1)."""
from __future__ import annotations

from dataclasses import dataclass

from .fields import setting


@dataclass(frozen=True)
class AnnotationConfig:
    prompts_per_batch: int = setting(32, "Prompts sent to annotators per batch (paper: weekly batches).", source="Llama 2 §3.2.1", ge=1)
    temperatures: tuple[float, ...] = setting((0.7, 1.2), "Sampling temperatures of the two responses.", source="Llama 2 §3.2.1: different temperatures")
    overlap_share: float = setting(0.1, "Share of tasks given to two annotators, for agreement.", ge=0, le=1)
    wait_timeout_s: float = setting(3600.0, "How long an iteration run waits, suspended or paused in the Prefect server, for its batch to be annotated.", gt=0)
    poll_interval_s: float = setting(10.0, "Seconds between the resumer's Label Studio polls (in `serve` and beside a CLI `iterate`).", gt=0)
    public_margin_level: str = setting("better", "Margin level given to public (HH-RLHF) pairs, whose strength is unknown.")
    public_heldout_share: float = setting(0.1, "Share of an imported public set's prompts (chosen by prompt hash) published apart as `<dataset>-heldout`, read only by the reward report.", source="Llama 2 §3.2.2 / Table 7: RMs are scored on held-out pairs of each open-source set", ge=0, lt=1)
    safety_share: float = setting(0.25, "Share of each batch's prompts that are safety (adversarial) prompts, sent to the safety project.", source="Llama 2 §3.2.1: helpfulness and safety collected separately", ge=0, le=1)
    stdlib_prompts: int = setting(0, "Built-in helpfulness prompts taken from stdlib docstrings (0: all).", ge=0)
    max_new_tokens: int = setting(64, "Tokens sampled per response.", ge=1)
    top_p: float = setting(0.9, "Nucleus sampling for both responses.", gt=0, le=1)
    seed: int = setting(0, "Sampling seed (mixed with iteration and batch).", ge=0)
    policy_name: str = setting("policy", "Registered model the responses are sampled from: alias champion, else candidate.", source="Llama 2 §3.2.1: sampled from the latest model")
    helpfulness_project: str = setting("alignline helpfulness", "Label Studio project title for helpfulness comparisons.")
    safety_project: str = setting("alignline safety", "Label Studio project title for safety comparisons.")
    import_batch_size: int = setting(500, "Tasks per Label Studio import request.", ge=1)
    import_retries: int = setting(5, "Tries per Label Studio request before a clear error.", ge=1)
    import_backoff_s: float = setting(1.0, "First back-off in seconds; doubles on each retry.", ge=0)
    harvest_slack_s: float = setting(300.0, "Harvest re-reads tasks updated this long before the last harvest (clock skew); annotation ids keep it exactly-once.", ge=0)
    harvest_page_size: int = setting(100, "Tasks (with their annotations) per Label Studio request when a harvest reads a project: keyset pages by task id, so a request's time and a harvest's memory stay bounded however large the project (SDK timeout: 60 s a request).", ge=1, le=1000)
    drop_safety_categories: tuple[str, ...] = setting(("chosen_unsafe_rejected_safe",), "Safety categories whose pairs are dropped (chosen answer unsafe, the other safe).", source="Llama 2 §3.2.1: 'we do not include any examples where the chosen response was unsafe and the other response safe'")
    bot_annotators: int = setting(2, "Scripted annotator users `annotate --bot` runs (two give agreement figures on overlapping tasks).", ge=1)
    bot_margin_thresholds: tuple[float, ...] = setting((0.3, 0.15, 0.05), "Oracle score gaps for significantly better / better / slightly better (below: negligibly).")
    human_eval_project: str = setting("alignline human-eval", "Label Studio project title prefix for human evaluations; the pair compared is appended ('... policy/3 vs policy/2').")
    human_eval_raters: int = setting(3, "Raters per human-evaluation item (Label Studio overlap on every task).", source="Llama 2 §3.4.2: three raters per comparison", ge=1)
    human_eval_rater_noise: float = setting(0.1, "Scripted raters only: standard deviation of each simulated rater's own noise on the oracle's score gap (seeded per rater and task), so simulated raters disagree like people do.", ge=0)
    human_eval_seed: int = setting(0, "Seed of the scripted raters' noise and of the A/B side randomisation.", ge=0)
    redteam_project: str = setting("alignline red-team", "Label Studio project where red-teamers write adversarial prompts and tag them.", source="Llama 2 §4.3")
    redteam_review_project: str = setting("alignline red-team review", "Label Studio project where a rater judges whether the champion's answer to a red-team prompt violates the policy, and how badly.", source="Llama 2 §4.3")
    redteam_risk_categories: tuple[str, ...] = setting(("illicit_and_criminal", "hateful_and_harmful", "unqualified_advice"), "Risk categories a red-teamer tags a prompt with (lowercase slugs; the first three are the paper's, `destructive_action` matches the built-in safety data). A prompt tagged with anything else is quarantined.", source="Llama 2 §4.3: illicit and criminal activities, hateful and harmful activities, unqualified advice")
    redteam_slots: int = setting(6, "Writing tasks `redteam create` opens per round (each is one adversarial prompt to write).", ge=1, le=10_000)
    redteam_max_turns: int = setting(3, "User turns a red-team prompt may have (the champion answers each turn before the next).", source="Llama 2 §4.3: single- and multi-turn attacks", ge=1, le=20)
    redteam_reviewers: int = setting(1, "Raters per answer in the red-team review project (Label Studio overlap on every task); a prompt counts as violating when most of its reviews say so.", ge=1, le=10)
    redteam_bot_seconds_per_prompt: float = setting(300.0, "Scripted red-teamer only (SIMULATED): the writing time it reports per prompt as its Label Studio lead time, so the person-hour measure has a person's scale.", gt=0, le=86_400)
    redteam_seed: int = setting(0, "Seed of the scripted red-teamer's choice of prompts.", ge=0)

    def validate(self) -> None:
        from alignline.config.fields import ConfigError

        levels = ("significantly_better", "better", "slightly_better", "negligibly_better")
        if self.public_margin_level not in levels:
            raise ConfigError(f"annotation.public_margin_level = {self.public_margin_level!r} is not allowed; allowed: {', '.join(levels)}")
        if len(self.temperatures) != 2:
            raise ConfigError(f"annotation.temperatures = {list(self.temperatures)!r} is not allowed; allowed: two temperatures")
        if len(self.bot_margin_thresholds) != 3 or list(self.bot_margin_thresholds) != sorted(self.bot_margin_thresholds, reverse=True):
            raise ConfigError(f"annotation.bot_margin_thresholds = {list(self.bot_margin_thresholds)!r} is not allowed; allowed: three descending gaps")
        import re

        cats = self.redteam_risk_categories
        if not cats or len(set(cats)) != len(cats) or not all(re.fullmatch(r"[a-z][a-z0-9_]{0,63}", c) for c in cats):
            raise ConfigError(f"annotation.redteam_risk_categories = {list(cats)!r} is not allowed; allowed: one or more "
                              "distinct lowercase slugs (letters, digits, '_')")
