"""Imports of TRL / OpenRLHF / HH-RLHF files: each layout by hand, the file formats, quarantine with line numbers."""
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignline.annotation.hh_rlhf import parse_transcript
from alignline.services.data import ImportFileError, import_records, read_records, table_dialogues
from alignline.services.data.importers import RecordError, preference_pair, prompt_row, sft_dialogue
from alignline.storage.schemas import comparison_rows, validate_prompts

U = lambda text: {"role": "user", "content": text}        # noqa: E731
A = lambda text: {"role": "assistant", "content": text}   # noqa: E731
S = lambda text: {"role": "system", "content": text}      # noqa: E731


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# -- sft ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("record, layout, dialogue", [
    ({"messages": [S("s"), U("q"), A("a")]}, "messages", [S("s"), U("q"), A("a")]),
    ({"prompt": "q", "completion": "a"}, "prompt/completion", [U("q"), A("a")]),
    ({"prompt": [S("s"), U("q")], "completion": [A("a")]}, "prompt/completion (conversational)",
     [S("s"), U("q"), A("a")]),
    ({"prompt": [U("q1"), A("a1"), U("q2")], "completion": [A("a2")]}, "prompt/completion (conversational)",
     [U("q1"), A("a1"), U("q2"), A("a2")]),
    ({"prompt": "q", "response": "a", "system": "s"}, "prompt/response", [S("s"), U("q"), A("a")]),
])
def test_sft_layouts(record, layout, dialogue):
    assert sft_dialogue(record) == (layout, dialogue)


@pytest.mark.parametrize("record, reason, says", [
    ({"text": "### Human: q ### Assistant: a"}, "text only", "no prompt/answer split"),
    ({"question": "q"}, "unknown layout", "got keys ['question']"),
    ({"prompt": "q", "completion": "  "}, "bad dialogue", "empty answer"),
    ({"prompt": [U("q")], "completion": [U("again")]}, "bad dialogue", "role 'user'"),
    ({"prompt": 3, "completion": "a"}, "bad field", "'prompt' must be text"),
    (["q", "a"], "not an object", "got list"),
])
def test_sft_rejects_say_why(record, reason, says):
    with pytest.raises(RecordError) as e:
        sft_dialogue(record)
    assert e.value.reason == reason and says in str(e.value)


# -- preference --------------------------------------------------------------------------------------
def test_openrlhf_strings():
    layout, pair = preference_pair({"prompt": "q", "chosen": "good", "rejected": "bad", "margin": 2})
    assert layout == "prompt/chosen/rejected"
    assert pair == {"prompt": [U("q")], "chosen": "good", "rejected": "bad", "margin": 2.0,
                    "score_chosen": None, "score_rejected": None}


def test_trl_conversational_explicit_prompt_and_openrlhf_full_conversations():
    explicit = {"prompt": [S("s"), U("q")], "chosen": [A("good")], "rejected": [A("bad")]}
    full = {"prompt": [S("s"), U("q")], "chosen": [S("s"), U("q"), A("good")], "rejected": [S("s"), U("q"), A("bad")]}
    for record in (explicit, full):
        layout, pair = preference_pair(record)
        assert layout == "prompt/chosen/rejected (conversational)"
        assert (pair["prompt"], pair["chosen"], pair["rejected"]) == ([S("s"), U("q")], "good", "bad")


def test_trl_implicit_prompt_is_the_shared_prefix():
    record = {"chosen": [U("q1"), A("a1"), U("q2"), A("good")], "rejected": [U("q1"), A("a1"), U("q2"), A("bad")],
              "score_chosen": 8.0, "score_rejected": 3}
    layout, pair = preference_pair(record)
    assert layout == "chosen/rejected (conversational, implicit prompt)"
    assert pair["prompt"] == [U("q1"), A("a1"), U("q2")] and (pair["chosen"], pair["rejected"]) == ("good", "bad")
    assert (pair["score_chosen"], pair["score_rejected"], pair["margin"]) == (8.0, 3.0, None)


