"""Free baselines on a large sample of NAS-Bench-201, and NASWOT scored on a larger network.

    .venv/bin/python benchmarks/fidelity_free_baselines.py                    # the pool study (see RESULTS.md)
    .venv/bin/python benchmarks/fidelity_free_baselines.py --k 10 --settings 8ch-16px   # a pilot
    .venv/bin/python benchmarks/fidelity_free_baselines.py --fresh-sample 40 --seed 5   # a fresh test's sample
    .venv/bin/python benchmarks/fidelity_free_baselines.py --assemble-only       # rewrite the .md

Why. The fidelity runs (``fidelity_nb201*``) judge every score on samples of 20-40 architectures,
where one score's tau moves by about 0.1 from sample to sample. Scores of the untrained network
cost no training, so here they are measured on a pool of hundreds of architectures drawn like the
runs' samples (stratified over ground truth >= 80%, none of the architectures any committed run
measured): their tau with a narrow interval, how much a sample of 40 moves it, and how often such a
sample reaches 0.65. NASWOT is scored on the runs' own reduced network (8 channels, 16 px) and on
larger ones (16 channels, NAS-Bench-201's own width; 32 px, its own image size, read natively or
upsampled from the 16 px images the runs train on), since a free score need not be computed on the
small network that is trained.

``--fresh-sample K`` prints K architectures for a fresh fidelity test, drawn like the runs' samples
from those that neither a committed run nor this pool has scored (``fidelity_naswot_plan.md``, test 4).

Every number in the Markdown is computed from ``benchmarks/results/fidelity_free_baselines.json``,
which holds every architecture's scores.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from common import HERE, RESULTS, cifar10_folder, machine

REPO = HERE.parent
TABLE = REPO.parent / "shared" / "data" / "nb201" / "nats_tss.csv"
NAME = "fidelity_free_baselines"
WORK = Path(os.environ.get("FRUGALNAS_BENCH_WORK", "/tmp/frugalnas-bench"))
ARCH_COLUMN, METRIC_COLUMN = "ArchitectureString", "CIFAR10TestAccuracy200Epochs"
# NASWOT's network and images: name -> (channels, stored image size, image size it is scored at)
SETTINGS = {
    "8ch-16px": (8, 16, 16),         # the fidelity runs' own: the reduced network they train
    "16ch-16px": (16, 16, 16),       # NAS-Bench-201's width on the runs' images
    "16ch-32px": (16, 32, 32),       # NAS-Bench-201's own network and image size
    "16ch-32px-up": (16, 16, 32),    # the same, fed the runs' 16 px images upsampled (no second ingest)
}
PROXY_CHANNELS, PROXY_SIZE = 8, 16   # params, flops and synflow: of the network the runs train
COMBOS = [("params", "naswot"), ("params", "synflow"), ("synflow", "naswot"), ("params", "synflow", "naswot")]


def space_of(channels: int):
    from frugalnas.spaces import load_space

    return load_space("nb201", {"network": {"channels": channels, "cells_per_stage": 5, "stages": 3}})


def dataset_at(size: int):
    """CIFAR-10 ingested as the fidelity job ingests it (raw pixels, seed 0, 10% val, no test carved
    out), at ``size`` px; the 16 px one is the runs' own."""
    from frugalnas.data import ingest, open_dataset

    folder = WORK / f"cifar10-{size}px-raw"
    if not (folder / "dataset.json").exists():
        print(f"ingesting CIFAR-10 at {size} px into {folder}", flush=True)
        ingest(f"folder:{cifar10_folder(WORK)}", folder, codec="raw", image_size=size, val_fraction=0.1,
               test_fraction=0.0, seed=0, overwrite=True)
    return open_dataset(folder)


def minibatch(stored: int, scored: int):
    """The runs' naswot minibatch (128 seeded class-balanced training images), from the dataset stored
    at ``stored`` px, resized to ``scored`` px if they differ."""
    import torch.nn.functional as F

    from frugalnas.runtime.fidelity import zero_cost_images

    images = zero_cost_images(dataset_at(stored), 128, seed=0)
    if scored != stored:
        images = F.interpolate(images, size=(scored, scored), mode="bilinear", align_corners=False)
    return images


