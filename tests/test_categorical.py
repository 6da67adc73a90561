"""The categorical space family (a space declared in YAML alone) and tabular benchmarks on it:
string formats, conditions, the operators every strategy uses, YAML errors, builders, table
formats, and NAS-Bench-201 written as a categorical space giving the built-in family's results."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from frugalnas.errors import ConfigError, DataError
from frugalnas.spaces import CategoricalSpace, load_space
from frugalnas.strategies import STRATEGIES, make_strategy
from frugalnas.strategies.benchmark import read_table, run_searcher_benchmark
from frugalnas.strategies.cli_bench import bench_searchers_command
from frugalnas.strategies.synthetic import nb201_like_table

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
NB201_CATEGORICAL = REPO / "search_spaces" / "examples" / "nb201_categorical.yaml"
NATS = REPO.parent / "shared" / "data" / "nb201" / "nats_tss.csv"
MACRO = """\
family: categorical
format: {style: indices}          # each decision's choice index, concatenated
decisions:
  - {name: layer1, choices: [identity, mb3_k3, mb6_k5]}
  - {name: layer2, choices: [identity, mb3_k3, mb6_k5]}
  - {name: layer3, choices: [identity, mb3_k3, mb6_k5]}
  - {name: layer4, choices: [identity, mb3_k3, mb6_k5]}
