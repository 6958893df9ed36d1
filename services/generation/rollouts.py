"""Rollouts: K sampled answers per prompt from one policy version, in this process or on N Ray actors.

Llama 2 §3.2.3 samples K answers per prompt from the newest policy for
rejection sampling, and fresh answers every PPO iteration. A `RolloutWorker`
holds one policy version and samples in batches with the KV cache
(`sampling.generate`); a `RolloutPool` shards prompts over N Ray actors, each a
`RolloutWorker`, and puts the answers back in input order. New weights are
broadcast with one `ray.put`. With zero actors the pool samples in this
process, so tests and small runs need no Ray.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch

from alignline.services.models.chat import Message, encode_prompt
from alignline.services.models.factory import load_model, load_tokenizer
from alignline.services.progress import Progress

from .sampling import SamplingParams, generate


@dataclass(frozen=True)
class Rollout:
    prompt_tokens: list[int]
    tokens: list[int]        # answer tokens, EOS included when sampled
    logprobs: list[float]    # log p(token) under the sampling policy at temperature 1, per answer token
    text: str                # decoded answer, special tokens dropped


def sample_rollouts(model, tokenizer, dialogues: Sequence[Sequence[Message]], params: SamplingParams, k: int = 1,
                    batch_size: int = 16) -> list[list[Rollout]]:
    """K answers for each dialogue (ending in a user turn): result[i][j] is sample j of dialogue i.

    The K copies of a prompt go into the same batches (prompts sorted by length),
    so a batch shares one left-padded width. Batch b uses seed `params.seed + b`,
    so a run is reproducible for a fixed batch size.
    """
    prompts = [encode_prompt(tokenizer, d) for d in dialogues]
    jobs = sorted(((i, j) for i in range(len(prompts)) for j in range(k)), key=lambda ij: (len(prompts[ij[0]]), ij))
    out: list[list[Rollout | None]] = [[None] * k for _ in prompts]
    with Progress("rollouts", len(jobs), "sample", enabled=len(jobs) > batch_size) as shown:
        for b, start in enumerate(range(0, len(jobs), batch_size)):
            chunk = jobs[start:start + batch_size]
            seeded = replace(params, seed=None if params.seed is None else params.seed + b)
            gen = generate(model, [prompts[i] for i, _ in chunk], seeded, tokenizer.pad_token_id, tokenizer.eos_token_id)
            for (i, j), toks, lps in zip(chunk, gen.tokens, gen.logprobs):
                out[i][j] = Rollout(prompts[i], toks, lps, tokenizer.decode(toks, skip_special_tokens=True).strip())
            shown.advance(len(chunk))
    return out  # type: ignore[return-value]


class RolloutWorker:
    """One policy version in memory; samples in batches. Runs as a Ray actor or as a plain object."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", threads: int = 0):
        if threads:
            torch.set_num_threads(threads)  # an actor keeps to its CPU share
        self.device = device
        self.model = load_model(model_dir, device=device).eval()
        self.tokenizer = load_tokenizer(model_dir)
        self.version = str(model_dir)

    def set_weights(self, state_dict: dict[str, torch.Tensor], version: str) -> str:
        """Swap in new policy weights (same architecture), e.g. after a PPO update."""
        self.model.load_state_dict(state_dict)
        self.version = version
        return version

    def sample(self, dialogues: Sequence[Sequence[Message]], params: SamplingParams, k: int,
               batch_size: int) -> tuple[str, list[list[Rollout]]]:
        """(policy version, rollouts): the version says which weights produced the samples."""
        return self.version, sample_rollouts(self.model, self.tokenizer, dialogues, params, k, batch_size)


class RolloutPool:
    """N Ray actors holding the same policy version (N=0: one in-process worker)."""

    def __init__(self, model_dir: str | Path, num_actors: int = 0, batch_size: int = 16,
                 cpus_per_actor: float = 1.0, use_gpu: bool = False):
        self.batch_size = batch_size
        self.num_actors = num_actors
        device = "cuda" if use_gpu else "cpu"
        if num_actors == 0:
            self.local: RolloutWorker | None = RolloutWorker(model_dir, device)
            self.actors: list = []
            return
        import ray

        self.local = None
        actor_cls = ray.remote(num_cpus=cpus_per_actor, num_gpus=1 if use_gpu else 0)(RolloutWorker)
        threads = max(1, int(cpus_per_actor))
        self.actors = [actor_cls.remote(str(model_dir), device, threads) for _ in range(num_actors)]

    def set_weights(self, state_dict: dict[str, torch.Tensor], version: str) -> None:
        if self.local is not None:
            self.local.set_weights(state_dict, version)
            return
        import ray

        ref = ray.put({k: v.detach().cpu() for k, v in state_dict.items()})  # one copy in the object store
        ray.get([a.set_weights.remote(ref, version) for a in self.actors])

    def sample(self, dialogues: Sequence[Sequence[Message]], params: SamplingParams, k: int = 1) -> list[list[Rollout]]:
        """K rollouts per dialogue, in input order. Actor a gets dialogues a, a+N, ... and seed offset a."""
        if self.local is not None:
            return self.local.sample(dialogues, params, k, self.batch_size)[1]
        import ray

        n = len(self.actors)
        futures = []
        for a, actor in enumerate(self.actors):
            shard_params = replace(params, seed=None if params.seed is None else params.seed + 100_003 * a)
            futures.append(actor.sample.remote(list(dialogues[a::n]), shard_params, k, self.batch_size))
        shards = ray.get(futures)
        versions = {version for version, _ in shards}
        if len(versions) > 1:
            raise RuntimeError(f"rollout actors hold different policy versions: {sorted(versions)}")
        out: list[list[Rollout]] = [[] for _ in dialogues]
        for a, (_, rollouts) in enumerate(shards):
            for i, rows in zip(range(a, len(dialogues), n), rollouts):
                out[i] = rows
        return out

    def sample_texts(self, dialogues: Sequence[Sequence[Message]], params: SamplingParams, k: int = 1) -> list[list[str]]:
        return [[r.text for r in rows] for rows in self.sample(dialogues, params, k)]

    def close(self) -> None:
        if self.actors:
            import ray

            for actor in self.actors:
                ray.kill(actor)
            self.actors = []
