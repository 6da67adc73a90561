import pytest
import yaml

from frugalnas.config import load_config, parse_config
from frugalnas.errors import ConfigError


def write(tmp_path, data, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_fill_in_and_design_example_validates(tmp_path):
    path = write(tmp_path, {
        "name": "quickstart",
        "dataset": {"source": "digits", "image_size": 16, "codec": "jpeg", "quality": 75},
        "embedding": {"kind": "triplet", "latent_dim": 16, "epochs": 10},
        "selection": {"policy": "dds", "subset_size": 200, "hardness": 0.9, "mastery": 0.6, "warmup_epochs": 2},
        "space": "search_spaces/nb201.yaml",
        "search": {"strategy": "evolution", "budget": 40, "scheduler": "asha", "epochs_per_candidate": 4},
        "final": {"epochs": 20},
        "resources": {"workers": 2, "cpus_per_trial": 1},
        "tracking": {"uri": None, "experiment": "quickstart"},
    })
    config = load_config(path)
    assert config.selection.policy == "dds" and config.search.scheduler == "asha"
    assert config.final.batch_size == 64  # a default


@pytest.mark.parametrize("data,fragments", [
    ({"name": "x", "selection": {"polcy": "dds"}}, ["selection.polcy", "unknown key", "allowed keys: policy"]),
    ({"name": "x", "search": {"budget": "many"}}, ["search.budget", "'many'"]),
    ({"name": "x", "selection": {"mastery": 1.5}}, ["selection.mastery", "less than or equal to 1", "1.5"]),
    ({"name": "x", "dataset": {"codec": "gif"}}, ["dataset.codec", "allowed: avif, h264, h265, jpeg, png, raw, webp", "'gif'"]),
    ({"name": "x", "dataset": {"codec": "h264", "quality": 60}}, ["dataset", "quality 60 is out of range", "CRF 0..51"]),
    ({"name": "x", "bogus": 1}, ["bogus", "unknown key", "allowed keys: name, seed, dataset"]),
    ({"selection": {}}, ["missing key 'name'"]),
    ({"name": "x", "selection": {"mastery_rule": "easy-fraction", "easy_quantile": 0.5}},
     ["selection", "mastery_rule 'easy-fraction' needs the fixed easy threshold"]),
    ({"name": "x", "fidelity": {"table": "t.csv", "budgets": [100],
                                "arms": {"a": {"mastery_rule": "easy-fraction", "easy_quantile": 0.5}}}},
     ["fidelity.arms.a", "needs the fixed easy threshold"]),
])
def test_errors_name_file_key_value_and_allowed(tmp_path, data, fragments):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_overrides_are_parsed_as_yaml_and_validated():
    config = parse_config({"name": "x"}, overrides=["search.budget=7", "selection.policy=full", "final.lr=0.1"])
    assert config.search.budget == 7 and config.selection.policy == "full" and config.final.lr == 0.1
    with pytest.raises(ConfigError, match="search.budget"):
        parse_config({"name": "x"}, overrides=["search.budget=-3"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        parse_config({"name": "x"}, overrides=["search.budget"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml")


@pytest.mark.parametrize("search, fragments", [
    ({"strategy": "predictor", "params": {"population_size": 8}},
     ["search.params: unknown setting(s) population_size for strategy 'predictor'", "allowed: n_initial"]),
    ({"strategy": "evolution", "params": {"seed": 3}}, ["unknown setting(s) seed", "allowed: population_size"]),
    ({"strategy": "darts", "params": {"arch_lrr": 0.1}}, ["unknown setting(s) arch_lrr for strategy 'darts'",
                                                          "allowed: epochs, batch_size, lr"]),
    ({"strategy": "predictor", "params": {"screen": 4}},  # values are checked too, by building the strategy
     ["search.params: search strategy 'predictor': predictor chooses every proposal with its own model"]),
    ({"strategy": "evolution", "params": {"population_size": 4, "sample_size": 5}},
     ["search.params: search strategy 'evolution': sample_size (5) must not exceed population_size (4)"]),
])
def test_strategy_settings_are_checked_before_anything_runs(tmp_path, search, fragments):
    path = write(tmp_path, {"name": "x", "space": "nb201", "search": search})
    with pytest.raises(ConfigError) as error:
        load_config(path)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_known_strategy_settings_pass():
    from frugalnas.config import parse_config

    assert parse_config({"name": "x", "search": {"strategy": "evolution",
                                                 "params": {"population_size": 8}}}).search.params == {
        "population_size": 8}
    assert parse_config({"name": "x", "search": {"strategy": "darts", "params": {"arch_lr": 0.003}}})