"""
CONDITIONAL = {
    "family": "categorical",
    "format": {"style": "tokens", "separator": "-"},
    "decisions": [
        {"name": "block1", "choices": ["skip", "mb3", "mb6"]},
        {"name": "kernel1", "choices": [3, 5, 7], "unless": {"block1": "skip"}},
        {"name": "block2", "choices": ["skip", "mb3", "mb6"]},
        {"name": "kernel2", "choices": [3, 5, 7], "unless": {"block2": "skip"}},
        {"name": "se", "choices": [0, 1], "when": {"block2": ["mb6"]}},
    ],
}


@pytest.fixture
def macro(tmp_path):
    path = tmp_path / "macro.yaml"
    path.write_text(MACRO)
    return path


@pytest.fixture
def conditional():
    return load_space(CONDITIONAL)


def test_the_issue_macro_space_works_as_written(macro):
    space = load_space(str(macro))
    assert isinstance(space, CategoricalSpace) and space.size() == 81
    arch = space.parse("0210")
    assert str(arch) == "0210" and space.values(arch) == {"layer1": "identity", "layer2": "mb6_k5",
                                                          "layer3": "mb3_k3", "layer4": "identity"}
    assert space.to_choices(arch) == [0, 2, 1, 0]
    tokens = load_space({**yaml.safe_load(MACRO), "format": {"style": "tokens", "separator": "-"}})
    assert str(tokens.from_choices([0, 2, 1, 0])) == "identity-mb6_k5-mb3_k3-identity"
    assert tokens.parse("identity-mb6_k5-mb3_k3-identity") == tokens.from_choices([0, 2, 1, 0])


def test_every_architecture_round_trips_and_enumerates(macro, conditional):
    for space in (load_space(str(macro)), conditional):
        archs = [space.at(i) for i in range(space.size())]
        assert len(set(archs)) == space.size() == len({str(a) for a in archs})
        assert all(space.index(a) == i for i, a in enumerate(archs))
        assert all(space.parse(str(a)) == a for a in archs)
    # skip: 1, mb3: 3 kernels, mb6: 3 kernels -> 7 per layer; layer 2's mb6 also picks se (x2) -> 1 + 3 + 6
    assert conditional.size() == 7 * 10


def test_conditions_decide_which_decisions_exist(conditional):
    arch = conditional.parse("skip-mb6-5-1")
    assert conditional.values(arch) == {"block1": "skip", "kernel1": None, "block2": "mb6", "kernel2": 5, "se": 1}
    assert conditional.to_choices(arch) == [0, -1, 2, 1, 1]
    code = conditional.encode(arch)
    assert code.shape == (3 + 3 + 3 + 3 + 2,) and code[3:6].sum() == 0 and code.sum() == 4  # kernel1: zeros
    # a value given for an inactive decision is ignored
    assert conditional.from_choices([0, 2, 2, 1, 1]) == arch
    with pytest.raises(ValueError, match="'3' is not a choice of decision 'block2'; allowed: skip, mb3, mb6"):
        conditional.parse("skip-3-skip")
    with pytest.raises(ValueError, match="ends before decision 'kernel1'"):
        conditional.parse("mb3")
    with pytest.raises(ValueError, match="'x' is left over after the last decision"):
        conditional.parse("mb3-3-skip-x")


def test_mutate_makes_one_valid_change_and_sample_is_seeded(conditional):
    rng = np.random.default_rng(0)
    for _ in range(300):
        arch = conditional.sample(rng)
        child = conditional.mutate(arch, rng)
        assert child != arch and conditional.parse(str(child)) == child
        before, after = conditional.to_choices(arch), conditional.to_choices(child)
        first = next(d for d in range(5) if before[d] != after[d])
        # the change is one active decision; later ones only follow its conditions
        assert before[first] >= 0 and after[first] >= 0
        for d in range(first + 1, 5):
            if before[d] >= 0 and after[d] >= 0:
                assert before[d] == after[d]
    a = [str(conditional.sample(np.random.default_rng(7))) for _ in range(3)]
    assert len(set(a)) == 1


def test_template_format_and_inactive_placeholder():
    space = load_space({
        "family": "categorical",
        "format": {"style": "template", "template": "net[{width}]{{{depth}}}/{se}", "inactive": "off"},
        "decisions": [{"name": "width", "choices": [0.5, 1.0]}, {"name": "depth", "choices": [2, 12]},
                      {"name": "se", "choices": ["yes", "no"], "when": {"depth": 12}}]})
    assert [str(space.at(i)) for i in range(space.size())] == [
        "net[0.5]{2}/off", "net[0.5]{12}/yes", "net[0.5]{12}/no", "net[1.0]{2}/off", "net[1.0]{12}/yes",
        "net[1.0]{12}/no"]
    assert space.values(space.parse("net[1.0]{12}/no")) == {"width": 1.0, "depth": 12, "se": "no"}
    with pytest.raises(ValueError, match=r"at character 4 expected a choice of 'width' \(0.5, 1.0\)"):
        space.parse("net[2.0]{2}/off")
    with pytest.raises(ValueError, match="bad architecture 'net\\[0.5\\]\\{2\\}/yes'"):
        space.parse("net[0.5]{2}/yes")  # se exists only for depth 12


@pytest.mark.parametrize("change, message", [
    ({"decisions": [{"name": "a", "choices": [1]}, {"name": "a", "choices": [2]}]}, "'a' repeats"),
    ({"decisions": [{"name": "a", "choices": [1, 2], "when": {"b": 1}}, {"name": "b", "choices": [1]}]},
     "when refers to 'b', which comes after it"),
    ({"decisions": [{"name": "a", "choices": [1, 2]}, {"name": "b", "choices": [1], "unless": {"a": 3}}]},
     "unless a=3 is not a choice of 'a'; its choices: 1, 2"),
    ({"decisions": [{"name": "a", "choices": ["x-y", "z"]}]}, "contain the separator '-'"),
    ({"format": {"style": "indices"}, "decisions": [{"name": "a", "choices": list(range(11))}]},
     "indices above 9 need format.separator"),
    ({"format": {"style": "template", "template": "{a}"},
      "decisions": [{"name": "a", "choices": [1]}, {"name": "b", "choices": [1]}]}, "missing \\['b'\\]"),
    ({"decisions": [{"name": "a", "choices": [True, False]}]}, "a choice is a string or a number"),
    ({"decisions": [{"name": "a", "choices": ["1", 1]}]}, "choices must differ as text"),
    ({"decisions": [{"name": "a", "choices": [1], "if": {}}]}, "unknown key 'decisions\\[0\\].if'"),
])
def test_yaml_errors_name_the_file_and_the_problem(tmp_path, change, message):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"family": "categorical", **change}))
    with pytest.raises(ConfigError, match=message) as error:
        load_space(str(path))
    assert str(path) in str(error.value)


def test_a_space_without_builder_says_it_cannot_train(macro, tmp_path):
    space = load_space(str(macro))
    with pytest.raises(ConfigError, match="has no builder, so its architectures cannot be trained"):
        space.build(space.at(0), 10, 3)
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"name": "t", "space": str(macro)}))
    from frugalnas.cli import cli

    outcome = CliRunner().invoke(cli, ["validate", str(config)])
    assert outcome.exit_code == 2 and "has no builder" in outcome.output and str(macro) in outcome.output
    outcome = CliRunner().invoke(cli, ["train", str(tmp_path), "--arch", f"{macro}:0120"])
    assert outcome.exit_code == 2


def test_a_named_builder_builds_and_trains(tmp_path):
    (tmp_path / "nets.py").write_text(
        "import torch.nn as nn\n"
        "def build(choices, num_classes, in_channels, width=4):\n"
        "    layers = [nn.Conv2d(in_channels, width, 3, padding=1)]\n"
        "    for name, op in choices.items():\n"
        "        if op == 'conv':\n"
        "            layers += [nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)]\n"
        "    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))\n")
    folder = tmp_path / "spaces"
    folder.mkdir()
    (folder / "space.yaml").write_text(yaml.safe_dump({
        "family": "categorical", "builder": "../nets.py:build", "builder_args": {"width": 6},
        "decisions": [{"name": f"l{i}", "choices": ["id", "conv"]} for i in range(3)]}))
    space = load_space(str(folder / "space.yaml"))
    assert space.config.builder == f"{(tmp_path / 'nets.py').resolve()}:build"  # absolute: trials chdir
    model = space.build(space.parse("conv-id-conv"), 10, 1)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert space.count_params(space.parse("conv-conv-conv"), 10, 1) > space.count_params(space.parse("id-id-id"), 10, 1)
    import pickle

    assert pickle.loads(pickle.dumps(space)).build(space.parse("id-id-id"), 3, 1) is not None
    broken = load_space({**space.config.model_dump(mode="json"), "builder": "no_such_module_xyz:build"})
    with pytest.raises(ConfigError, match="builder 'no_such_module_xyz:build' cannot be loaded"):
        broken.check_buildable()


@pytest.mark.parametrize("name", sorted(STRATEGIES.names()))
def test_every_strategy_searches_a_conditional_space(conditional, name):
    # a small max_reuse: rl and optuna soon propose mostly known architectures in a space of 70
    strategy = make_strategy(name, conditional, seed=1, max_reuse=2)
    rng = np.random.default_rng(0)
    scores = {str(conditional.at(i)): float(rng.normal()) for i in range(conditional.size())}
    seen = []
    while len(seen) < (conditional.size() if not strategy.may_repeat else 30) and (arch := strategy.ask()) is not None:
        assert conditional.parse(str(arch)) == arch
        seen.append(str(arch))
        strategy.tell(arch, {"accuracy": scores[str(arch)]})
    if not strategy.may_repeat:  # the whole space, each once, then ask() says it is exhausted
        assert len(seen) == len(set(seen)) == conditional.size() and strategy.ask() is None
    state = strategy.state_dict()
    again = make_strategy(name, conditional, seed=1, max_reuse=2)
    again.load_state_dict(json.loads(json.dumps(state)))
    assert [str(a) for a, _ in again.history] == seen


@pytest.mark.parametrize("name", sorted(STRATEGIES.names()))
def test_nb201_written_as_categorical_yaml_searches_like_the_builtin_family(name):
    builtin, categorical = load_space("nb201"), load_space(str(NB201_CATEGORICAL))
    assert categorical.size() == builtin.size() == 15625
    table = nb201_like_table(seed=0)
    runs = []
    for space in (builtin, categorical):
        strategy = make_strategy(name, space, seed=3, **({"train_steps": 30} if name == "predictor" else {}))
        proposed = []
        for _ in range(30):
            arch = strategy.ask()
            proposed.append(str(arch))
            strategy.tell(arch, {"accuracy": table[str(arch)]})
        runs.append(proposed)
    assert runs[0] == runs[1]


def _write_tables(tmp_path, space):
    """The same hand-written table as CSV, Parquet, JSON records and JSON keyed by architecture."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    rows = [{"arch": str(space.at(i)), "acc": [round(float(v), 3) for v in rng.normal(70 + i % 9, 1, size=2)],
             "cost": float(i)} for i in range(space.size())]
    paths = {}
    paths["csv"] = tmp_path / "t.csv"
    paths["csv"].write_text("arch,acc,cost\n" + "".join(f"{r['arch']},\"{json.dumps(r['acc'])}\",{r['cost']}\n"
                                                       for r in rows))
    paths["parquet"] = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), paths["parquet"])
    paths["records"] = tmp_path / "records.json"
    paths["records"].write_text(json.dumps(rows))
    paths["keyed"] = tmp_path / "keyed.json"
    paths["keyed"].write_text(json.dumps({r["arch"]: {"acc": r["acc"], "cost": r["cost"]} for r in rows}))
    return rows, paths


