"""Run every benchmark (or only assemble RESULTS.md from the committed per-benchmark results).

    python benchmarks/run_all.py              # run all, then assemble RESULTS.md (long: about an hour on 2 cores)
    python benchmarks/run_all.py --assemble   # only rebuild RESULTS.md from benchmarks/results/*.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def half_of_sample(results_name: str) -> str:
    """A --set naming every other architecture, by ground truth, of a committed fidelity result (a
    stratified half of its sample, fixed before anything was trained on it)."""
    architectures = json.loads((HERE / "results" / f"{results_name}.json").read_text())["architectures"]
    return architectures_override([a["arch"] for a in sorted(architectures, key=lambda a: a["truth"])[::2]])


def listed_architectures(results_name: str) -> str:
    """A --set naming the architectures of a committed list (``{"architectures": [...]}``)."""
    return architectures_override(json.loads((HERE / "results" / f"{results_name}.json").read_text())["architectures"])


def architectures_override(architectures: list[str]) -> str:
    return "fidelity.architectures=[" + ", ".join(f"'{arch}'" for arch in architectures) + "]"


STREAM_TO_60K = ["--set", "fidelity.arms={stream: {policy: stream, subset_size: null}}",
                 "--set", "fidelity.budgets=[5000,10000,20000,40000,60000]"]
# the 40 architectures of fidelity_nb201_60k, and a stratified half of them
SAMPLE_60K = ["--set", "fidelity.sample.seed=2", "--set", "fidelity.sample.k=40", *STREAM_TO_60K]
HALF_OF_60K = ["--set", half_of_sample("fidelity_nb201_60k"), *STREAM_TO_60K]
# tests 2 and 3 of fidelity_naswot_plan.md: 40 architectures never measured before, schedules over 30,000 images
STREAM_TO_30K = ["--set", "fidelity.arms={stream: {policy: stream, subset_size: null}}",
                 "--set", "fidelity.budgets=[2500,5000,10000,20000,30000]"]
SAMPLE_30K = ["--set", "fidelity.sample.seed=3", "--set", "fidelity.sample.k=40", *STREAM_TO_30K]
# (script, results name[, the script's arguments]), in the order RESULTS.md shows them
BENCHMARKS = [
    ("data_io.py", "data_io"),
    ("furthest_neighbour.py", "furthest_neighbour"),
    ("selection.py", "selection"),
    ("selection_repairs.py", "selection_repairs"),
    ("searchers_nb201_like.py", "searchers"),
    ("searchers_nb201.py", "searchers_nb201"),
    ("searchers_nb201_settings.py", "searchers_nb201_settings"),
    ("searchers_nb201_early.py", "searchers_nb201_early"),
    # the committed run: every subset arm stopped at 10,000 images to fit 2 cores, plus dds-adaptive
    ("fidelity_nb201.py", "fidelity_nb201",
     ["--set", "fidelity.arms={stream: {policy: stream, subset_size: null}, "
      "random: {policy: random, subset_size: 5000, max_budget: 10000}, "
      "entropy: {policy: entropy, subset_size: 5000, max_budget: 10000}, "
      "dynamic-random: {policy: dynamic-random, subset_size: 1000, warmup_epochs: 5, max_budget: 10000}, "
      "dds: {policy: dds, subset_size: 1000, warmup_epochs: 5, max_budget: 10000}, "
      "dds-adaptive: {policy: dds, subset_size: 1000, warmup_epochs: 2, easy_quantile: 0.5, mastery: 0.25, "
      "max_budget: 10000}}"]),
    # the same job on another sample of 20 architectures, stream only to 50,000 images: an out-of-sample check
    ("fidelity_nb201.py", "fidelity_nb201_sample1",
     ["--name", "fidelity_nb201_sample1", "--set", "fidelity.sample.seed=1",
      "--set", "fidelity.arms={stream: {policy: stream, subset_size: null}}",
      "--set", "fidelity.budgets=[5000,10000,20000,50000]"]),
    # the confirmation of accuracy_gain(+params), found on the two samples above: 40 fresh architectures,
    # stream only, a schedule over 60,000 images (the goal's budget)
    ("fidelity_nb201.py", "fidelity_nb201_60k",
     ["--name", "fidelity_nb201_60k", *SAMPLE_60K]),
    # the same 40 with a second seed (seed 0's trials are those of the run above)
    ("fidelity_nb201.py", "fidelity_nb201_60k_2seeds",
     ["--name", "fidelity_nb201_60k_2seeds", "--reuse-trials-of", "fidelity_nb201_60k", *SAMPLE_60K,
      "--set", "fidelity.seeds=[0,1]"]),
    # a wider proxy (16 channels, twice the job's) on half of those 40 (every other by ground truth), beside
    # the 8-channel proxy on the same 20 (its trials are those of fidelity_nb201_60k)
    ("fidelity_nb201.py", "fidelity_nb201_60k_half_8ch",
     ["--name", "fidelity_nb201_60k_half_8ch", "--reuse-trials-of", "fidelity_nb201_60k", *HALF_OF_60K]),
    ("fidelity_nb201.py", "fidelity_nb201_60k_half_16ch",
     ["--name", "fidelity_nb201_60k_half_16ch", "--set", "space.network.channels=16", *HALF_OF_60K]),
    ("fidelity_compare.py", "fidelity_width_half",
     ["fidelity_nb201_60k_half_16ch", "fidelity_nb201_60k_half_8ch", "--name", "fidelity_width_half"]),
    # then all 40 at 16 channels (the half's trials reused), against the 8-channel fidelity_nb201_60k
    ("fidelity_nb201.py", "fidelity_nb201_60k_16ch",
     ["--name", "fidelity_nb201_60k_16ch", "--reuse-trials-of", "fidelity_nb201_60k_half_16ch", *SAMPLE_60K,
      "--set", "space.network.channels=16"]),
    ("fidelity_compare.py", "fidelity_width",
     ["fidelity_nb201_60k_16ch", "fidelity_nb201_60k", "--name", "fidelity_width"]),
    ("fidelity_nb201.py", "fidelity_nb201_30k_2seeds",
     ["--name", "fidelity_nb201_30k_2seeds", *SAMPLE_30K, "--set", "fidelity.seeds=[0,1]"]),
    ("fidelity_nb201.py", "fidelity_nb201_30k_1seed",
     ["--name", "fidelity_nb201_30k_1seed", "--reuse-trials-of", "fidelity_nb201_30k_2seeds", *SAMPLE_30K,
      "--set", "fidelity.seeds=[0]"]),
    ("fidelity_nb201.py", "fidelity_nb201_30k_test3",
     ["--name", "fidelity_nb201_30k_test3", "--set", "fidelity.sample.seed=4", "--set", "fidelity.sample.k=40",
      *STREAM_TO_30K,
      "--set", "fidelity.seeds=[0,1]"]),
    # free scores on a pool of 575 architectures (NASWOT at four network and image sizes; the spread over samples of 40)
    ("fidelity_free_baselines.py", "fidelity_free_baselines"),
    # test 4 of fidelity_naswot_plan.md: 40 architectures measured nowhere else (fixed in a committed list)
    ("fidelity_nb201.py", "fidelity_nb201_30k_test4",
     ["--name", "fidelity_nb201_30k_test4", "--set", listed_architectures("fidelity_nb201_30k_test4_architectures"),
      *STREAM_TO_30K, "--set", "fidelity.seeds=[0,1]"]),
    ("fidelity_dds_analysis.py", "fidelity_dds_analysis"),
    ("tune_overhead.py", "tune_overhead"),
    ("search_cost.py", "search_cost"),
    ("darts_selection.py", "darts_selection"),
    ("compression.py", "compression"),
    ("detection_search.py", "detection_search"),
    ("attention_embedding.py", "attention_embedding"),
    ("faults.py", "faults"),
]

HEADER = """# Benchmark results

