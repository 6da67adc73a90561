"""DARTS with data selection (frugalnas.train.darts): steps, selector feedback, resume, replicas.

Tiny supernets (4 channels, one cell per stage) on the built-in 8x8 digits, so the file runs in
seconds on one thread.
"""
from __future__ import annotations

import copy
import io
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from frugalnas.data import open_dataset
from frugalnas.data.torch_dataset import ImageSplit
from frugalnas.spaces import load_space
from frugalnas.train.darts import (
    DartsSearch,
    DartsSettings,
    GlobalBatchNorm2d,
    ReplicaDriftError,
    arch_step,
    bilevel_split,
    local_all_reduce,
    make_darts_search,
    selector_for_weight_half,
    split_loader,
    use_global_batchnorm,
    weight_step,
    worker_batches,
)

NB201_TINY = {"supernet": {"channels": 4, "cells_per_stage": 1}}
DARTS_TINY = {"nodes": 2, "supernet": {"channels": 4, "layers": 3, "stem_multiplier": 1}}


@pytest.fixture(scope="module")
def train_split(digits_dataset):
    torch.set_num_threads(1)
    return ImageSplit(open_dataset(digits_dataset), "train")


@pytest.fixture(scope="module")
def nb201():
    return load_space("nb201", NB201_TINY)


def settings(**overrides) -> DartsSettings:
    values = dict(epochs=4, batch_size=32, seed=0, arch_lr=0.01)
    values.update(overrides)
    return DartsSettings(**values)


def search(space, data, selection=None, *, latents=None, **overrides) -> DartsSearch:
    return make_darts_search(space, data.ids, data.labels, num_classes=10, in_channels=1,
                             settings=settings(**overrides), selection=selection or {"policy": "random", "subset_size": 100},
                             latents=latents)


def alphas(s: DartsSearch) -> list[torch.Tensor]:
    return [a.detach().clone() for a in s.supernet.arch_parameters()]


def without_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


# ---------------------------------------------------------------- bi-level split and settings


def test_bilevel_split_is_disjoint_stratified_and_deterministic(train_split):
    split = bilevel_split(train_split.ids, train_split.labels, seed=3)
    assert not set(split.weight_ids) & set(split.arch_ids)
    assert len(split.weight_ids) + len(split.arch_ids) == len(train_split.ids)
    w_counts = np.bincount(split.weight_labels, minlength=10)
    a_counts = np.bincount(split.arch_labels, minlength=10)
    assert np.abs(w_counts - a_counts).max() <= 1  # each class halved
    shuffled = np.random.default_rng(0).permutation(len(train_split.ids))
    again = bilevel_split(train_split.ids[shuffled], train_split.labels[shuffled], seed=3)
    assert np.array_equal(again.weight_ids, split.weight_ids)  # input order does not matter
    assert not np.array_equal(bilevel_split(train_split.ids, train_split.labels, seed=4).weight_ids, split.weight_ids)


def test_selector_covers_only_the_weight_half(train_split, nb201):
    s = search(nb201, train_split, {"policy": "full"})
    assert np.array_equal(np.sort(s.selector.train_ids), s.split.weight_ids)
    with pytest.raises(ValueError, match="unknown selection setting.*mastry"):
        selector_for_weight_half(s.split, {"policy": "dds", "mastry": 0.5}, seed=0, total_epochs=2)
    other = bilevel_split(train_split.ids, train_split.labels, seed=9)
    wrong = selector_for_weight_half(other, {"policy": "full"}, seed=0, total_epochs=2)
    with pytest.raises(ValueError, match="weight half"):
        DartsSearch(nb201, 10, 1, s.split, wrong, settings())


def test_bad_settings_name_the_culprit():
    with pytest.raises(ValueError, match="order=3"):
        DartsSettings(order=3)
    with pytest.raises(ValueError, match="unknown DARTS setting.*arch_rl"):
        DartsSettings.from_dict({"arch_rl": 0.1})
    assert DartsSettings.from_dict(DartsSettings(order=2).to_dict()) == DartsSettings(order=2)


