"""The run configuration: one typed section per component, named presets, one loader.

Precedence, lowest first: field defaults, the preset's values, the TOML file
(`--config`, else $ALIGNLINE_CONFIG),
`--set section.field=value` overrides. `load_config` is the one place a run's
configuration is built and validated.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from . import annotation, corpus, evaluation, model, release, reward, rlhf, servers, sweep, training
from .fields import ConfigError, build_section, explain

PRESET_NAMES = ("tiny", "small", "llama2-7b", "llama2-13b", "llama2-70b")
DEFAULT_HOME = Path(".alignline")

# section name -> (dataclass, its presets)
SECTIONS: dict[str, tuple[type, dict[str, dict]]] = {
    "servers": (servers.ServersConfig, servers.PRESETS),
    "corpus": (corpus.CorpusConfig, corpus.PRESETS),
    "model": (model.ModelConfig, model.PRESETS),
    "pretrain": (training.PretrainConfig, training.PRETRAIN_PRESETS),
    "sft": (training.SFTConfig, training.SFT_PRESETS),
    "annotation": (annotation.AnnotationConfig, {}),
    "reward": (reward.RewardConfig, reward.PRESETS),
    "rlhf": (rlhf.RLHFConfig, rlhf.PRESETS),
    "evaluation": (evaluation.EvaluationConfig, {}),
    "sweep": (sweep.SweepConfig, {}),
    "release": (release.ReleaseConfig, {}),
}


@dataclass(frozen=True)
class RunConfig:
    preset: str
    home: Path
    servers: servers.ServersConfig
    corpus: corpus.CorpusConfig
    model: model.ModelConfig
    pretrain: training.PretrainConfig
    sft: training.SFTConfig
    annotation: annotation.AnnotationConfig
    reward: reward.RewardConfig
    rlhf: rlhf.RLHFConfig
    evaluation: evaluation.EvaluationConfig
    sweep: sweep.SweepConfig
    release: release.ReleaseConfig

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return v
        out: dict[str, Any] = {"preset": self.preset}
        for name in SECTIONS:
            out[name] = {k: plain(v) for k, v in dataclasses.asdict(getattr(self, name)).items()}
        return out

    def digest(self, *sections: str) -> str:
        """Content hash of the named sections (all but `servers` when none are named; the data dir never counts).

        Stages key their work dirs on the sections they read, so changing, say, an evaluation threshold does
        not move the SFT work dir (and lose its checkpoints)."""
        unknown = set(sections) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")
        chosen = sections or tuple(s for s in SECTIONS if s != "servers")
        plain = self.to_dict()
        blob = json.dumps({k: plain[k] for k in chosen}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_home(home: str | Path | None = None) -> Path:
    """The data dir: explicit argument, else $ALIGNLINE_HOME, else ./.alignline."""
    chosen = home or os.environ.get("ALIGNLINE_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


def parse_override(text: str) -> tuple[str, str, Any]:
    """'section.field=value' -> (section, field, value); value parsed as TOML when it can be."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r} is not allowed; allowed: section.field=value")
    key, raw = text.split("=", 1)
    section, field = key.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, field, value


def load_config(preset: str | None = None, file: str | Path | None = None,
                overrides: Iterable[str] = (), home: str | Path | None = None) -> RunConfig:
    """Build and validate the run config. Raises ConfigError naming field, value and rule."""
    file_values: dict[str, Any] = {}
    file = file or os.environ.get("ALIGNLINE_CONFIG") or None
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            file_values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    preset = preset or file_values.pop("preset", None) or "tiny"
    file_values.pop("preset", None)
    if preset not in PRESET_NAMES:
        raise ConfigError(f"preset = {preset!r} is not allowed; allowed: {', '.join(map(repr, PRESET_NAMES))}")
    home = home or file_values.pop("home", None)
    file_values.pop("home", None)
    unknown = sorted(set(file_values) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"[{unknown[0]}] is not a config section; allowed: {', '.join(SECTIONS)}")
    layered: dict[str, dict[str, Any]] = {}
    for name, (_, presets) in SECTIONS.items():
        file_section = file_values.get(name, {})
        if not isinstance(file_section, dict):
            raise ConfigError(f"{name} = {file_section!r} is not allowed; allowed: a [{name}] table")
        layered[name] = {**presets.get(preset, {}), **file_section}
    for text in overrides:
        section, field, value = parse_override(text)
        if section not in SECTIONS:
            raise ConfigError(f"--set {text!r}: [{section}] is not a config section; allowed: {', '.join(SECTIONS)}")
        layered[section][field] = value
    built = {name: build_section(cls, name, layered[name]) for name, (cls, _) in SECTIONS.items()}
    return RunConfig(preset=preset, home=resolve_home(home), **built)


def explain_all() -> list[tuple[str, str, str, str]]:
    rows = []
    for name, (cls, _) in SECTIONS.items():
        rows += explain(cls, name)
    return rows


__all__ = ["ConfigError", "RunConfig", "load_config", "resolve_home", "explain_all", "PRESET_NAMES", "SECTIONS"]
