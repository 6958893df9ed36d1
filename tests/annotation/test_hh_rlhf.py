"""HH-RLHF transcripts -> comparisons: the shared prefix is the prompt; .jsonl and .jsonl.gz; malformed lines
quarantined with reasons; --kind safety marks harmless pairs; held-out prompts apart by hash."""
import gzip
import json

import pytest

from alignline.annotation import read_hh_rlhf
from alignline.annotation.hh_rlhf import HHImportError

GOOD = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I sort a list?\n\nAssistant: Use sorted(xs).",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I sort a list?\n\nAssistant: No."}


def pair(i: int, prompt: str | None = None) -> str:
    q = prompt or f"Question {i}?"
    return json.dumps({"chosen": f"\n\nHuman: {q}\n\nAssistant: A careful answer {i}.",
                       "rejected": f"\n\nHuman: {q}\n\nAssistant: Go away {i}."})


def test_import_splits_prompt_and_quarantines_with_reasons(tmp_path):
    lines = [json.dumps(GOOD), "{not json", json.dumps({"chosen": GOOD["chosen"]}),
             json.dumps({**GOOD, "rejected": "\n\nHuman: Other\n\nAssistant: No."}),
             json.dumps({**GOOD, "rejected": GOOD["chosen"]}),
             json.dumps({"chosen": "\n\nAssistant: hi", "rejected": "\n\nAssistant: ho"})]
    path = tmp_path / "hh.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\xfe broken bytes\n")
    result = read_hh_rlhf(path, margin_level="negligibly_better")
    (row,) = result.table.to_pylist()
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
    assert (row["chosen"], row["rejected"], row["margin_level"]) == ("Use sorted(xs).", "No.", "negligibly_better")
    assert (row["is_safety"], row["kind"], row["safety_category"]) == (False, "helpfulness", None)
    reasons = {r.line: r.reason for r in result.rejects}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7]
    assert reasons[2].startswith("not JSON") and "'rejected'" in reasons[3] and "share the prompt" in reasons[4]
    assert "identical" in reasons[5] and "start with Human" in reasons[6] and reasons[7].startswith("not UTF-8")
    assert result.rejects[0].text == "{not json"  # the quarantined record itself is kept
    assert result.reject_counts()["not JSON"] == 1 and sum(result.reject_counts().values()) == 6


def test_gzip_and_plain_files_give_the_same_pairs(tmp_path):
    text = "\n".join([pair(i) for i in range(20)] + ["{bad"]) + "\n"
    (tmp_path / "a.jsonl").write_text(text)
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as fh:
        fh.write(text)
    plain = read_hh_rlhf(tmp_path / "a.jsonl", source="hh-rlhf")
    packed = read_hh_rlhf(tmp_path / "a.jsonl.gz", source="hh-rlhf")
    assert plain.table.num_rows == 20 and plain.table.equals(packed.table)
    assert [r.line for r in packed.rejects] == [21]


def test_bad_gzip_is_a_clear_error_not_a_traceback(tmp_path):
    fake = tmp_path / "fake.jsonl.gz"
    fake.write_text(pair(0))
    with pytest.raises(HHImportError, match="not a gzip file"):
        read_hh_rlhf(fake)
    good = gzip.compress(("\n".join(pair(i) for i in range(200)) + "\n").encode())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(HHImportError, match="damaged or truncated"):
        read_hh_rlhf(cut)
    with pytest.raises(HHImportError, match="no such file"):
        read_hh_rlhf(tmp_path / "missing.jsonl.gz")


def test_kind_safety_marks_harmless_pairs_without_a_category(tmp_path):
    (tmp_path / "harmless.jsonl").write_text(pair(1) + "\n" + pair(2) + "\n")
    rows = read_hh_rlhf(tmp_path / "harmless.jsonl", kind="safety").table.to_pylist()
    assert {(r["is_safety"], r["kind"], r["safety_category"], r["source"]) for r in rows} == {
        (True, "safety", None, "hh-rlhf:harmless.jsonl")}
    with pytest.raises(ValueError, match="kind 'harmless'"):
        read_hh_rlhf(tmp_path / "harmless.jsonl", kind="harmless")


def test_heldout_prompts_are_disjoint_and_keep_their_side(tmp_path):
    lines = [pair(i, prompt=f"Shared question {i % 60}?") for i in range(180)]  # every prompt three times
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    result = read_hh_rlhf(tmp_path / "a.jsonl", kind="safety", heldout_share=0.3)
    train_prompts = set(result.table.column("prompt_id").to_pylist())
    held_prompts = set(result.heldout.column("prompt_id").to_pylist())
    assert train_prompts and held_prompts and not train_prompts & held_prompts
    assert 30 < result.heldout.num_rows < 90 and result.heldout.num_rows % 3 == 0
    (tmp_path / "b.jsonl").write_text("\n".join(lines + [pair(i) for i in range(500, 540)]) + "\n")
    grown = read_hh_rlhf(tmp_path / "b.jsonl", kind="safety", heldout_share=0.3)
    assert held_prompts <= set(grown.heldout.column("prompt_id").to_pylist())  # a prompt keeps its side


def test_cli_import_publishes_training_heldout_and_quarantine_datasets(tmp_path):
    from alignline.config import load_config
    from alignline.flows.harvest import run_import_hh_rlhf
    from alignline.storage import Catalog

    path = tmp_path / "harmless-base.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join([pair(i) for i in range(50)] + ["oops"]) + "\n").encode()))
    cfg = load_config("tiny", overrides=["annotation.public_heldout_share=0.2"], home=tmp_path / "home")
    out = run_import_hh_rlhf(cfg, str(path), "safety")
    catalog = Catalog(cfg.home / "lake")
    train, held = catalog.read_ref(out["dataset"]), catalog.read_ref(out["heldout_dataset"])
    assert out["dataset"].startswith("comparisons-public-safety@")
    assert out["heldout_dataset"].startswith("comparisons-public-safety-heldout@")
    assert train.num_rows + held.num_rows == 50 and held.num_rows == out["heldout_pairs"] > 0
    assert all(train.column("is_safety").to_pylist())
    assert out["quarantined"] == 1 and out["first_quarantined"] == ["line 51: not JSON: Expecting value"]
    quarantined = catalog.read_ref(out["quarantine_dataset"]).to_pylist()
    assert out["quarantine_dataset"].startswith("comparisons-public-safety-quarantine@")
    assert quarantined == [{"source": "harmless-base.jsonl.gz", "record_id": "line 51", "task_id": None,
                            "reason": "not JSON: Expecting value", "record": "oops"}]
    assert catalog.resolve(out["dataset"]).metadata["quarantined"] == 1