# ---------------------------------------------------------------- the step functions


def one_batch(data, n=24, offset=0):
    ids = data.ids[offset : offset + n]
    return data.batch(ids)


def fresh(space, seed=0, arch_weight_decay=1e-3):
    torch.manual_seed(seed)
    net = space.supernet(10, 1)
    sgd = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    adam = torch.optim.Adam(net.arch_parameters(), lr=0.01, betas=(0.5, 0.999), weight_decay=arch_weight_decay)
    return net, sgd, adam


@pytest.mark.parametrize("family, overrides", [("nb201", NB201_TINY), ("darts", DARTS_TINY)])
@pytest.mark.parametrize("order", [1, 2])
def test_arch_step_changes_alphas_and_only_alphas(train_split, family, overrides, order):
    space = load_space(family, overrides)
    net, sgd, adam = fresh(space)
    before_alpha = [a.detach().clone() for a in net.arch_parameters()]
    before_w = [w.detach().clone() for w in net.weight_parameters()]
    stats = arch_step(net, adam, sgd, one_batch(train_split), one_batch(train_split, offset=100), order=order, lr=0.05)
    assert stats["images"] == 24 and stats["loss_sum"] > 0
    assert all(not torch.equal(a, b) for a, b in zip(net.arch_parameters(), before_alpha))
    assert all(torch.equal(w, b) for w, b in zip(net.weight_parameters(), before_w))


def test_second_order_gradient_matches_exact_unrolled_gradient(train_split, nb201):
    """The finite-difference arch gradient equals autograd's exact gradient through the virtual
    SGD step (momentum buffer included), and clearly differs from the first-order gradient.

    In float64 with a small finite-difference step: the ReLU network's gradient has kinks
    (measured: jumps of ~5e-3 within 1e-2 of the weights along a random direction), so DARTS's
    r = 0.01 gives a rough estimate; a small step in double precision tests the formula itself."""
    net, sgd, adam = fresh(nb201, arch_weight_decay=0.0)
    net.double()
    double = lambda batch: (batch[0].double(), batch[1])
    weight_step(net, sgd, double(one_batch(train_split, offset=300)))  # so the momentum buffer exists
    train, arch = double(one_batch(train_split)), double(one_batch(train_split, offset=100))
    lr = 0.05
    names = [n for n, _ in net.named_parameters() if not n.startswith("alpha")]
    weights, alpha = net.weight_parameters(), net.arch_parameters()

    def loss(params, batch):
        buffers = {n: b.clone() for n, b in net.named_buffers()}
        return F.cross_entropy(functional_call(net, {**params, **buffers}, (batch[0],)), batch[1])

    g = torch.autograd.grad(loss(dict(zip(names, weights)), train), weights, create_graph=True)
    unrolled = {n: w - lr * (gw + 3e-4 * w + 0.9 * sgd.state[w]["momentum_buffer"])
                for n, w, gw in zip(names, weights, g)}
    exact = torch.autograd.grad(loss(unrolled, arch), alpha)[0]
    first = torch.autograd.grad(loss(dict(zip(names, weights)), arch), alpha)[0]

    arch_step(net, adam, sgd, train, arch, order=2, lr=lr, unroll_epsilon=1e-6)
    approx = alpha[0].grad
    scale = exact.abs().max()
    assert (approx - exact).abs().max() < 1e-4 * scale, "finite-difference HVP is off"
    assert (first - exact).abs().max() > 0.05 * scale, "second order should differ from first order here"


def simulated_workers(n: int):
    """An all-reduce for ``n`` threads: every thread sums the same tensors in the same order."""
    slots, barrier = [None] * n, threading.Barrier(n, timeout=120)

    def hook(rank):
        def all_reduce(tensor):
            slots[rank] = tensor.detach().clone()
            barrier.wait()
            total = slots[0].clone()
            for other in slots[1:]:
                total += other
            barrier.wait()
            tensor.copy_(total)
        return all_reduce
    return hook