def test_hh_transcripts_use_the_passed_parser():
    record = {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: q\n\nAssistant: good",
              "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: q\n\nAssistant: bad"}
    layout, pair = preference_pair(record, parse_transcript)
    assert layout == "hh-rlhf transcript"
    assert pair["prompt"] == [U("hi"), A("hello"), U("q")] and (pair["chosen"], pair["rejected"]) == ("good", "bad")
    with pytest.raises(RecordError, match="need a transcript parser"):
        preference_pair(record)


@pytest.mark.parametrize("record, reason", [
    ({"chosen": "good", "rejected": "bad"}, "no prompt"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "identical answers"),
    ({"prompt": "q", "chosen": "", "rejected": "bad"}, "empty answer"),
    ({"prompt": "q", "chosen": [A("a"), U("more"), A("b")], "rejected": "bad"}, "bad answer"),
    ({"chosen": [U("q1"), A("good")], "rejected": [U("q2"), A("bad")]}, "prompt mismatch"),
    ({"chosen": [U("q"), A("good"), U("x")], "rejected": [U("q"), A("bad")]}, "bad answer"),
    ({"chosen": [A("good")], "rejected": [A("bad")]}, "no prompt"),
    ({"prompt": [U("q"), A("a")], "chosen": "good", "rejected": "bad"}, "bad prompt"),
    ({"chosen": "\n\nHuman: q\n\nHuman: again\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"},
     "bad transcript"),
    ({"prompt": "q", "chosen": "good", "rejected": "bad", "margin": "large"}, "bad score"),
    ({"prompt": "q", "chosen": "good"}, "unknown layout"),
])
def test_preference_rejects_say_why(record, reason):
    with pytest.raises(RecordError) as e:
        preference_pair(record, parse_transcript)
    assert e.value.reason == reason


# -- prompts -----------------------------------------------------------------------------------------
def test_prompt_layouts_and_optional_fields():
    assert prompt_row({"prompt": "q", "reference": "r", "id": 7, "category": "math"}) == (
        "prompt", {"messages": [U("q")], "reference": "r", "id": "7", "category": "math"})
    assert prompt_row({"prompt": [S("s"), U("q")]})[0] == "prompt (conversational)"
    assert prompt_row({"messages": [U("q1"), A("a1"), U("q2")]})[1]["messages"] == [U("q1"), A("a1"), U("q2")]
    for bad, reason in (({"messages": [U("q"), A("a")]}, "bad prompt"), ({"text": "q"}, "unknown layout"),
                        ({"prompt": "q", "reference": ["r"]}, "bad field"), ({"prompt": " "}, "bad prompt")):
        with pytest.raises(RecordError) as e:
            prompt_row(bad)
        assert e.value.reason == reason


# -- files -------------------------------------------------------------------------------------------
def test_jsonl_bad_lines_are_quarantined_with_their_numbers(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"prompt": "q1", "completion": "a1"},          # line 1
        "{not json",                                   # line 2
        {"text": "whole document"},                    # line 3
        "",                                            # line 4: blank, skipped
        {"messages": [U("q2"), A("a2")]},              # line 5
        '"just a string"',                             # line 6
    ])
    result = import_records("sft", read_records(path), path.name)
    assert table_dialogues(result.table) == [[U("q1"), A("a1")], [U("q2"), A("a2")]]
    assert result.table.column("id").to_pylist() == ["import:mixed.jsonl:line 1", "import:mixed.jsonl:line 5"]
    assert [(q["source"], q["record_id"]) for q in result.quarantine] == [
        ("mixed.jsonl", "line 2"), ("mixed.jsonl", "line 3"), ("mixed.jsonl", "line 6")]
    assert result.quarantine[0]["record"] == "{not json" and result.quarantine[0]["reason"].startswith("not JSON:")
    assert result.metadata() == {"rows": 2, "layouts": {"prompt/completion": 1, "messages": 1}, "quarantined": 3,
                                 "quarantine_reasons": {"not JSON": 1, "text only": 1, "not an object": 1}}


