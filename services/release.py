"""The release stack of a registered policy: one folder and one archive that any tool can load.

`<dest>/<model>-v<version>/` holds, at its root, what `AutoModelForCausalLM.from_pretrained`
and the Hugging Face Hub read (config, safetensors weights, tokenizer with its chat
template, README.md as a model card with metadata), then LICENSE and
ACCEPTABLE_USE_POLICY.md (templates a team edits: `[release]` in the config),
`evaluation/` (the report the version was promoted on, its suite results, the HTML
model card), `reward_models/` (accuracy by rating level of each reward model in the
lineage), an optional `gguf/` export, and `manifest.json`: the lineage and the
SHA-256 of every other file. Beside the folder: `<model>-v<version>.tar.gz` and its
`.sha256`. Only the champion is released unless the caller allows a candidate
(Llama 2 §6: release with a license, an acceptable-use policy and the evaluations).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignline.config.release import ReleaseConfig
from alignline.services.models.chat import LLAMA2_CHAT_TEMPLATE
from alignline.services.registry import (CHAMPION, REPORT_URI_TAG, ModelVersionInfo, Registry, RegistryError,
                                         git_commit)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
WEIGHT_SUFFIXES = (".safetensors",)
SKIPPED_MODEL_FILES = {".complete", "MLmodel", "python_model.pkl", "python_env.yaml", "conda.yaml",
                       "requirements.txt", "input_example.json", "serving_input_example.json"}

DEFAULT_LICENSE = """{model} license

Copyright (c) {year} {organization}. All rights reserved except as granted below.

1. Grant. {organization} grants you a non-exclusive, worldwide, royalty-free license to use, reproduce,
   distribute, modify and create derivative works of the model weights, tokenizer and accompanying files
   ("the Materials") released as {model}, subject to this license and the Acceptable Use Policy
   (ACCEPTABLE_USE_POLICY.md), which is part of it.
2. Redistribution. If you distribute the Materials or a derivative, you must include this license and the
   Acceptable Use Policy, and state prominently that you changed them if you did.
3. Acceptable use. You must not use the Materials, or let others use them, in a way the Acceptable Use
   Policy forbids.
4. No warranty. THE MATERIALS ARE PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND. Outputs may be
   inaccurate, biased or unsafe; you are responsible for evaluating them for your use.
5. Limitation of liability. In no event shall {organization} be liable for any damages arising from the
   use of the Materials.

License: {license_name}
"""

DEFAULT_AUP = """# Acceptable Use Policy for {model}

{organization} wants {model} to be used safely and responsibly. You agree not to use it, or let others
use it, to:

1. Violate the law or others' rights, including generating or promoting illegal content, harassment,
   discrimination, or infringement of intellectual property or privacy.
2. Engage in or facilitate activities with a risk of death or bodily harm: weapons, illegal drugs,
   critical infrastructure, self-harm, violence.
3. Deceive or mislead: disinformation, impersonation, spam, fraud, or presenting outputs as written by a
   person without saying so where that matters.
4. Make automated decisions with legal or similarly significant effects on people (employment, credit,
   housing, health) without human review.
5. Remove or circumvent the safety measures of the model or its deployment.

Report violations and unsafe outputs to {organization}.