def run_threads(fns):
    results, errors = [None] * len(fns), []

    def wrap(k):
        try:
            torch.set_num_threads(1)
            results[k] = fns[k]()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
    threads = [threading.Thread(target=wrap, args=(k,)) for k in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("order", [1, 2])
def test_steps_average_over_workers(train_split, nb201, order):
    """Two workers with manually split batches: identical alphas and weights on both; two workers
    holding the same batch take exactly the one-worker step (the hook's mean is exact)."""
    train, arch = one_batch(train_split, 32), one_batch(train_split, 32, offset=200)
    halves = lambda batch, k: (batch[0][k * 16 : (k + 1) * 16], batch[1][k * 16 : (k + 1) * 16])

    def worker(hook, share):
        net, sgd, adam = fresh(nb201)  # built before the threads start: torch's global RNG is shared

        def run():
            for _ in range(2):
                arch_step(net, adam, sgd, share(train), share(arch), order=order, lr=0.05, all_reduce=hook)
                weight_step(net, sgd, share(train), all_reduce=hook)
            return [p.detach().clone() for p in net.parameters()]
        return run

    hook = simulated_workers(2)
    a, b = run_threads([worker(hook(0), lambda x: halves(x, 0)), worker(hook(1), lambda x: halves(x, 1))])
    assert all(torch.equal(p, q) for p, q in zip(a, b))

    single = worker(lambda t: None, lambda x: x)()
    hook = simulated_workers(2)
    same = run_threads([worker(hook(0), lambda x: x), worker(hook(1), lambda x: x)])
    assert all(torch.equal(p, q) for p, q in zip(single, same[0]))
    # split halves see other BatchNorm batch statistics, so they are close to, not equal to, one worker
    assert not all(torch.equal(p, q) for p, q in zip(single, a))


@pytest.mark.parametrize("order", [1, 2])
def test_global_batchnorm_makes_two_workers_take_the_one_worker_step(train_split, nb201, order):
    train, arch = one_batch(train_split, 32), one_batch(train_split, 32, offset=200)
    # uneven shares, one of them empty in the last step: the workers must still run in lockstep
    cuts = [(20, 32), (5, 32), (32, 32)]

    def worker(all_reduce, rank):
        net, sgd, adam = fresh(nb201)
        use_global_batchnorm(net, all_reduce)

        def run():
            for cut, end in cuts:
                share = lambda b: (b[0][:cut], b[1][:cut]) if rank == 0 else (b[0][cut:end], b[1][cut:end])
                arch_step(net, adam, sgd, share(train), share(arch), order=order, lr=0.05, all_reduce=all_reduce)
                weight_step(net, sgd, share(train), all_reduce=all_reduce)
            return [t.detach().clone() for t in [*net.parameters(), *net.buffers()]]
        return run

    def alone():
        net, sgd, adam = fresh(nb201)
        use_global_batchnorm(net, local_all_reduce)
        for _ in cuts:
            arch_step(net, adam, sgd, train, arch, order=order, lr=0.05)
            weight_step(net, sgd, train)
        return [t.detach().clone() for t in [*net.parameters(), *net.buffers()]]

    hook = simulated_workers(2)
    a, b = run_threads([worker(hook(0), 0), worker(hook(1), 1)])
    assert all(torch.equal(p, q) for p, q in zip(a, b))  # parameters and running statistics
    single = alone()
    assert max((p - q).abs().max().item() for p, q in zip(a, single)) < 1e-4  # float summation order only


def test_global_batchnorm_matches_batchnorm_on_one_worker():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    glob = use_global_batchnorm(torch.nn.Sequential(copy.deepcopy(bn)), local_all_reduce)[0]
    assert isinstance(glob, GlobalBatchNorm2d)
    x = torch.randn(6, 3, 4, 4) * 3 + 1
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (bn(x1) ** 2).sum().backward()
    (glob(x2) ** 2).sum().backward()
    assert torch.allclose(glob(x), bn(x), atol=1e-5)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-4) and torch.allclose(bn.weight.grad, glob.weight.grad, atol=1e-4)
    assert torch.allclose(bn.running_var, glob.running_var) and torch.allclose(bn.running_mean, glob.running_mean)
    assert set(glob.state_dict()) == set(bn.state_dict())


