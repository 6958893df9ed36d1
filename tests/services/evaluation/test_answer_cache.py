from dataclasses import dataclass

from alignline.services.evaluation.answer_cache import AnswerCache
from alignline.services.generation import SamplingParams


@dataclass
class Info:
    name: str = "policy"
    version: str = "3"
    run_id: str | None = "run-a"
    source: str = "models:/m-1"


DIALOGUES = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "rm -rf?"}]]


def test_answers_come_back_for_the_same_version_prompts_and_sampling_only(tmp_path):
    cache, params = AnswerCache(tmp_path), SamplingParams(max_new_tokens=8, temperature=0.7, top_p=0.9, seed=1234)
    key = cache.key(Info(), DIALOGUES, params)
    assert cache.get(key, 2) is None
    cache.put(key, ["hello", "no"])
    assert cache.get(key, 2) == ["hello", "no"]
    others = {cache.key(Info(version="4"), DIALOGUES, params), cache.key(Info(run_id="run-b"), DIALOGUES, params),
              cache.key(Info(), DIALOGUES[:1], params),
              cache.key(Info(), DIALOGUES, SamplingParams(max_new_tokens=9, temperature=0.7, top_p=0.9, seed=1234))}
    assert key not in others and len(others) == 4
    assert all(cache.get(k, 2) is None for k in others)


def test_a_torn_or_mismatched_file_is_a_miss(tmp_path):
    cache = AnswerCache(tmp_path)
    key = cache.key(Info(), DIALOGUES, SamplingParams())
    (tmp_path / f"{key}.json").write_text('["hello", "n')
    assert cache.get(key, 2) is None
    cache.put(key, ["only one"])
    assert cache.get(key, 2) is None
    assert not list(tmp_path.glob("*.tmp-*"))