def test_gzip_and_parquet_give_the_same_pairs_as_jsonl(tmp_path):
    rows = [{"prompt": "q1", "chosen": "good", "rejected": "bad"},
            {"prompt": "q2", "chosen": "fine", "rejected": "fine"},   # identical answers: quarantined
            {"prompt": "q3", "chosen": "yes", "rejected": "no"}]
    plain = write_jsonl(tmp_path / "p.jsonl", rows)
    gz = tmp_path / "p.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    results = {p.name: import_records("preference", read_records(p), p.name, source="x") for p in (plain, gz, parquet)}
    tables = [r.table.drop_columns(["comparison_id"]) for r in results.values()]
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])
    assert [r["chosen"] for r in comparison_rows(results["p.parquet"].table)] == ["good", "yes"]
    assert [q["record_id"] for q in results["p.jsonl.gz"].quarantine] == ["line 2"]
    assert [q["record_id"] for q in results["p.parquet"].quarantine] == ["row 1"]  # pyarrow's row index


def test_parquet_with_message_lists(tmp_path):
    path = tmp_path / "conv.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"chosen": [U("q"), A("good")], "rejected": [U("q"), A("bad")]},
        {"chosen": [U("q"), A("same")], "rejected": [U("q"), A("same")]}]), path)
    result = import_records("preference", read_records(path), path.name, is_safety=True, margin_level="slightly_better")
    [row] = comparison_rows(result.table)
    assert row == {"prompt": [U("q")], "chosen": "good", "rejected": "bad", "margin_level": "slightly_better",
                   "safety_category": None, "is_safety": True, "source": "import:conv.parquet"}
    assert result.table.column("kind").to_pylist() == ["safety"]
    assert result.layouts == {"chosen/rejected (conversational, implicit prompt)": 1}
    assert "margin" not in result.table.column_names  # no score columns when the file has none


def test_parquet_mixing_layouts_reads_null_columns_as_absent(tmp_path):
    path = tmp_path / "mixed.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"messages": [U("q1"), A("a1")], "prompt": None, "completion": None},
        {"messages": None, "prompt": "q2", "completion": "a2"},
        {"messages": None, "prompt": None, "completion": None}]), path)
    result = import_records("sft", read_records(path), path.name)
    assert table_dialogues(result.table) == [[U("q1"), A("a1")], [U("q2"), A("a2")]]
    assert result.layouts == {"messages": 1, "prompt/completion": 1}
    assert [(q["record_id"], q["reason"].split(":")[0]) for q in result.quarantine] == [("row 2", "unknown layout")]


def test_prompts_file_with_duplicates_and_categories(tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "How do I sort a list?", "category": "python"},
        {"prompt": "how do I  sort a list?"},                       # the same prompt (normalized): quarantined
        {"messages": [S("s"), U("Delete my files")], "id": "p-1", "reference": "Back up first."},
        {"prompt": "Another", "id": "p-1"},                         # id taken: quarantined
    ])
    result = import_records("prompts", read_records(path), path.name, is_safety=True)
    validate_prompts(result.table)
    assert result.table.num_rows == 2 and result.table.column("is_safety").to_pylist() == [True, True]
    assert result.table.column("category").to_pylist() == ["python", None]
    assert result.table.column("reference").to_pylist() == [None, "Back up first."]
    assert result.reasons == {"duplicate prompt": 1, "duplicate id": 1}
    assert [q["record_id"] for q in result.quarantine] == ["line 2", "line 4"]


@pytest.mark.parametrize("name, content, says", [
    ("bad.jsonl.gz", b'{"prompt": "q"}\n', "not a gzip file"),
    ("cut.jsonl.gz", gzip.compress(b'{"prompt": "q", "completion": "a"}\n' * 50)[:-30], "damaged or truncated"),
    ("bad.parquet", b"PAR1 this is not parquet", "not a readable Parquet file"),
])
def test_unreadable_files_raise_one_line(tmp_path, name, content, says):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImportFileError) as e:
        import_records("sft", read_records(path), name)
    assert says in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ImportFileError, match="no such file"):
        list(read_records(tmp_path / "missing.jsonl"))