# ---------------------------------------------------------------- whole epochs


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_global_batches_do_not_depend_on_the_number_of_workers(workers):
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(1000, 1100))
    labels = rng.integers(0, 5, size=100)
    parts = worker_batches(ids, labels, 24, workers)
    assert len(parts) == workers and all(len(p) == 5 for p in parts)  # ceil(100 / 24) steps each
    position = {i: k for k, i in enumerate(ids)}
    for k in range(5):
        batch = ids[24 * k : 24 * (k + 1)]
        shares = [p[k] for p in parts]
        assert sorted(np.concatenate(shares)) == sorted(batch)
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        for share in shares:  # curriculum order kept within every share
            assert [position[i] for i in share] == sorted(position[i] for i in share)


def test_search_reports_costs_and_derives_an_architecture(train_split, nb201):
    s = search(nb201, train_split, epochs=2, order=2)
    records = s.run(split_loader(train_split))
    assert [r["epoch"] for r in records] == [0, 1]
    last = records[-1]
    assert last["images_processed"] == 200 == s.selector.images_processed
    assert last["arch_images_processed"] == 200  # a same-size sample of the arch half per epoch
    assert 0 <= last["train_accuracy"] <= 1 and last["train_loss"] > 0 and last["arch_loss"] > 0
    assert nb201.parse(last["genotype"]) == s.derive()
    assert last["lr"] < s.settings.lr and last["seconds"] > 0


def test_dds_selector_updates_and_counts_only_trained_images(train_split, nb201):
    latents = (train_split.ids, train_split.images.reshape(len(train_split.ids), -1).numpy())
    selection = {"policy": "dds", "subset_size": 60, "warmup_epochs": 1, "mastery": 0.1, "hardness": 0.5}
    s = search(nb201, train_split, selection, latents=latents, epochs=5, lr=0.1)
    records = s.run(split_loader(train_split))
    updates = [r for r in records if r["updated"]]
    trained = [r for r in records if r["trained"]]
    assert updates, "low mastery must trigger subset updates"
    assert s.selector.subset_updates == len(updates) == records[-1]["subset_updates"]
    assert all(r["images"] == 0 and r["train_loss"] is None for r in updates)  # update epochs train nothing
    assert records[-1]["images_processed"] == 60 * len(trained)
    assert records[-1]["arch_images_processed"] == 60 * len(trained)
    after = records[updates[0]["epoch"] + 1]
    assert after["lr"] == pytest.approx(s.settings.lr)  # cosine cycle restarts after an update
    # DDS saw every trained image's hardness
    assert all(h["n_observed"] == 60 for h in s.selector.history if h["train"])


def test_resume_gives_the_same_search_as_an_uninterrupted_run(train_split, nb201):
    latents = (train_split.ids, train_split.images.reshape(len(train_split.ids), -1).numpy())
    selection = {"policy": "dds", "subset_size": 60, "warmup_epochs": 1, "mastery": 0.1, "hardness": 0.5}
    make = lambda: search(nb201, train_split, selection, latents=latents, epochs=4, order=2)
    load = split_loader(train_split)
    whole = make()
    whole.run(load)

    first = make()
    first.run(load, until_epoch=2)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = make()
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    resumed.run(load)

    assert resumed.epoch == whole.epoch == 4
    assert all(torch.equal(a, b) for a, b in zip(alphas(resumed), alphas(whole)))
    assert str(resumed.derive()) == str(whole.derive())
    assert without_seconds(resumed.history) == without_seconds(whole.history)
    assert resumed.selector.state_dict() == whole.selector.state_dict()

    with pytest.raises(ValueError, match="batch_size"):
        search(nb201, train_split, selection, latents=latents, epochs=4, order=2, batch_size=16).load_state_dict(
            first.state_dict())


