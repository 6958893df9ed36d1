"""HH-RLHF transcripts -> comparisons: the shared prefix is the prompt; malformed lines rejected with reasons."""
import json

from alignline.annotation import read_hh_rlhf


def test_import_splits_prompt_and_rejects_with_reasons(tmp_path):
    good = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I sort a list?\n\nAssistant: Use sorted(xs).",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I sort a list?\n\nAssistant: No."}
    lines = [json.dumps(good), "{not json", json.dumps({"chosen": good["chosen"]}),
             json.dumps({**good, "rejected": "\n\nHuman: Other\n\nAssistant: No."}),
             json.dumps({**good, "rejected": good["chosen"]}),
             json.dumps({"chosen": "\n\nAssistant: hi", "rejected": "\n\nAssistant: ho"})]
    path = tmp_path / "hh.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = read_hh_rlhf(path, margin_level="negligibly_better")
    (row,) = result.table.to_pylist()
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
    assert (row["chosen"], row["rejected"], row["margin_level"]) == ("Use sorted(xs).", "No.", "negligibly_better")
    reasons = dict(result.rejects)
    assert sorted(reasons) == [2, 3, 4, 5, 6]
    assert reasons[2].startswith("not JSON") and "'rejected'" in reasons[3] and "share the prompt" in reasons[4]
    assert "identical" in reasons[5] and "start with Human" in reasons[6]