_WORKER: dict = {}


def _init_worker(setting: str | None):
    import torch

    torch.set_num_threads(1)
    _WORKER.clear()
    if setting is not None:
        channels, stored, scored = SETTINGS[setting]
        _WORKER.update(space=space_of(channels), images=minibatch(stored, scored))
    else:
        _WORKER.update(space=space_of(PROXY_CHANNELS))


def _score(arch_text: str) -> tuple[str, dict, float]:
    """Free scores of one architecture in this worker's setting (naswot), or of the proxy network; -inf
    kept (it is made finite only once the whole pool is scored)."""
    from frugalnas.runtime.fidelity import free_scores

    started = time.process_time()
    space = _WORKER["space"]
    arch = space.parse(arch_text)
    if "images" in _WORKER:
        values = free_scores(["naswot"], space, [arch], 10, 3, _WORKER["images"].shape[-1], _WORKER["images"])
    else:
        values = free_scores(["params", "flops", "synflow"], space, [arch], 10, 3, PROXY_SIZE)
    return arch_text, {name: v[0] for name, v in values.items()}, time.process_time() - started


def score_all(archs: list[str], setting: str | None, cache: Path, workers: int) -> dict[str, dict]:
    """arch -> scores, computed in ``workers`` processes, cached per architecture (a rerun resumes)."""
    done, seconds = {}, {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            record = json.loads(line)
            done[record["arch"]], seconds[record["arch"]] = record["scores"], record["cpu_seconds"]
    todo = [a for a in archs if a not in done]
    what = f"naswot at {setting}" if setting else "params, flops, synflow"
    print(f"{what}: {len(archs) - len(todo)} cached, {len(todo)} to score", flush=True)
    started = time.time()
    if todo:
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(setting,)) as pool, \
                cache.open("a") as sink:
            for i, (arch, scores, cpu) in enumerate(pool.map(_score, todo, chunksize=4), 1):
                done[arch], seconds[arch] = scores, cpu
                sink.write(json.dumps({"arch": arch, "scores": scores, "cpu_seconds": cpu}) + "\n")
                sink.flush()
                if i % 25 == 0 or i == len(todo):
                    rate = (time.time() - started) / i
                    print(f"  {what}: {i}/{len(todo)} ({rate:.2f} s each, about {rate * (len(todo) - i) / 60:.0f} min "
                          "left)", flush=True)
    return {a: done[a] for a in archs}, float(np.mean([seconds[a] for a in archs]))


def measured_architectures() -> set[str]:
    """Every architecture a committed fidelity run measured: the pool leaves them out."""
    seen = set()
    for path in RESULTS.glob("fidelity_*.json"):
        data = json.loads(path.read_text())
        records = data.get("architectures") if isinstance(data, dict) else None
        for record in records if isinstance(records, list) else []:
            if isinstance(record, dict) and "arch" in record and "truth" in record:
                seen.add(record["arch"])
    return seen


def tau_stats(score: list[float], truth: list[float], seed: int = 0) -> dict:
    from frugalnas.fidelity import bootstrap_tau_interval, rank_fidelity

    stats = rank_fidelity(score, truth)
    return {"kendall_tau": stats["kendall_tau"], "spearman": stats["spearman"],
            "tau_ci": bootstrap_tau_interval(score, truth, seed=seed)}


