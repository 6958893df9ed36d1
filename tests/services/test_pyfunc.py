"""Policies as MLflow pyfuncs with a chat signature: the same greedy answers as the project's own generation, and
`mlflow.pyfunc.load_model("models:/NAME@champion")` answering through the real MLflow server (issue 17.2)."""
import uuid

import mlflow.pyfunc
import pandas as pd
import pytest

from alignline.services.generation import SamplingParams
from alignline.services.generation.sampling import generate_chat
from alignline.services.models import build_model, load_model, load_tokenizer, save_model
from alignline.services.models.pyfunc import is_chat_model_folder, save_chat_pyfunc
from alignline.services.registry import CHAMPION, Lineage, Registry
from alignline.services.tracking import tracked_run

QUESTIONS = [[{"role": "user", "content": "What does os.path.join do?"}],
             [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is a dict?"}]]


@pytest.fixture(scope="module")
def policy_dir(tokenizer, micro_config, tmp_path_factory):
    return save_model(build_model(micro_config, tokenizer=tokenizer, seed=3), tokenizer,
                      tmp_path_factory.mktemp("policy") / "hf")


def test_pyfunc_answers_like_the_projects_greedy_generation(policy_dir, tmp_path):
    assert is_chat_model_folder(policy_dir)
    loaded = mlflow.pyfunc.load_model(str(save_chat_pyfunc(policy_dir, tmp_path / "pyfunc")))
    assert [i.name for i in loaded.metadata.get_input_schema().inputs] == ["messages"]
    answers = loaded.predict(pd.DataFrame({"messages": QUESTIONS}), params={"max_new_tokens": 12})
    expected = generate_chat(load_model(policy_dir), load_tokenizer(policy_dir), QUESTIONS,
                             SamplingParams(max_new_tokens=12, temperature=0.0))
    assert list(answers) == expected and all(isinstance(a, str) for a in answers)
    with pytest.raises(Exception, match="user turn"):
        loaded.predict(pd.DataFrame({"messages": [[{"role": "assistant", "content": "hi"}]]}))


def test_reward_model_and_bare_folders_get_no_pyfunc(policy_dir, tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForSequenceClassification"]}')
    (tmp_path / "tokenizer.json").write_text("{}")
    assert not is_chat_model_folder(tmp_path) and not is_chat_model_folder(tmp_path / "missing")


@pytest.mark.integration
def test_models_uri_of_the_champion_answers_through_the_real_server(servers, policy_dir, tmp_path, monkeypatch):
    uri = servers.servers.url(servers.servers.mlflow_port)
    registry, name = Registry(uri), f"policy-{uuid.uuid4().hex[:6]}"
    with tracked_run(uri, "pyfunc-tests", "register") as run_id:
        info = registry.register_dir(name, policy_dir, Lineage(method="sft"), run_id)
    registry.promote(name, info.version, reviewer="ada", reason="pyfunc test")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # how any other tool finds the server
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    answer = loaded.predict({"messages": QUESTIONS[0]}, params={"max_new_tokens": 8})
    assert len(answer) == 1 and isinstance(answer[0], str)
    # existing callers still get the Hugging Face folder
    folder, got = registry.download(name, CHAMPION, tmp_path / "dl")
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() and got.version == "1"
    assert load_model(folder).num_parameters() == load_model(policy_dir).num_parameters()
