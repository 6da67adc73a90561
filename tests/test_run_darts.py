"""End to end: `frugalnas run` with DARTS on Ray Train (slow: Ray Train start-up dominates)."""
import json

import pytest
import yaml
from click.testing import CliRunner

from frugalnas.cli import cli
from frugalnas.spaces import load_space

TINY_DARTS = {
    "name": "tiny-darts",
    "dataset": {"source": "digits", "codec": "png", "val_fraction": 0.15},
    "embedding": {"kind": "triplet", "latent_dim": 4, "epochs": 1, "image_size": 8},
    "selection": {"policy": "dds", "subset_size": 50, "warmup_epochs": 1, "mastery": 0.2, "index": "exact"},
    "space": {"name": "nb201", "network": {"channels": 4, "cells_per_stage": 1, "stages": 2},
              "supernet": {"channels": 4, "cells_per_stage": 1, "stages": 2}},
    "search": {"strategy": "darts", "epochs_per_candidate": 3},
    "final": {"epochs": 1, "batch_size": 25},
    "resources": {"workers": 1},
}


@pytest.mark.slow
def test_run_darts_with_dds_derives_retrains_and_reports(tmp_path, ray_session):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(TINY_DARTS))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("experiment", "strategy", "selection", "space", "best_arch", "search_images_processed",
                "search_wall_seconds", "final_test_accuracy", "final_params"):
        assert key in summary
    assert summary["strategy"] == "darts" and summary["search_engine"] == "ray-train"
    space = load_space("nb201")
    assert str(space.parse(summary["best_arch"])) == summary["best_arch"]
    # weight steps train on the dds subset only (an update epoch trains nothing)
    trained = sum(1 for h in summary["history"] if h.get("images", 0) > 0)
    assert summary["weight_images_processed"] == 50 * trained
    assert summary["search_images_processed"] == summary["weight_images_processed"] + summary["arch_images_processed"]
    assert 0 <= summary["final_test_accuracy"] <= 1

    # tracked in the embedded store: each supernet epoch's derived architecture is a candidate run
    import mlflow

    client = mlflow.MlflowClient(summary["tracking"]["uri"])
    assert summary["tracking"]["embedded"] and (tmp_path / "out" / "mlflow" / "mlflow.db").exists()
    parent = client.get_run(summary["tracking"]["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["strategy"] == "darts"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["epoch-001", "epoch-002", "epoch-003"]
    by_name = {r.info.run_name: r for r in children}
    assert by_name["epoch-003"].data.tags["frugalnas.arch"] == summary["history"][-1]["genotype"]
    assert by_name["epoch-003"].data.metrics["images_processed"] == summary["history"][-1]["images_processed"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "selection")}
    assert {"selection/history.json", "selection/history.png"} <= artifacts


def test_darts_needs_a_cell_space(tmp_path):
    config = {**TINY_DARTS, "space": "mobilenet"}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2 and "supernet" in result.stderr and "nb201" in result.stderr
    config = {**TINY_DARTS, "search": {"strategy": "hillclimb"}}
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2 and "allowed: evolution" in result.stderr and "darts-2nd" in result.stderr
