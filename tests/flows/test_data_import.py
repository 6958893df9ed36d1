"""`alignline data import`: the published dataset meets its contract and the stages' readers take it; rejects are
published to `<name>-quarantine` with file, line and reason."""
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignline.config import load_config
from alignline.flows.cli import main
from alignline.flows.data_import import import_dataset, run_data_import
from alignline.services.data import ImportFileError, table_dialogues
from alignline.storage import Catalog, CatalogError
from alignline.storage.schemas import QUARANTINE_SCHEMA, comparison_rows, validate_prompts

HH = "\n\nHuman: {q}\n\nAssistant: {a}"


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_preference_import_is_read_by_the_reward_reader(tmp_path):
    path = tmp_path / "prefs.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "q1", "chosen": "good", "rejected": "bad", "score_chosen": 9, "score_rejected": 2},
        {"chosen": HH.format(q="q2", a="kind"), "rejected": HH.format(q="q2", a="rude")},
        {"chosen": [{"role": "user", "content": "q3"}, {"role": "assistant", "content": "yes"}],
         "rejected": [{"role": "user", "content": "q3"}, {"role": "assistant", "content": "no"}]},
        {"chosen": "no prompt here", "rejected": "none here either"},
    ]).encode()))
    catalog = Catalog(tmp_path / "lake")
    out = import_dataset(catalog, path, "preference", True, "comparisons-import-safety", "better")

    assert out["dataset"].startswith("comparisons-import-safety@") and out["rows"] == 3
    assert out["layouts"] == {"prompt/chosen/rejected": 1, "hh-rlhf transcript": 1,
                              "chosen/rejected (conversational, implicit prompt)": 1}
    rows = comparison_rows(catalog.read_ref(out["dataset"]), out["dataset"])  # what the reward flow reads
    assert [(r["prompt"][-1]["content"], r["chosen"], r["rejected"]) for r in rows] == [
        ("q1", "good", "bad"), ("q2", "kind", "rude"), ("q3", "yes", "no")]
    assert all(r["is_safety"] and r["margin_level"] == "better" for r in rows)
    assert catalog.read_ref(out["dataset"]).column("score_chosen").to_pylist() == [9.0, None, None]
    meta = catalog.resolve(out["dataset"]).metadata
    assert meta["file"] == str(path.resolve()) and meta["quarantine_reasons"] == {"no prompt": 1}
    assert meta["layouts"] == out["layouts"] and meta["margin_level"] == "better"

    quarantine = catalog.read_ref(out["quarantine_dataset"])
    assert quarantine.schema == QUARANTINE_SCHEMA
    assert quarantine.select(["source", "record_id"]).to_pylist() == [
        {"source": "prefs.jsonl.gz", "record_id": "line 4"}]
    assert out["first_quarantined"] == [f"prefs.jsonl.gz line 4: {quarantine.column('reason')[0].as_py()}"]


def test_sft_parquet_import_is_read_by_table_dialogues(tmp_path):
    path = tmp_path / "sft.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}]},
        {"prompt": [{"role": "user", "content": "q2"}], "completion": [{"role": "user", "content": "oops"}]},
    ]), path)
    catalog = Catalog(tmp_path / "lake")
    out = import_dataset(catalog, path, "sft", False, "sft-import", "better")
    assert table_dialogues(catalog.read_ref(out["dataset"])) == [
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]]
    assert catalog.read_ref(out["quarantine_dataset"]).column("record_id").to_pylist() == ["row 1"]
    # content-addressed: importing the same file again gives the same version
    assert import_dataset(catalog, path, "sft", False, "sft-import", "better")["dataset"] == out["dataset"]


def test_run_data_import_default_names_and_margin_from_config(tmp_path):
    cfg = load_config("tiny", overrides=["annotation.public_margin_level=slightly_better"], home=tmp_path / "home")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "q", "reference": "r"}, {"messages": []}])
    out = run_data_import(cfg, str(prompts), "prompts")
    assert out["dataset"].startswith("prompts-import@")
    assert out["quarantine_dataset"].startswith("prompts-import-quarantine@")
    catalog = Catalog(cfg.home / "lake")
    validate_prompts(catalog.read_ref(out["dataset"]))

    prefs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    out = run_data_import(cfg, str(prefs), "preference")
    assert out["dataset"].startswith("comparisons-import@") and out["quarantine_dataset"] is None
    assert catalog.read_ref(out["dataset"]).column("margin_level").to_pylist() == ["slightly_better"]
    named = run_data_import(cfg, str(prefs), "preference", safety=True, name="team-prefs")
    assert named["dataset"].startswith("team-prefs@")


def test_nothing_usable_publishes_the_quarantine_then_fails(tmp_path):
    path = write_jsonl(tmp_path / "text.jsonl", [{"text": "a document"}, {"text": "another"}])
    catalog = Catalog(tmp_path / "lake")
    with pytest.raises(ImportFileError, match=r"no usable sft records \(2 quarantined in sft-import-quarantine@"):
        import_dataset(catalog, path, "sft", False, "sft-import", "better")
    assert catalog.find("sft-import") is None and catalog.get("sft-import-quarantine").num_rows == 2
    with pytest.raises(CatalogError):
        import_dataset(catalog, path, "sft", False, "Bad/Name", "better")


def test_cli_data_import(tmp_path, capsys):
    home = tmp_path / "home"
    good = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "completion": "a"}, "{broken"])
    assert main(["data", "import", str(good), "--kind", "sft", "--home", str(home)]) == 0
    printed = capsys.readouterr().out
    assert "sft-import@" in printed and "quarantined  d.jsonl line 2: not JSON:" in printed
    assert Catalog(home / "lake").get("sft-import").num_rows == 1

    bad = tmp_path / "d.jsonl.gz"
    bad.write_bytes(b"plain text")
    assert main(["data", "import", str(bad), "--kind", "sft", "--home", str(home)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("alignline: data import:") and "not a gzip file" in err and "\n" not in err
    assert main(["data", "import", str(good), "--kind", "sft", "--safety", "--home", str(home)]) == 2