This policy ({year}) may be updated; the version shipped with a release applies to that release.
"""


class ReleaseError(RuntimeError):
    """A release that cannot be made; the message says why and what to do."""


@dataclass
class ReleaseInputs:
    """Everything a release reads from the registry, fetched into local files first (then no server is needed)."""
    info: ModelVersionInfo
    hf_folder: Path
    report: dict[str, Any]
    lineage_models: list[ModelVersionInfo]
    lineage_datasets: list[str]
    model_card_html: Path | None = None
    reward_reports: dict[str, Path] = field(default_factory=dict)   # 'rm-x/3' -> its evaluation artifacts folder


def check_releasable(info: ModelVersionInfo, allow_candidate: bool) -> None:
    if CHAMPION not in info.aliases and not allow_candidate:
        raise ReleaseError(f"{info.ref} is not the champion (aliases: {', '.join(info.aliases) or 'none'}); release the "
                           f"champion, promote it first (`alignline promote {info.name} {info.version} ...`), or pass "
                           "--allow-candidate")


def preflight(registry: Registry, name: str, version: str, allow_candidate: bool = False) -> ModelVersionInfo:
    """The version, when it can be released: it exists, is the champion (or a candidate is allowed) and was evaluated.
    Cheap (tags only): callers run it before any download, so a refusal is one line."""
    try:
        info = registry.get(name, version)
    except RegistryError as e:
        raise ReleaseError(f"{e}; `alignline status` lists the registered models") from None
    check_releasable(info, allow_candidate)
    if REPORT_URI_TAG not in info.tags:
        raise ReleaseError(f"{info.ref} has no evaluation report; run `alignline evaluate --policy {info.version}` first")
    return info


def gather(registry: Registry, name: str, version: str, work: str | Path, allow_candidate: bool = False,
           models_dir: str | Path | None = None) -> ReleaseInputs:
    """Fetch a version's files (into `models_dir`, the one download path's cache), its report, model card and its
    reward models' evaluations (into `work`)."""
    try:
        info = registry.get(name, version)
        check_releasable(info, allow_candidate)
        report = registry.load_report(name, info.version)
    except RegistryError as e:
        raise ReleaseError(f"{e}; `alignline status` lists the registered models") from None
    if report is None:
        raise ReleaseError(f"{info.ref} has no evaluation report; run `alignline evaluate --policy {info.version}` first")
    work = Path(work)
    hf, _ = registry.download(name, info.version, models_dir or work / "models")
    models, datasets = registry.lineage(name, info.version)
    inputs = ReleaseInputs(info, hf, report, models, datasets)
    if card := info.tags.get("eval.card"):
        inputs.model_card_html = registry.fetch_artifact(card, work / "card" / info.version)
    for rm in models:
        if "eval.accuracy_by_level" in rm.tags and rm.run_id:
            try:  # the reward flow's report folder (tables, plots) on the run that trained it
                inputs.reward_reports[rm.ref] = registry.fetch_artifact(f"runs:/{rm.run_id}/eval", work / "rm" / rm.name / rm.version)
            except RegistryError:
                pass  # older versions kept only the tag: the accuracy table is still written from it
    return inputs


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fill(template: str, values: dict[str, str]) -> str:
    """`{key}` placeholders filled in; any other braces in a team's text stay as written."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def _template(path: str, default: str) -> str:
    return Path(path).expanduser().read_text() if path else default


def copy_weights(hf: Path, out: Path) -> str:
    """Config, safetensors weights, tokenizer (with its chat template) into `out`; returns the template's origin."""
    files = [p for p in sorted(hf.iterdir()) if p.is_file() and p.name not in SKIPPED_MODEL_FILES]
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise ReleaseError(f"{hf} has no safetensors weights; save the model with `save_pretrained` "
                           "(safe_serialization) and register it again")
    for p in files:
        if p.suffix in (".bin", ".pt", ".pth"):
            continue  # pickle weights are never shipped (arbitrary code on load); safetensors only
        shutil.copy2(p, out / p.name)
    config_path = out / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if (out / "chat_template.jinja").is_file() or tok_config.get("chat_template"):
        return "tokenizer"
    (out / "chat_template.jinja").write_text(LLAMA2_CHAT_TEMPLATE)  # tokenizers trained here use Llama 2's format
    return "llama2 (added)"


def reward_tables(models: list[ModelVersionInfo]) -> dict[str, dict[str, float]]:
    """'rm-x/N' -> accuracy by rating level (Llama 2 Table 8), for every reward model in the lineage."""
    return {m.ref: json.loads(m.tags["eval.accuracy_by_level"]) for m in models if "eval.accuracy_by_level" in m.tags}


