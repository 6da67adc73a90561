"""End to end against a real `mlflow server`: a small search, then what MLflow holds (slow)."""
import html
import json
import re
import urllib.parse

import pytest
import torch
import yaml
from click.testing import CliRunner

from frugalnas.cli import cli
from frugalnas.track.ui import experiment_url
from mlflow_support import ensure_chromium, mlflow_server, render_dom

CONFIG = {
    "name": "tracked",
    "seed": 0,
    "dataset": {"source": "digits", "codec": "png", "val_fraction": 0.15},
    "embedding": {"kind": "triplet", "latent_dim": 4, "epochs": 1, "image_size": 8},
    "selection": {"policy": "dds", "subset_size": 60, "warmup_epochs": 1, "mastery": 0.3, "index": "exact"},
    "space": {"name": "nb201", "network": {"channels": 4, "cells_per_stage": 1, "stages": 2}},
    "search": {"strategy": "evolution", "budget": 3, "scheduler": "fifo", "epochs_per_candidate": 3,
               "params": {"population_size": 2, "sample_size": 2}},
    "final": {"epochs": 2},
    "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1},
}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_search_against_a_real_mlflow_server(tmp_path, ray_session):
    import mlflow

    with mlflow_server(tmp_path / "server" / "mlflow.db", tmp_path / "server" / "artifacts") as url:
        path = tmp_path / "exp.yaml"
        path.write_text(yaml.safe_dump({**CONFIG, "tracking": {"uri": url, "experiment": "tracked-e2e"}}))
        result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out"), "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert not (tmp_path / "out" / "mlflow").exists()  # a server URI: nothing embedded
        assert summary["tracking"]["uri"] == url and summary["tracking"]["registered_model_version"] == "1"

        client = mlflow.MlflowClient(url)
        experiment = client.get_experiment_by_name("tracked-e2e")
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if r.data.tags.get("frugalnas.role") == "experiment"]
        children = [r for r in runs if r.data.tags.get("frugalnas.role") == "candidate"]
        assert len(parents) == 1 and len(children) == 3
        parent = parents[0]
        assert parent.info.run_id == summary["tracking"]["run_id"] and parent.info.status == "FINISHED"
        assert parent.data.tags["strategy"] == "evolution" and parent.data.tags["selector"] == "dds"
        assert parent.data.tags["space"] == "nb201" and parent.data.tags["frugalnas.best_arch"] == summary["best_arch"]
        assert parent.data.params["search.strategy"] == "evolution" and parent.data.params["search.budget"] == "3"
        assert parent.data.params["selection.subset_size"] == "60"
        assert parent.data.metrics["final_test_accuracy"] == pytest.approx(summary["final_test_accuracy"])
        assert parent.data.metrics["search_images_processed"] == summary["search_images_processed"]

        trials = {t["arch"]: t for t in summary["trials"]}
        assert {c.data.tags["frugalnas.arch"] for c in children} == set(trials)
        for child in children:
            assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
            trial = trials[child.data.tags["frugalnas.arch"]]
            assert child.data.metrics["accuracy"] == pytest.approx(trial["accuracy"])
            assert child.data.metrics["images_processed"] == trial["images_processed"]
            assert child.data.metrics["params"] == trial["params"]
            assert child.data.params["strategy"] == "evolution" and child.data.params["selector"] == "dds"
            assert any(k.startswith("arch.") for k in child.data.params)
            history = client.get_metric_history(child.info.run_id, "accuracy")
            assert [m.step for m in history] == [1, 2, 3]  # one point per epoch
            names = {a.path for a in client.list_artifacts(child.info.run_id, "selection")}
            assert names == {"selection/history.json", "selection/history.png"}

        top = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {"config.json", "summary.json", "dataset", "search", "model"} <= top
        search = {a.path for a in client.list_artifacts(parent.info.run_id, "search")}
        assert {"search/leaderboard.csv", "search/search_curve.png", "search/pareto_front.png"} <= search
        dataset = {a.path for a in client.list_artifacts(parent.info.run_id, "dataset")}
        assert "dataset/dataset.json" in dataset

        # the registered model loads back as the module that was trained
        version = client.get_model_version("tracked-e2e", "1")
        assert version.run_id == parent.info.run_id
        mlflow.set_tracking_uri(url)
        try:
            model = mlflow.pytorch.load_model("models:/tracked-e2e/1")
        finally:
            mlflow.set_tracking_uri(None)
        saved = torch.load(tmp_path / "out" / "final_model.pt")
        assert set(saved) == set(model.state_dict())
        assert all(torch.equal(saved[k], model.state_dict()[k]) for k in saved)

        # ... in the pickle-free pt2 format, with the export files and the summary as version tags
        assert parent.data.tags["frugalnas.model_serialization"] == "pt2"
        assert version.tags["frugalnas.best_arch"] == summary["best_arch"]
        assert float(version.tags["frugalnas.final_test_accuracy"]) == pytest.approx(summary["final_test_accuracy"])
        export = summary["export"]
        assert {"torchscript", "pt2", "architecture", "card"} <= set(export["formats"])
        assert all((tmp_path / "out" / "export" / f).is_file() for f in export["files"])
        fetched = CliRunner().invoke(cli, ["export", "models:/tracked-e2e/1", "--to", str(tmp_path / "fetched"),
                                                     "--tracking-uri", url])
        assert fetched.exit_code == 0, fetched.output
        assert (tmp_path / "fetched" / "model.ts").read_bytes() == (tmp_path / "out" / "export" / "model.ts").read_bytes()

        # What a user sees: the experiment page links to the candidates side by side, in one click.
        ensure_chromium()
        names = tuple(sorted(c.info.run_name for c in children))
        assert names == ("candidate-001", "candidate-002", "candidate-003")
        page = experiment_url(url, experiment.experiment_id)
        dom = render_dom(page, expect=names)
        for name in names:
            assert name in dom, f"{name!r} is not on the experiment page"
        links = [html.unescape(href) for href, text in re.findall(r'<a [^>]*href="([^"]*)"[^>]*>([^<]*)</a>', dom)
                 if text.startswith("Compare the 3 candidates")]
        assert len(links) == 1, "the experiment page has no link comparing the candidates"
        compare = render_dom(urllib.parse.urljoin(page, links[0]), expect=(*names, "accuracy"))
        assert "Comparing 3 Runs from 1 Experiment" in compare
        for text in (*names, "accuracy", "images_processed", "params", "strategy", "selector"):
            assert text in compare, f"{text!r} is not on the compare page"
