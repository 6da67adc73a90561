"""``frugalnas fidelity``: attach with ``cli.add_command(fidelity_command)``."""
from __future__ import annotations

import click

from frugalnas.cli_support import emit_json, user_errors


@click.command("fidelity")
@click.argument("config", type=click.Path())
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config key (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder [default: runs/<name>].")
@click.option("--resume", is_flag=True, help="Continue an interrupted measurement in the same output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json as one JSON object on the last line.")
@user_errors
def fidelity_command(config, overrides, out, resume, as_json):
    """Measure how well cheap evaluations rank architectures like a ground-truth table (ranking fidelity).

    \b
    Trains each architecture of the config's `fidelity` section (a list, or a sample stratified
    by ground truth) with every selection arm (stream, random, entropy, dynamic-random, dds, ...)
    at every image budget, one Ray Tune trial per (architecture, arm, seed), and reports per arm,
    budget and proxy score (validation accuracy, training speed) Kendall tau, Spearman rho, top-5
    overlap and regret@1 against the ground truth, with bootstrap intervals, beside free
    baselines that need no training (parameter count, FLOPs, synflow).

    Writes OUT/summary.json, OUT/fidelity_curves.png (tau against images per architecture) and
    OUT/proxy_vs_truth_<score>.png; records a parent MLflow run with a nested run per trial.
    """
    from frugalnas.config import load_config
    from frugalnas.runtime.fidelity import run_fidelity

    experiment = load_config(config, overrides)
    summary = run_fidelity(experiment, out, resume=resume, log=lambda m: click.echo(m, err=True))
    if as_json:
        emit_json(summary)