def _markdown_table(rows: list[list[Any]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def headline(report: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(metric type, display name, value) of the report's headline numbers: what the card's model-index lists."""
    base = report.get("baseline", "the baseline")
    out = []
    for group, label in (("rm_win", "win rate judged by the reward models"), ("oracle_win", "win rate judged by the oracle")):
        if isinstance(report.get(group), dict) and "win_rate" in report[group]:
            out.append((f"{group}_rate", f"{label} vs {base}", float(report[group]["win_rate"])))
    for key in ("safety_violation_rate", "mean_oracle"):
        if isinstance(report.get(key), (int, float)):
            out.append((key, key.replace("_", " "), float(report[key])))
    for suite, result in sorted((report.get("suites") or {}).items()):
        for metric, value in sorted((result.get("metrics") or {}).items()):
            if isinstance(value, (int, float)):
                out.append((f"{suite}.{metric}", f"{suite} {metric}", float(value)))
    return out


def hf_card(inputs: ReleaseInputs, cfg: ReleaseConfig, template_origin: str, tables: dict[str, dict[str, float]]) -> str:
    """README.md: YAML metadata the Hub reads (license, base model, datasets, model-index) and the card's text."""
    import yaml

    info, report = inputs.info, inputs.report
    bases = [m.ref for m in inputs.lineage_models if m.tags.get("lineage.method") == "pretrain"]
    checkpoints = [p for m in inputs.lineage_models for p in m.tags.get("lineage.parents", "").split(",")
                   if p.startswith("checkpoint:")]
    base_model = cfg.base_model or (bases[0] if bases else (checkpoints[0].removeprefix("checkpoint:") if checkpoints else ""))
    eval_set = (report.get("held_out") or {}).get("eval_set", "held-out prompts")
    meta: dict[str, Any] = {"license": cfg.license_id}
    if cfg.license_id == "other":
        meta.update(license_name=cfg.license_name, license_link="LICENSE")
    if base_model:
        meta["base_model"] = base_model
    meta.update(datasets=list(inputs.lineage_datasets), library_name="transformers", pipeline_tag="text-generation",
                tags=["alignline", "llama", "rlhf", "chat"],
                model_index=[{"name": f"{info.name}-v{info.version}", "results": [{
                    "task": {"type": "text-generation", "name": "chat"},
                    "dataset": {"name": eval_set, "type": eval_set},
                    "metrics": [{"type": t, "name": n, "value": round(v, 4)} for t, n, v in headline(report)]}]}])
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).replace("model_index:", "model-index:")
    lineage_rows = [[m.ref, m.tags.get("lineage.method", ""), m.tags.get("lineage.datasets", "") or "-",
                     m.tags.get("lineage.git_commit", "")[:10]] for m in inputs.lineage_models]
    metric_rows = [[n, f"{v:.4g}"] for _, n, v in headline(report)]
    rm_rows = [[rm, level, f"{acc:.3f}"] for rm, by_level in tables.items() for level, acc in by_level.items()]
    promotion = {k.removeprefix("promotion."): v for k, v in info.tags.items() if k.startswith("promotion.")}
    parts = [
        f"---\n{front}---\n", f"# {info.name} v{info.version}\n",
        f"A chat model aligned with the Llama 2 recipe (SFT, human preference reward models, rejection sampling / "
        f"RLHF) by {cfg.organization}. Registered as `{info.ref}` (aliases: {', '.join(info.aliases) or 'none'}).\n",
        "## How to use\n",
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        "tok = AutoTokenizer.from_pretrained(\"PATH\")\nmodel = AutoModelForCausalLM.from_pretrained(\"PATH\")\n"
        "ids = tok.apply_chat_template([{\"role\": \"user\", \"content\": \"Hello\"}], add_generation_prompt=True, "
        "return_tensors=\"pt\")\nprint(tok.decode(model.generate(ids, max_new_tokens=64)[0, ids.shape[1]:], "
        "skip_special_tokens=True))\n```\n",
        f"Chat template: {template_origin}. " + ("A GGUF export for llama.cpp is in `gguf/`.\n"
                                                 if cfg.gguf else "\n"),
        "## Evaluation\n", f"On `{eval_set}` (held out from every training stage), against `{report.get('baseline', '-')}`; "
        "the full report is `evaluation/report.json`, suites `evaluation/suites.json`, the HTML card "
        "`evaluation/model_card.html`.\n", _markdown_table(metric_rows, ["metric", "value"]) + "\n",
        "## Reward models\n", "Accuracy by rating level on held-out comparisons (Llama 2 Table 8):\n",
        (_markdown_table(rm_rows, ["reward model", "level", "accuracy"]) if rm_rows else "None in the lineage.") + "\n",
        "## Lineage\n", _markdown_table(lineage_rows, ["model", "method", "datasets", "commit"]) + "\n",
        "## Promotion\n", (_markdown_table([[k, v] for k, v in sorted(promotion.items())], ["field", "value"])
                           if promotion else "Not promoted (released as a candidate).") + "\n",
        "## License and acceptable use\n", f"{cfg.license_id if cfg.license_id != 'other' else cfg.license_name}: see "
        "`LICENSE` and `ACCEPTABLE_USE_POLICY.md`. Outputs can be inaccurate or unsafe; evaluate them for your use.\n",
    ]
    return "\n".join(parts)


def build(inputs: ReleaseInputs, cfg: ReleaseConfig, dest: str | Path, allow_candidate: bool = False) -> dict[str, Any]:
    """Write the release folder, its manifest and archive under `dest`; an identical existing release is kept."""
    info = inputs.info
    check_releasable(info, allow_candidate)
    dest = Path(dest).expanduser().resolve()
    final = dest / f"{info.name}-v{info.version}"
    archive = dest / f"{final.name}.tar.gz"
    if final.exists():
        problems = verify(final)
        manifest = json.loads((final / MANIFEST).read_text()) if (final / MANIFEST).is_file() else {}
        if problems or manifest.get("model") != info.ref:
            raise ReleaseError(f"{final} exists and is not an intact release of {info.ref} "
                               f"({'; '.join(problems[:3]) or 'another model'}); remove it or choose another --dest")
        return {"folder": str(final), "archive": str(archive), "manifest": manifest, "reused": True}
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        manifest = _write(inputs, cfg, tmp, allow_candidate)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_archive(final, archive)
    return {"folder": str(final), "archive": str(archive), "manifest": manifest, "reused": False}


def _write(inputs: ReleaseInputs, cfg: ReleaseConfig, out: Path, allow_candidate: bool) -> dict[str, Any]:
    info, report = inputs.info, inputs.report
    template_origin = copy_weights(inputs.hf_folder, out)
    values = {"model": f"{info.name} v{info.version}", "organization": cfg.organization,
              "year": time.strftime("%Y", time.gmtime()),
              "license_name": cfg.license_name if cfg.license_id == "other" else cfg.license_id}
    (out / "LICENSE").write_text(fill(_template(cfg.license_file, DEFAULT_LICENSE), values))
    (out / "ACCEPTABLE_USE_POLICY.md").write_text(fill(_template(cfg.aup_file, DEFAULT_AUP), values))
    ev = out / "evaluation"
    ev.mkdir()
    (ev / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str))
    (ev / "suites.json").write_text(json.dumps(report.get("suites") or {}, indent=2, sort_keys=True, default=str))
    if inputs.model_card_html is not None:
        shutil.copy2(inputs.model_card_html, ev / "model_card.html")
    tables = reward_tables(inputs.lineage_models)
    rm_dir = out / "reward_models"
    rm_dir.mkdir()
    (rm_dir / "accuracy_by_level.json").write_text(json.dumps(tables, indent=2, sort_keys=True))
    for ref, folder in inputs.reward_reports.items():
        shutil.copytree(folder, rm_dir / ref.replace("/", "-v"), dirs_exist_ok=True)
    gguf = {"exported": False, "reason": "release.gguf is off"}
    if cfg.gguf:
        from alignline.services.models.gguf_export import GGUFUnsupported, export_gguf

        try:
            path = export_gguf(out, out / "gguf" / f"{info.name}-v{info.version}-{cfg.gguf_type}.gguf", cfg.gguf_type)
            gguf = {"exported": True, "file": str(path.relative_to(out)), "type": cfg.gguf_type}
        except GGUFUnsupported as e:
            gguf = {"exported": False, "reason": str(e)}
    (out / "README.md").write_text(hf_card(inputs, cfg, template_origin, tables))
    manifest = {
        "manifest_format": MANIFEST_FORMAT, "model": info.ref, "name": info.name, "version": info.version,
        "aliases": list(info.aliases), "champion": CHAMPION in info.aliases, "allow_candidate": allow_candidate,
        "released_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "release_commit": git_commit(),
        "source": info.source, "run_id": info.run_id, "chat_template": template_origin, "gguf": gguf,
        "license": {"id": cfg.license_id, "name": values["license_name"], "organization": cfg.organization,
                    "template": cfg.license_file or "built-in", "aup_template": cfg.aup_file or "built-in"},
        "evaluation": {"baseline": report.get("baseline"), "eval_set": (report.get("held_out") or {}).get("eval_set"),
                       "headline": {t: v for t, _, v in headline(report)}, "gates": report.get("gates", [])},
        "lineage": {"datasets": list(inputs.lineage_datasets),
                    "models": [{"ref": m.ref, "method": m.tags.get("lineage.method", ""),
                                "parents": m.tags.get("lineage.parents", ""), "datasets": list(m.datasets),
                                "config_hash": m.tags.get("lineage.config_hash", ""),
                                "git_commit": m.tags.get("lineage.git_commit", "")} for m in inputs.lineage_models]},
        "files": file_digests(out),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def file_digests(folder: Path) -> dict[str, dict[str, Any]]:
    """relative path -> SHA-256 and size of every file under `folder` but the manifest."""
    return {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*")) if p.is_file() and p != folder / MANIFEST}


def verify(folder: str | Path) -> list[str]:
    """Problems of a release folder against its manifest (missing, changed or unlisted files); [] when intact."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        return [f"{folder} has no {MANIFEST}"]
    listed = json.loads((folder / MANIFEST).read_text()).get("files", {})
    found = file_digests(folder)
    problems = [f"missing {p}" for p in sorted(set(listed) - set(found))]
    problems += [f"not in the manifest: {p}" for p in sorted(set(found) - set(listed))]
    problems += [f"changed: {p}" for p in sorted(set(listed) & set(found)) if listed[p]["sha256"] != found[p]["sha256"]]
    return problems


def write_archive(folder: Path, archive: Path) -> str:
    """`<folder>.tar.gz` (entries under the folder's name, sorted, owner-neutral) and `<archive>.sha256` beside it."""
    tmp = archive.with_name(f".{archive.name}.tmp-{os.getpid()}")

    def neutral(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        return ti

    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=f"{folder.name}/{path.relative_to(folder).as_posix()}", recursive=False, filter=neutral)
    os.replace(tmp, archive)
    digest = sha256_file(archive)
    archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n")
    return digest
