"""Search spaces: text round trips, operators, networks, counts, supernets, YAML validation."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from frugalnas.errors import ConfigError
from frugalnas.spaces import (
    SPACE_FAMILIES,
    CellSpace,
    DartsSpace,
    Genotype,
    MobileNetArch,
    NB201Arch,
    NB201Space,
    StageArch,
    builtin_spaces,
    load_space,
)

torch.set_num_threads(1)

NB201_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
# DARTS (second order), as published in genotypes.py of the DARTS repository.
DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
# The same genotype in canonical form: each node's two pairs ordered by input.
DARTS_V2_CANONICAL = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('max_pool_3x3', 1), ('skip_connect', 2)], reduce_concat=[2, 3, 4, 5])"
)

# Small networks so every test builds and runs in milliseconds.
TINY = {
    "nb201": {"network": {"channels": 4, "cells_per_stage": 1}, "supernet": {"channels": 4, "cells_per_stage": 1}},
    "darts": {"network": {"channels": 4, "layers": 3}, "supernet": {"channels": 4, "layers": 3}},
    "mobilenet": {
        "width_multipliers": [0.5, 1.0],
        "channel_divisor": 2,
        "stem": {"channels": 8, "stride": 1},
        "first_channels": 4,
        "stages": [{"channels": 8, "stride": 2}, {"channels": 12, "stride": 2}, {"channels": 16, "stride": 1}],
        "head_channels": 32,
    },
}
FAMILIES = sorted(TINY)


@pytest.fixture(params=FAMILIES)
def tiny(request):
    return load_space(request.param, TINY[request.param])


def test_registry_and_builtin_names():
    # faulty-nb201 is the test-only family of tests/fault_injection.py, registered when pytest collects test_faults.py
    assert [n for n in SPACE_FAMILIES.names() if n != "faulty-nb201"] == ["categorical", "darts", "mobilenet", "nb201",
                                                                         "yolo"]
    assert set(FAMILIES) <= set(builtin_spaces())
    for name in FAMILIES:
        assert load_space(name).family == name


def test_load_by_name_equals_load_by_path():
    from frugalnas.spaces import SPACES_DIR

    for name in FAMILIES:
        assert load_space(name).config == load_space(SPACES_DIR / f"{name}.yaml").config
        # The shipped YAML spells out the family's defaults, so the two cannot drift apart.
        assert load_space(name).config == SPACE_FAMILIES.get(name)().config


# -- text form --------------------------------------------------------------------------------


def test_nb201_published_string_round_trip():
    space = load_space("nb201")
    arch = space.parse(NB201_EXAMPLE)
    assert arch.ops == ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect")
    assert str(arch) == NB201_EXAMPLE


def test_darts_v2_round_trip_and_canonical_order():
    space = load_space("darts")
    arch = space.parse(DARTS_V2)
    assert str(arch) == DARTS_V2_CANONICAL
    assert space.parse(DARTS_V2_CANONICAL) == arch
    # range() concat (used by many published genotypes) and DARTS's list-based constructor agree.
    assert space.parse(DARTS_V2.replace("[2, 3, 4, 5]", "range(2, 6)")) == arch
    as_in_darts = Genotype(
        normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        normal_concat=[2, 3, 4, 5],
        reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
        reduce_concat=range(2, 6),
    )
    assert as_in_darts == arch and hash(as_in_darts) == hash(arch)


def test_mobilenet_string_round_trip():
    space = load_space("mobilenet")
    text = "w0.75-k3e6d2-k5e3d4-k7e6d1-k3e3d3-k5e6d4-k7e3d2"
    arch = space.parse(text)
    assert arch == MobileNetArch(0.75, (StageArch(3, 6, 2), StageArch(5, 3, 4), StageArch(7, 6, 1),
                                        StageArch(3, 3, 3), StageArch(5, 6, 4), StageArch(7, 3, 2)))
    assert str(arch) == text
    assert space.parse("w1.0-k3e6d1-k3e6d1-k3e6d1-k3e6d1-k3e6d1-k3e6d1") == space.parse(
        "w1-k3e6d1-k3e6d1-k3e6d1-k3e6d1-k3e6d1-k3e6d1")


def test_sample_round_trips_and_is_deterministic(tiny):
    rng = np.random.default_rng(0)
    archs = [tiny.sample(rng) for _ in range(50)]
    for arch in archs:
        assert tiny.parse(str(arch)) == arch
        assert tiny.from_choices(tiny.to_choices(arch)) == arch
    assert len(set(archs)) > 40  # the spaces are large; uniform samples rarely repeat
    again = np.random.default_rng(0)
    assert [tiny.sample(again) for _ in range(50)] == archs


@pytest.mark.parametrize("family, text, reason", [
    ("nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "2 nodes"),
    ("nb201", "|nor_conv_3x3~0|+|nor_conv_3x3~1|avg_pool_3x3~0|+|skip_connect~0|none~1|none~2|", "should be 'op~0'"),
    ("nb201", "|conv_7x7~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv_7x7'"),
    ("nb201", "nor_conv_3x3~0+none~0|none~1", "2 nodes"),
    ("darts", DARTS_V2.replace("'dil_conv_3x3', 2", "'dil_conv_3x3', 5"), "allowed inputs are 0..4"),
    ("darts", DARTS_V2.replace("('skip_connect', 0), ('dil_conv_3x3', 2)", "('skip_connect', 2), ('dil_conv_3x3', 2)"),
     "takes input 2 twice"),
    ("darts", DARTS_V2.replace("sep_conv_3x3", "conv_7x1_1x7", 1), "op 'conv_7x1_1x7'; allowed: max_pool_3x3"),
    ("darts", DARTS_V2.replace("('dil_conv_3x3', 2)", "('none', 2)"), "'none' is a supernet-only op"),
    ("darts", DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[4, 5]"), "concatenates all nodes"),
    ("darts", DARTS_V2.replace("Genotype(", "dict("), "expected a DARTS genotype"),
    ("darts", "Genotype(normal=[('sep_conv_3x3', 0)", "not a Python-style expression"),
    ("darts", "__import__('os').system('true')", "expected a DARTS genotype"),
    ("mobilenet", "w0.75-k3e6d2", "1 stages"),
    ("mobilenet", "w0.8-k3e6d2-k5e3d4-k7e6d1-k3e3d3-k5e6d4-k7e3d2", "width 0.8 not in [0.5, 0.75, 1.0]"),
    ("mobilenet", "w1-k4e6d2-k5e3d4-k7e6d1-k3e3d3-k5e6d4-k7e3d2", "stage1.kernel = 4 not allowed"),
    ("mobilenet", "w1-k3e6d2-k5e3d4-k7e6d1-k3e3d3-k5e6d4-k7e3d9", "stage6.depth = 9 not allowed"),
    ("mobilenet", "x1-k3e6d2-k5e3d4-k7e6d1-k3e3d3-k5e6d4-k7e3d2", "expected 'w<width>'"),
])
def test_bad_strings_name_the_string_and_the_problem(family, text, reason):
    with pytest.raises(ValueError) as err:
        load_space(family).parse(text)
    assert repr(text) in str(err.value)
    assert reason in str(err.value)


# -- operators --------------------------------------------------------------------------------


def test_nb201_size_and_injective_encoding():
    space = load_space("nb201")
    assert space.size() == 15625
    every = [space.from_choices(c) for c in itertools.product(range(5), repeat=6)]
    assert len({str(a) for a in every}) == 15625
    encodings = {space.encode(a).tobytes() for a in every}
    assert len(encodings) == 15625
    assert space.encode(every[0]).shape == (30,)
    rng = np.random.default_rng(1)
    samples = [space.sample(rng) for _ in range(3000)]
    assert len({space.encode(a).tobytes() for a in samples}) == len(set(samples))
    assert len(set(samples)) > 2500  # 3000 uniform draws of 15625 give ~2740 distinct


def test_space_sizes():
    # DARTS: input pairs x 7 non-zero ops per node, two cells: ~1e18 as the paper says.
    assert load_space("darts").size() == (1 * 3 * 6 * 10 * 7**8) ** 2
    assert load_space("mobilenet").size() == 3 * (3 * 2 * 4) ** 6


def test_encodings_fixed_length_and_distinct(tiny):
    rng = np.random.default_rng(2)
    archs = list({tiny.sample(rng) for _ in range(200)})
    codes = [tiny.encode(a) for a in archs]
    assert {c.shape for c in codes} == {codes[0].shape} and codes[0].dtype == np.float32
    assert len({c.tobytes() for c in codes}) == len(archs)


def test_darts_encoding_marks_each_chosen_edge():
    space = load_space("darts")
    code = space.encode(space.parse(DARTS_V2)).reshape(2, 14, 7)  # cells x edges x non-zero ops
    assert code.sum() == 16  # 8 edges per cell, one op each
    # normal node 5 takes skip_connect from state 0: edge index 2+3+4+0 = 9.
    assert code[0, 9, space.ops.index("skip_connect")] == 1


def test_mutate_changes_exactly_one_choice(tiny):
    rng = np.random.default_rng(3)
    arch = tiny.sample(rng)
    for _ in range(200):
        child = tiny.mutate(arch, rng)
        assert child != arch
        diff = [a != b for a, b in zip(tiny.to_choices(arch), tiny.to_choices(child))]
        assert sum(diff) == 1
        assert tiny.parse(str(child)) == child
        arch = child


def test_nb201_mutate_changes_one_edge_op():
    space = load_space("nb201")
    arch = space.parse(NB201_EXAMPLE)
    child = space.mutate(arch, np.random.default_rng(4))
    assert sum(a != b for a, b in zip(arch.ops, child.ops)) == 1


def test_choices_and_bad_indices(tiny):
    decisions = tiny.choices()
    assert len({name for name, _ in decisions}) == len(decisions)
    assert tiny.size() == np.prod([len(o) for _, o in decisions], dtype=object)
    with pytest.raises(ValueError, match="out of range"):
        tiny.from_choices([len(o) for _, o in decisions])
    with pytest.raises(ValueError, match="expected"):
        tiny.from_choices([0])


def test_arch_of_another_space_is_refused():
    nb201, darts = load_space("nb201"), load_space("darts")
    with pytest.raises(TypeError, match="Genotype"):
        darts.build(nb201.parse(NB201_EXAMPLE), 10, 3)
    small = load_space("nb201", {"ops": ["none", "skip_connect"]})
    with pytest.raises(ValueError, match="nor_conv_3x3"):
        small.to_choices(nb201.parse(NB201_EXAMPLE))
    assert small.size() == 2**6


# -- networks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, classes", [((2, 1, 8, 8), 10), ((2, 3, 32, 32), 7), ((2, 3, 11, 13), 5)])
def test_build_forward_shapes(tiny, shape, classes):
    rng = np.random.default_rng(5)
    for _ in range(2):
        model = tiny.build(tiny.sample(rng), num_classes=classes, in_channels=shape[1])
        out = model(torch.randn(*shape))
        assert out.shape == (shape[0], classes)
        assert torch.isfinite(out).all()


def test_param_count_is_the_built_modules(tiny):
    rng = np.random.default_rng(6)
    for _ in range(3):
        arch = tiny.sample(rng)
        model = tiny.build(arch, 10, 3)
        assert tiny.count_params(arch, 10, 3) == sum(p.numel() for p in model.parameters())


def test_nb201_counts_match_nas_bench_201():
    # NAS-Bench-201, CIFAR-10 (C=16, N=5): params 0.073306M..1.531546M, FLOPs 7.78305M..220.11969M,
    # the extremes being the all-none and all-nor_conv_3x3 cells.
    space = load_space("nb201")
    conv = space.from_choices([space.config.ops.index("nor_conv_3x3")] * 6)
    empty = space.from_choices([space.config.ops.index("none")] * 6)
    assert space.count_params(conv, 10, 3) == 1_531_546
    assert space.count_params(empty, 10, 3) == 73_306
    assert space.count_flops(conv, 10, 3, 32) == 220_119_690
    assert space.count_flops(empty, 10, 3, 32) == 7_783_050


def test_nb201_conv_costs_more_than_skip():
    space = load_space("nb201", TINY["nb201"])
    conv = space.from_choices([space.config.ops.index("nor_conv_3x3")] * 6)
    skip = space.from_choices([space.config.ops.index("skip_connect")] * 6)
    c, hw = 4, [8 * 8, 4 * 4, 2 * 2]  # 8x8 input, channels 4/8/16, one cell per stage
    conv_edge_macs = sum(6 * s * (c * 2**i) ** 2 * 9 for i, s in enumerate(hw))
    conv_edge_params = sum(6 * ((c * 2**i) ** 2 * 9 + 2 * c * 2**i) for i in range(3))
    assert space.count_flops(conv, 10, 1, 8) - space.count_flops(skip, 10, 1, 8) == conv_edge_macs
    assert space.count_params(conv, 10, 1) - space.count_params(skip, 10, 1) == conv_edge_params
    assert space.count_flops(skip, 10, 1, 8) > 0


def test_darts_v2_param_count_matches_darts():
    # DARTS's train.py reports "param size = 3.349342MB" for DARTS_V2 (C=36, 20 cells, no auxiliary head).
    space = load_space("darts")
    assert space.count_params(space.parse(DARTS_V2), 10, 3) == 3_349_342


def test_mobilenet_matches_torchvision_mobilenet_v2():
    torchvision = pytest.importorskip("torchvision")
    from frugalnas.spaces import count_flops

    imagenet = {"stem": {"channels": 32, "stride": 2}, "kernel_sizes": [3], "expand_ratios": [6],
                "stages": [{"channels": c, "stride": s} for c, s in ((24, 2), (32, 2), (64, 2), (96, 1), (160, 2), (320, 1))]}
    space = load_space("mobilenet", imagenet)
    for width in (0.5, 1.0):
        arch = space.parse(f"w{width}-k3e6d2-k3e6d3-k3e6d4-k3e6d3-k3e6d3-k3e6d1")
        reference = torchvision.models.mobilenet_v2(width_mult=width)
        assert space.count_params(arch, 1000, 3) == sum(p.numel() for p in reference.parameters())
        assert space.count_flops(arch, 1000, 3, 32) == count_flops(reference, 3, 32)
    assert 295e6 < space.count_flops(arch, 1000, 3, 224) < 305e6  # MobileNetV2 1.0 at 224 px: ~300M MAdds


def test_mobilenet_bigger_choices_cost_more():
    space = load_space("mobilenet", TINY["mobilenet"])
    small = space.parse("w0.5-k3e3d1-k3e3d1-k3e3d1")
    for bigger in ("w1-k3e3d1-k3e3d1-k3e3d1", "w0.5-k7e3d1-k3e3d1-k3e3d1", "w0.5-k3e6d1-k3e3d1-k3e3d1",
                   "w0.5-k3e3d4-k3e3d1-k3e3d1"):
        assert space.count_flops(space.parse(bigger), 10, 3, 32) > space.count_flops(small, 10, 3, 32)


# -- supernets --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["nb201", "darts"])
def test_supernet_forward_backward_and_derive(family):
    space = load_space(family, TINY[family])
    assert isinstance(space, CellSpace)
    torch.manual_seed(0)
    net = space.supernet(num_classes=10, in_channels=1)
    arch_params, weight_params = net.arch_parameters(), net.weight_parameters()
    assert arch_params and weight_params
    assert {id(p) for p in arch_params}.isdisjoint(id(p) for p in weight_params)
    assert len(arch_params) + len(weight_params) == len(list(net.parameters()))
    for alpha in arch_params:
        assert alpha.shape[-1] == len(space.config.ops)
    out = net(torch.randn(2, 1, 8, 8))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in arch_params)
    arch = space.derive(net)
    assert space.parse(str(arch)) == arch
    assert space.build(arch, 10, 1)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("op", list(NB201Space.Config().ops))
def test_nb201_derive_follows_alpha(op):
    space = load_space("nb201", TINY["nb201"])
    net = space.supernet(10, 3)
    with torch.no_grad():
        net.alpha.fill_(-1.0)
        net.alpha[:, space.config.ops.index(op)] = 1.0
    assert space.derive(net) == NB201Arch((op,) * 6)


@pytest.mark.parametrize("op", ["sep_conv_3x3", "max_pool_3x3", "dil_conv_5x5"])
def test_darts_derive_follows_alpha(op):
    space = load_space("darts", TINY["darts"])
    net = space.supernet(10, 3)
    with torch.no_grad():
        for alpha in net.arch_parameters():
            alpha.fill_(-1.0)
            alpha[:, space.config.ops.index(op)] = 1.0
    arch = space.derive(net)
    assert {o for o, _ in arch.normal + arch.reduce} == {op}


def test_darts_derive_rule():
    space = load_space("darts", TINY["darts"])
    ops = list(space.config.ops)
    net = space.supernet(10, 3)
    with torch.no_grad():
        net.alpha_normal.zero_()
        net.alpha_reduce.zero_()
        # `none` dominates every edge: it must never be chosen; the runner-up op wins instead.
        net.alpha_normal[:, ops.index("none")] = 10.0
        net.alpha_normal[:, ops.index("avg_pool_3x3")] = 1.0
        # Node 4 (edges 5..8 from states 0..3): states 3 and 1 carry the strongest non-none ops.
        net.alpha_normal[5 + 3, ops.index("dil_conv_5x5")] = 5.0
        net.alpha_normal[5 + 1, ops.index("sep_conv_5x5")] = 4.0
    arch = space.derive(net)
    node4 = arch.normal[4:6]
    assert node4 == (("sep_conv_5x5", 1), ("dil_conv_5x5", 3))
    assert all(o == "avg_pool_3x3" for o, _ in arch.normal[:4] + arch.normal[6:])
    assert all(o != "none" for o, _ in arch.normal + arch.reduce)


def test_supernet_is_deterministic_for_a_seed():
    space = load_space("nb201", TINY["nb201"])
    torch.manual_seed(7)
    a = space.supernet(10, 3)
    torch.manual_seed(7)
    b = space.supernet(10, 3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_derive_refuses_a_foreign_supernet():
    nb201, darts = load_space("nb201", TINY["nb201"]), load_space("darts", TINY["darts"])
    with pytest.raises(ValueError, match="supernet"):
        darts.derive(nb201.supernet(10, 3))


# -- YAML -------------------------------------------------------------------------------------


def _write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_yaml_unknown_key_names_file_key_and_allowed(tmp_path):
    path = _write(tmp_path, "family: nb201\nnetwork: {chanels: 8}\n")
    with pytest.raises(ConfigError) as err:
        load_space(path)
    msg = str(err.value)
    assert str(path) in msg and "'network.chanels'" in msg and "8" in msg
    assert "channels, cells_per_stage, stages" in msg


def test_yaml_unknown_top_level_key(tmp_path):
    path = _write(tmp_path, "family: darts\nnode: 4\n")
    with pytest.raises(ConfigError, match=r"unknown key 'node' \(value 4\); allowed keys: family, ops, nodes"):
        load_space(path)


def test_yaml_bad_values_name_key_value_and_allowed(tmp_path):
    path = _write(tmp_path, "family: nb201\nops: [none, conv_7x7]\n")
    with pytest.raises(ConfigError) as err:
        load_space(path)
    msg = str(err.value)
    assert str(path) in msg and "'ops[1]'" in msg and "'conv_7x7'" in msg and "'nor_conv_3x3'" in msg

    path = _write(tmp_path, "family: mobilenet\nstages: [{channels: 8, stride: 3}]\n")
    with pytest.raises(ConfigError, match=r"'stages\[0\].stride' has value 3.*1 or 2"):
        load_space(path)

    path = _write(tmp_path, "family: mobilenet\nkernel_sizes: [3, 4]\n")
    with pytest.raises(ConfigError, match="'kernel_sizes'.*odd"):
        load_space(path)

    path = _write(tmp_path, "family: darts\nops: [none]\n")
    with pytest.raises(ConfigError, match="'ops'"):
        load_space(path)


def test_yaml_family_errors(tmp_path):
    allowed = "categorical, darts, (faulty-nb201, )?mobilenet, nb201"  # faulty-nb201: tests/fault_injection.py
    with pytest.raises(ConfigError, match=f"key 'family' has value 'nb2001'; allowed: {allowed}"):
        load_space(_write(tmp_path, "family: nb2001\n"))
    with pytest.raises(ConfigError, match="missing key 'family'"):
        load_space(_write(tmp_path, "ops: [none]\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_space(_write(tmp_path, "- nb201\n"))
    with pytest.raises(ConfigError, match="neither a YAML file nor a built-in space; built-in: darts"):
        load_space("nasbench101")


def test_overrides_and_inline_mapping():
    space = load_space("nb201", {"network": {"channels": 8, "cells_per_stage": 1}})
    assert space.config.network.channels == 8 and space.config.network.stages == 3
    assert space.config.supernet.channels == 16  # untouched keys keep the file's values
    inline = load_space({"family": "darts", "nodes": 2})
    assert isinstance(inline, DartsSpace) and inline.size() == (1 * 3 * 7**4) ** 2