@pytest.mark.parametrize("sync_batchnorm", [False, True])
def test_two_simulated_workers_keep_identical_replicas(train_split, nb201, sync_batchnorm):
    """Two replicas in threads, each reading and training only its shards: identical alphas,
    weights and records every epoch. With global-batch BatchNorm they also take the one-worker
    search's steps (up to float summation order: measured max alpha gap 9.7e-8 after 3 epochs,
    against 0.064 of alpha travel); with per-worker BatchNorm statistics they do not (measured gap
    7.8e-2, as large as the travel itself), so that case asserts only identical replicas."""
    hook = simulated_workers(2)
    make = lambda rank, n, all_reduce: make_darts_search(
        nb201, train_split.ids, train_split.labels, num_classes=10, in_channels=1,
        settings=settings(epochs=3, order=1, sync_batchnorm=sync_batchnorm),
        selection={"policy": "random", "subset_size": 64}, rank=rank, world_size=n, all_reduce=all_reduce)
    replicas = [make(0, 2, hook(0)), make(1, 2, hook(1))]
    start = alphas(replicas[0])
    seen = [[], []]  # the ids of every load call, per worker

    def loader(rank):
        def load(ids):
            seen[rank].append(set(ids.tolist()))
            return train_split.batch(ids)
        return load
    run_threads([lambda: replicas[0].run(loader(0)), lambda: replicas[1].run(loader(1))])
    params = [[p.detach() for p in r.supernet.parameters()] for r in replicas]
    assert all(torch.equal(a, b) for a, b in zip(*params))
    assert without_seconds(replicas[0].history) == without_seconds(replicas[1].history)
    assert len(seen[0]) == len(seen[1]) == 6  # weight shard + arch shard per epoch
    assert all(not (a & b) for a, b in zip(*seen))  # each worker read only its own shards
    assert replicas[0].history[-1]["images_processed"] == 3 * 64  # both workers' images reached the selector

    single = make(0, 1, None)
    single.run(split_loader(train_split))
    gap = max((a - b).abs().max().item() for a, b in zip(alphas(single), alphas(replicas[0])))
    travel = max((a - b).abs().max().item() for a, b in zip(alphas(single), start))
    print(f"sync_batchnorm={sync_batchnorm}: 1 vs 2 workers alpha gap {gap:.2e}, alpha travel {travel:.3f}")
    if sync_batchnorm:
        assert gap < 1e-5 < 1e-2 * travel
        assert str(single.derive()) == str(replicas[0].derive())
        assert [r["images_processed"] for r in single.history] == [r["images_processed"] for r in replicas[0].history]


def test_drifting_replicas_are_detected(train_split, nb201):
    """Replicas whose selectors were seeded differently plan different epochs: caught at once."""
    hook = simulated_workers(2)
    split = bilevel_split(train_split.ids, train_split.labels)

    def make(rank, selector_seed):
        selector = selector_for_weight_half(split, {"policy": "random", "subset_size": 40}, seed=selector_seed,
                                            total_epochs=1)
        return DartsSearch(nb201, 10, 1, split, selector, settings(epochs=1), rank=rank, world_size=2,
                           all_reduce=hook(rank))
    replicas = [make(0, 0), make(1, 1)]
    with pytest.raises(ReplicaDriftError, match="differ"):
        run_threads([lambda: replicas[0].run(split_loader(train_split)),
                     lambda: replicas[1].run(split_loader(train_split))])