def test_tables_in_csv_parquet_and_json_read_the_same(macro, tmp_path):
    space = load_space(str(macro))
    rows, paths = _write_tables(tmp_path, space)
    expected = {space.parse(r["arch"]): {"acc": float(np.mean(r["acc"])), "cost": r["cost"]} for r in rows}
    for kind, path in paths.items():
        lookup = read_table(path, space, arch_column="arch", metric_column="acc", report_column="cost")
        assert lookup.values.keys() == expected.keys(), kind
        for arch, entry in expected.items():
            assert lookup.values[arch] == pytest.approx(entry), (kind, arch)
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"0000": 1.5, "0001": [1.0, 3.0]}))
    assert read_table(bare, space, arch_column="arch", metric_column="acc").values == {
        space.parse("0000"): {"acc": 1.5}, space.parse("0001"): {"acc": 2.0}}
    results = {kind: run_searcher_benchmark(path, str(macro), arch_column="arch", metric_column="acc",
                                            strategies=["evolution"], budget=20, seeds=2, budgets_report=(20,))
               for kind, path in paths.items()}
    assert len({json.dumps(r["strategies"]["evolution"]["curve_mean"]) for r in results.values()}) == 1
    assert all(r["missing_from_table"] == 0 for r in results.values())


def test_bad_table_rows_exit_2_naming_them(macro, tmp_path):
    space = load_space(str(macro))
    _, paths = _write_tables(tmp_path, space)

    def bench(path, *extra):
        return CliRunner().invoke(bench_searchers_command, ["--table", str(path), "--space", str(macro),
                                                            "--metric-column", "acc", "--budget", "5", "--seeds",
                                                            "1", *extra])

    bad = tmp_path / "bad.csv"
    lines = paths["csv"].read_text().splitlines()
    bad.write_text("\n".join(lines[:3] + ["0301,70.0,1.0"] + lines[3:]) + "\n")
    outcome = bench(bad)
    assert outcome.exit_code == 2 and "bad.csv line 4: column 'arch'" in outcome.output
    assert "at character 1 decision 'layer2' expects one of '0', '1', '2'" in outcome.output
    bad.write_text("\n".join(lines[:3] + [lines[1]]) + "\n")
    outcome = bench(bad)
    assert outcome.exit_code == 2 and "bad.csv line 4: architecture 0000 is listed twice (first at line 2)" in outcome.output
    records = json.loads(paths["records"].read_text())
    records[5]["acc"] = "n/a"
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps(records))
    outcome = bench(bad_json)
    assert outcome.exit_code == 2 and "bad.json record [5]: column 'acc' is 'n/a', not a finite number" in outcome.output
    bad_json.write_text(json.dumps({"0000": {"acc": 1}, "00x0": {"acc": 2}}))
    outcome = bench(bad_json)
    assert outcome.exit_code == 2 and "bad.json key '00x0'" in outcome.output
    other = tmp_path / "table.xlsx"
    other.write_text("")
    outcome = bench(other)
    assert outcome.exit_code == 2 and "unknown table format '.xlsx'; allowed: .csv, .parquet, .pq, .json" in outcome.output
    outcome = bench(paths["parquet"])
    assert outcome.exit_code == 0, outcome.output


@pytest.mark.skipif(not NATS.is_file(), reason="needs ../shared/data/nb201/nats_tss.csv")
def test_real_nb201_table_gives_the_same_results_through_the_categorical_yaml():
    kwargs = dict(arch_column="ArchitectureString", metric_column="CIFAR10TestAccuracy200Epochs",
                  strategies=["random", "evolution", "rl", "optuna-tpe"], budget=40, seeds=2, budgets_report=(40,))
    builtin = run_searcher_benchmark(NATS, "nb201", **kwargs)
    categorical = run_searcher_benchmark(NATS, str(NB201_CATEGORICAL), **kwargs)
    assert builtin["n_archs"] == categorical["n_archs"] == 15625 and categorical["missing_from_table"] == 0
    assert builtin["optimum"] == categorical["optimum"] == pytest.approx(94.3733, abs=1e-3)
    for name in kwargs["strategies"]:
        assert builtin["strategies"][name]["curve_mean"] == categorical["strategies"][name]["curve_mean"]
