import pytest

from alignline.config import ConfigError, load_config, parse_override, resolve_home


def test_default_preset_is_tiny_and_valid():
    cfg = load_config(home="/tmp/x")
    assert cfg.preset == "tiny"
    assert cfg.servers.host == "127.0.0.1"
    assert cfg.reward.safety_threshold == 0.15
    assert cfg.rlhf.kl_beta == 0.01


def test_paper_presets_carry_paper_numbers():
    cfg = load_config(preset="llama2-70b", home="/tmp/x")
    assert (cfg.model.hidden_size, cfg.model.num_hidden_layers, cfg.model.num_key_value_heads) == (8192, 80, 8)
    assert cfg.rlhf.kl_beta == 0.005
    assert cfg.reward.learning_rate == 5e-6
    assert cfg.sft.learning_rate == 2e-5 and cfg.sft.batch_size == 64


@pytest.mark.parametrize("override, message", [
    ("sft.learning_rate=-1", "sft.learning_rate = -1.0 is not allowed; allowed: > 0"),
    ("reward.margin='huge'", "reward.margin = 'huge' is not allowed; allowed: 'none', 'small', 'large'"),
    ("sft.epochs=1.5", "sft.epochs = 1.5 is not allowed; allowed: an integer"),
    ("sft.nope=1", "sft.nope is not a field of [sft]"),
    ("servers.mlflow_port=80", "servers.mlflow_port = 80 is not allowed; allowed: >= 1024 and <= 65535"),
    ("servers.host='0.0.0.0'", "servers.host = '0.0.0.0' is not allowed; allowed: '127.0.0.1'"),
    ("servers.prefect_port=15000", "servers.mlflow_port"),
    ("rlhf.ppo_enabled='maybe'", "rlhf.ppo_enabled = 'maybe' is not allowed; allowed: true or false"),
    ("nosuch.field=1", "[nosuch] is not a config section"),
])
def test_bad_values_name_field_value_and_rule(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=[override], home="/tmp/x")
    assert message in str(err.value)


def test_bad_preset_lists_allowed():
    with pytest.raises(ConfigError, match="preset = 'huge' is not allowed; allowed: 'tiny'"):
        load_config(preset="huge")


def test_file_then_overrides_precedence(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('preset = "small"\n[sft]\nepochs = 3\nlearning_rate = 0.01\n')
    cfg = load_config(file=f, overrides=["sft.epochs=4"], home=tmp_path)
    assert cfg.preset == "small" and cfg.sft.epochs == 4 and cfg.sft.learning_rate == 0.01
    assert cfg.model.hidden_size == 512  # from the small preset


def test_bad_file_is_named(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[sft\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(file=f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(file=tmp_path / "missing.toml")
    f.write_text("[sft]\nepochs = 'two'\n")
    with pytest.raises(ConfigError, match="sft.epochs = 'two' is not allowed"):
        load_config(file=f)


def test_config_file_from_environment(tmp_path, monkeypatch):
    f = tmp_path / "run.toml"
    f.write_text("[reward]\nmargin = 'large'\n")
    monkeypatch.setenv("ALIGNLINE_CONFIG", str(f))
    assert load_config(home=tmp_path).reward.margin == "large"


def test_home_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNLINE_HOME", str(tmp_path / "h"))
    assert resolve_home() == (tmp_path / "h").resolve()
    monkeypatch.delenv("ALIGNLINE_HOME")
    assert resolve_home().name == ".alignline"


def test_override_parsing():
    assert parse_override("sft.epochs=3") == ("sft", "epochs", 3)
    assert parse_override("corpus.sources=['a', 'b']") == ("corpus", "sources", ["a", "b"])
    assert parse_override("corpus.language=en") == ("corpus", "language", "en")
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_override("epochs")


def test_digest_tracks_results_not_servers():
    a = load_config(home="/tmp/x")
    assert a.digest() == load_config(overrides=["servers.mlflow_port=25001"], home="/tmp/x").digest()
    assert a.digest() != load_config(overrides=["sft.epochs=3"], home="/tmp/x").digest()


def test_stage_digest_reads_only_its_sections():
    a = load_config(home="/tmp/x")
    b = load_config(overrides=["evaluation.min_win_rate=0.6"], home="/tmp/x")
    assert a.digest("model", "sft") == b.digest("model", "sft") and a.digest() != b.digest()
    assert a.digest("model", "sft") != load_config(overrides=["sft.epochs=3"], home="/tmp/x").digest("model", "sft")