def subsample_spread(score: np.ndarray, truth: np.ndarray, k: int = 40, draws: int = 2000, seed: int = 0) -> dict:
    """Kendall tau over ``draws`` random samples of ``k`` of the pool (without replacement): how much
    one sample of k moves a score, and how often it reaches 0.65."""
    from frugalnas.fidelity.stats import resampled_taus

    rng = np.random.default_rng(seed)
    k = min(k, len(score) // 2)  # a pilot's small pool
    rows = np.stack([rng.choice(len(score), size=k, replace=False) for _ in range(draws)])
    taus = resampled_taus(score, truth, rows)
    return {"k": k, "mean": float(taus.mean()), "sd": float(taus.std(ddof=1)),
            "p05": float(np.percentile(taus, 5)), "p95": float(np.percentile(taus, 95)),
            "share_at_least_0.65": float((taus >= 0.65).mean())}


def combined(columns: list[list[float]]) -> list[float]:
    from frugalnas.fidelity.report import rank_with_prior

    return rank_with_prior(columns[0], *columns[1:])


def pool_study(k: int, settings: list[str], workers: int, seed: int) -> dict:
    from frugalnas.fidelity import load_ground_truth, stratified_sample

    space = space_of(PROXY_CHANNELS)
    truth = load_ground_truth(TABLE, space, arch_column=ARCH_COLUMN, metric_column=METRIC_COLUMN)
    exclude = measured_architectures()
    drawn = stratified_sample(truth, k, low=80, bins=5, seed=seed)
    kept = [a for a in drawn if str(a) not in exclude]
    archs = [str(a) for a in kept]
    print(f"pool: {len(drawn)} drawn (seed {seed}, ground truth >= 80, 5 bins), {len(drawn) - len(archs)} left out "
          f"as measured by a committed run, {len(archs)} scored", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    cost = {}
    records = {str(a): {"arch": str(a), "truth": truth(a)} for a in kept}
    for setting in [None, *settings]:
        scores, cost[setting or "proxy"] = score_all(archs, setting, WORK / f"{NAME}_{setting or 'proxy'}.jsonl",
                                                     workers)
        for a in archs:
            if setting is None:
                records[a].update(scores[a])
            else:
                records[a].setdefault("naswot", {})[setting] = scores[a]["naswot"]
    return {"seed": seed, "k_drawn": len(drawn), "left_out": len(drawn) - len(archs), "settings": settings,
            "cpu_seconds_per_arch": cost, "architectures": list(records.values()), "machine": machine()}


def summarise_pool(data: dict) -> dict:
    """tau (with its bootstrap interval), and its spread over samples of 40, for every free score."""
    from frugalnas.runtime.fidelity import ranked_last_if_infinite

    records = data["architectures"]
    truth = [r["truth"] for r in records]
    columns = {name: ranked_last_if_infinite([r[name] for r in records]) for name in ("params", "flops", "synflow")}
    for setting in data["settings"]:
        columns[f"naswot@{setting}"] = ranked_last_if_infinite([r["naswot"][setting] for r in records])
    names = [[f"naswot@{s}" if p == "naswot" else p for p in combo] for combo in COMBOS for s in data["settings"]]
    for parts in names:  # a combination without naswot is the same for every setting: listed once
        columns.setdefault("+".join(parts), combined([columns[p] for p in parts]))
    out = {}
    for name, values in columns.items():
        out[name] = {**tau_stats(values, truth),
                     "k40": subsample_spread(np.asarray(values, float), np.asarray(truth, float))}
    return out


def fresh_sample(k: int, seed: int) -> list[str]:
    """``k`` architectures for a fresh fidelity test: stratified like the runs' samples (ground truth >=
    80%, 5 equal-width bins, an equal share per bin), none measured by a committed run nor in this
    study's pool, so that no choice made so far has seen them."""
    from frugalnas.fidelity import load_ground_truth

    space = space_of(PROXY_CHANNELS)
    truth = load_ground_truth(TABLE, space, arch_column=ARCH_COLUMN, metric_column=METRIC_COLUMN)
    path = RESULTS / f"{NAME}.json"
    pool = {r["arch"] for r in json.loads(path.read_text())["pool"]["architectures"]} if path.exists() else set()
    seen = measured_architectures() | pool
    rng = np.random.default_rng(seed)
    rows = sorted((str(a), v) for a, v in truth.values.items() if v >= 80 and str(a) not in seen)
    values = np.array([v for _, v in rows])
    edges = np.linspace(80, truth.optimum, 6)  # the bins the runs' samples were stratified over
    which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, 4)
    chosen = []
    for b in range(5):
        members = [rows[i][0] for i in np.flatnonzero(which == b)]
        chosen += rng.choice(members, size=k // 5 + (b < k % 5), replace=False).tolist()
    return chosen


def fmt(value):
    return "-" if value is None else f"{value:.3f}"


def ci(pair):
    return "-" if not pair else f"[{pair[0]:+.2f}, {pair[1]:+.2f}]"


def markdown(data: dict) -> str:
    pool, stats = data["pool"], data["pool_summary"]
    m = pool.get("machine", {})
    lines = ["# Free baselines on a large sample of NAS-Bench-201 (`fidelity_free_baselines.py`)", "",
             f"Generated by `benchmarks/fidelity_free_baselines.py` on {m.get('cpu', 'this machine')}, "
             f"{m.get('cpu_count')} cores; commit {m.get('commit', '?')}. Pool: {len(pool['architectures'])} "
             f"NAS-Bench-201 architectures drawn stratified over CIFAR-10 ground truth >= 80% (5 bins, seed "
             f"{pool['seed']}; {pool['left_out']} of {pool['k_drawn']} drawn left out because a committed fidelity "
             "run measured them). Nothing is trained: every score is of the untrained network. params, FLOPs and "
             "synflow are of the runs' proxy network (8 channels, 5 cells per stage, 16 px); NASWOT (128 seeded "
             "class-balanced CIFAR-10 training images, the runs' minibatch) on the network and images named. "
             "`a+b`: the mean of the ranks by a and by b, as the fidelity runs combine scores.", "",
             "CPU seconds per architecture (one core): " + ", ".join(
                 f"{k} {v:.2f}" for k, v in pool["cpu_seconds_per_arch"].items()) + " (proxy: params, FLOPs and "
             "synflow together).", "",
             "| score | Kendall tau [95% CI] | Spearman | tau over samples of 40: mean, sd | 5-95% | share >= 0.65 |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, s in sorted(stats.items(), key=lambda kv: -(kv[1]["kendall_tau"] or -9)):
        k40 = s["k40"]
        lines.append(f"| `{name}` | {fmt(s['kendall_tau'])} {ci(s['tau_ci'])} | {fmt(s['spearman'])} | "
                     f"{k40['mean']:.3f}, {k40['sd']:.3f} | {k40['p05']:.2f}..{k40['p95']:.2f} | "
                     f"{k40['share_at_least_0.65']:.2f} |")
    lines.append("")
    reading = RESULTS / f"{NAME}_reading.md"
    if reading.exists():
        lines += [reading.read_text().rstrip(), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=600, help="architectures drawn for the pool (default 600)")
    parser.add_argument("--seed", type=int, default=100, help="the pool's sampling seed (the runs used 0-4)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                        help="NASWOT's network and image size settings to score the pool with")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fresh-sample", type=int, metavar="K",
                        help="print K architectures for a fresh fidelity test (seeded by --seed), none measured "
                        "before nor in the pool, as a YAML list for --set fidelity.architectures=...")
    parser.add_argument("--assemble-only", action="store_true", help="rewrite the .md from the committed .json")
    parser.add_argument("--out", default=str(RESULTS), help="where the .json and .md go (default benchmarks/results)")
    args = parser.parse_args()
    if args.fresh_sample:
        print("[" + ", ".join(f"'{a}'" for a in fresh_sample(args.fresh_sample, args.seed)) + "]")
        return
    out = Path(args.out)
    path = out / f"{NAME}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    if not args.assemble_only:
        data["pool"] = pool_study(args.k, args.settings, args.workers, args.seed)
        data["pool_summary"] = summarise_pool(data["pool"])
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    (out / f"{NAME}.md").write_text(markdown(data))
    print(f"wrote {path} and {out / f'{NAME}.md'}")


if __name__ == "__main__":
    main()
