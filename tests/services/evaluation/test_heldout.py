"""Evaluation prompts held out by construction: the built-in split, `split_eval`, and the lineage check."""
import pyarrow as pa
import pytest

from alignline.services.data import (default_eval_prompts_table, default_prompts_table, default_sft_table,
                                     demo_comparisons_table)
from alignline.services.evaluation.heldout import EvalOverlapError, check_held_out, split_eval
from alignline.storage import Catalog
from alignline.storage.schemas import prompt_key, prompt_keys, prompt_table


def test_builtin_eval_prompts_are_in_no_builtin_training_set():
    evals = prompt_keys(default_eval_prompts_table())
    assert len(evals) >= 40 and any("safety" in pid for pid in default_eval_prompts_table().column("prompt_id").to_pylist())
    for table in (default_sft_table(0), default_prompts_table(0), demo_comparisons_table(0)):
        assert not set(evals) & set(prompt_keys(table))


def test_prompt_identity_ignores_case_spacing_and_system_prompt():
    a = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "How do I  sort a list?"}]
    b = [{"role": "user", "content": "how do i sort a list?"}]
    assert prompt_key(a) == prompt_key(b) != prompt_key([{"role": "user", "content": "How do I sort a dict?"}])


def _pool(n):
    return prompt_table([(f"p{i}", "team", i % 5 == 0, [{"role": "user", "content": f"question number {i}"}], None)
                         for i in range(n)])


def test_split_eval_is_disjoint_stable_and_keeps_its_rows_when_the_pool_grows():
    train, held = split_eval(_pool(400), 0.1)
    assert train.num_rows + held.num_rows == 400 and 20 <= held.num_rows <= 60
    assert not set(prompt_keys(train)) & set(prompt_keys(held))
    _, held_bigger = split_eval(_pool(800), 0.1)
    assert set(held.column("prompt_id").to_pylist()) <= set(held_bigger.column("prompt_id").to_pylist())


def test_an_eval_prompt_anywhere_in_the_lineage_is_refused_by_name(tmp_path):
    catalog = Catalog(tmp_path / "lake")
    train, held = split_eval(_pool(200), 0.2)
    eval_ref = catalog.publish("prompts-eval", held).ref
    clean = catalog.publish("prompts-train", train).ref
    leaked_text = held.column("messages").to_pylist()[0][0]["content"]
    sft = pa.table({"id": ["x"], "source": ["team"], "messages": [[{"role": "user", "content": leaked_text.upper()},
                                                                    {"role": "assistant", "content": "answer"}]]})
    parent = catalog.publish("sft", sft).ref
    child = catalog.publish("rs-pool", pa.table({"id": ["y"], "note": ["no prompts here"]}), parents=[parent]).ref

    check = check_held_out(held, eval_ref, catalog, [clean, "sft@0123456789abcdef"])
    assert check.overlap == 0 and check.eval_prompts == held.num_rows and check.datasets_checked == 1
    assert check.unverified == ("sft@0123456789abcdef",)  # another data dir's dataset: named, not silently passed
    with pytest.raises(EvalOverlapError, match=rf"1 of {held.num_rows} evaluation prompts .*{leaked_text!r} \(in sft@"):
        check_held_out(held, eval_ref, catalog, [clean, child])  # found through the catalog lineage of rs-pool