Every number here was measured by the script named in its section, side by side against its
baseline in the same run, on the machine it names (the project's development machine: 2 cores, no
GPU; other work was running on it at the same time unless a section says otherwise, so absolute
speeds are conservative while the side-by-side ratios hold). Re-run with
`python benchmarks/run_all.py` (or one script); each writes `benchmarks/results/<name>.{json,md}`
and this page is assembled from those with `python benchmarks/run_all.py --assemble`.
"""


def assemble() -> None:
    parts = [HEADER]
    for script, name, *_ in BENCHMARKS:
        md = HERE / "results" / f"{name}.md"
        if md.exists():
            parts.append(f"\n## `benchmarks/{script}`\n\n" + md.read_text().strip() + "\n")
        else:
            parts.append(f"\n## `benchmarks/{script}`\n\nNot measured yet.\n")
    (HERE / "RESULTS.md").write_text("".join(parts))
    print(f"wrote {HERE / 'RESULTS.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assemble", action="store_true", help="only rebuild RESULTS.md")
    args = parser.parse_args()
    if not args.assemble:
        for script, _, *arguments in BENCHMARKS:
            arguments = arguments[0] if arguments else []
            print(f"== {script} {' '.join(arguments)}", flush=True)
            subprocess.run([sys.executable, str(HERE / script), *arguments], check=True)
    assemble()


if __name__ == "__main__":
    main()
