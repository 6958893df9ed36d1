import json

import pytest

from alignline.services.data import SFTDataError, default_sft_table, read_jsonl, table_dialogues


def test_default_sft_data_is_deterministic_and_has_both_parts():
    table = default_sft_table(stdlib_limit=50)
    assert table.equals(default_sft_table(stdlib_limit=50))
    sources = table.column("source").to_pylist()
    assert sources.count("stdlib-docstring") == 50 and sources.count("safety") >= 20
    first = table_dialogues(table)[0]
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    assert first[2]["content"].startswith("`json.")  # answered from the signature and docstring
    safety = [d for d, s in zip(table_dialogues(table), sources) if s == "safety"]
    assert all("irreversible" in d[-1]["content"] for d in safety)


def test_jsonl_accepts_prompt_response_and_messages(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": "r", "system": "s"}) + "\n\n" +
                    json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                             {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}) + "\n")
    dialogues = read_jsonl(path)
    assert dialogues[0] == [{"role": "system", "content": "s"}, {"role": "user", "content": "p"},
                            {"role": "assistant", "content": "r"}]
    assert len(dialogues[1]) == 4


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 1: not valid JSON"),
    (json.dumps({"question": "q"}), "line 1: needs 'prompt' and 'response'"),
    (json.dumps({"prompt": "p", "response": 3}), "line 1: 'response' must be a string"),
    (json.dumps({"prompt": "p", "response": "  "}), "line 1: message 1 is an empty answer"),
    (json.dumps({"messages": [{"role": "user", "content": "a"}]}), "line 1: a dialogue for training must end"),
])
def test_jsonl_errors_name_the_line_and_the_rule(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(SFTDataError, match=message):
        read_jsonl(path)


def test_a_line_separator_inside_a_json_string_does_not_split_the_record(tmp_path):
    path = tmp_path / "demos.jsonl"
    path.write_text('{"prompt": "first\u2028line", "response": "ok\u2029done"}\n', encoding="utf-8")
    (dialogue,) = read_jsonl(path)
    assert dialogue[0]["content"] == "first\u2028line" and dialogue[1]["content"] == "ok\u2029done"


def test_bad_lines_are_quarantined_with_their_line_and_reason_when_asked(tmp_path):
    path = tmp_path / "demos.jsonl"
    path.write_bytes(b'{"prompt": "q", "response": "a"}\n\x80\x81\n{"prompt": 1, "response": "a"}\n[[[\n'
                     b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    quarantine: list[dict] = []
    dialogues = read_jsonl(path, quarantine=quarantine)
    assert len(dialogues) == 2
    assert [(q["record_id"], q["reason"].split(": ", 1)[1].split(" (")[0]) for q in quarantine] == [
        ("line 2", "not UTF-8"), ("line 3", "'prompt' must be a string"), ("line 4", "not valid JSON")]
    with pytest.raises(SFTDataError, match="line 2: not UTF-8"):  # strict without a quarantine list
        read_jsonl(path)
