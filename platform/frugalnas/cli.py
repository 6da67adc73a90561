"""The ``frugalnas`` command line. Each command is a thin shell over the library; errors meant for the
user (bad input, bad config) print one clear message and exit with code 2."""
from __future__ import annotations

import json
from pathlib import Path

import click

from frugalnas.cli_support import emit_json, user_errors


def _print_card(card: dict) -> None:
    click.echo(f"dataset {card['name']} ({card['task']}, {len(card['classes'])} classes, {card['channels']} channel(s))")
    scale = {"CRF": " CRF "}.get(card.get("quality_scale"), " q")
    click.echo(f"  stored as {card['codec']}" + (f"{scale}{card['quality']}" if card["quality"] is not None else "")
               + f" at {card['image_size'] or 'native'} px: {card['stored_bytes']:,} bytes "
               f"({card['bytes_per_image']} per image), mean PSNR {card['mean_psnr']} dB")
    for split, count in card["splits"].items():
        counts = card["class_counts"][split]
        what = "objects" if card["task"] == "detection" else "images"
        background = (card.get("background_images") or {}).get(split)
        stats = card.get("split_stats", {}).get(split)
        cost = (f"; {stats['payload_bpp']:.2f} payload bits/pixel ({stats['stored_bpp']:.2f} stored), "
                f"PSNR {stats['mean_psnr']:.1f} dB"
                + (f", SSIM {stats['mean_ssim']:.3f}" if stats.get("mean_ssim") is not None else "")) if stats else ""
        click.echo(f"  {split:5s} {count:7d} images; {what} per class {min(counts.values())}..{max(counts.values())}"
                   + (f"; {background} background (no objects)" if background else "") + cost)
    click.echo(f"  skipped {len(card['skipped'])} record(s)")


def _summarise_skipped(card: dict) -> None:
    skipped = card["skipped"]
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for item in skipped:
        reasons[item["reason"].split(":")[0]] = reasons.get(item["reason"].split(":")[0], 0) + 1
    summary = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    click.echo(f"frugalnas: warning: skipped {len(skipped)} bad record(s): {summary}", err=True)
    for item in skipped[:5]:
        click.echo(f"  {item['source']}: {item['reason']}", err=True)
    if len(skipped) > 5:
        click.echo(f"  ... and {len(skipped) - 5} more: see 'skipped' in dataset.json", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="frugalnas")
def cli():
    """frugalnas: neural architecture search that spends as little compute as possible.

    Datasets are stored as compressed images in Parquet (`ingest`); candidates train on small,
    class-balanced subsets that are re-formed with hard examples once mastered (DDS-NAS).
    """


@cli.command()
@click.argument("source")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the dataset to.")
@click.option("--codec", default="jpeg", show_default=True,
              help="Image codec: jpeg, webp, avif (Pillow), h264, h265 (x264/x265 via PyAV, one intra frame per "
                   "image), png or raw (lossless).")
@click.option("--quality", type=int, default=None,
              help="On the codec's own scale: quality 1..100 for jpeg, 0..100 for webp/avif (higher is better, "
                   "default 75); CRF 0..51 for h264/h265 (lower is better, default 23 / 28); ignored by png/raw.")
@click.option("--image-size", type=int, default=None, help="Resize every image to N x N pixels [default: keep].")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Fraction of train carved out as val when the source has no val split.")
@click.option("--test-fraction", type=float, default=0.2, show_default=True,
              help="Fraction of train carved out as test when the source has no test split.")
@click.option("--task", type=click.Choice(["classification", "detection"]), default=None,
              help="Default: detection for yolo and voc, classification otherwise.")
@click.option("--classes", default=None, metavar="NAME,NAME,...",
              help="voc: fix the class list and its order (default: the sorted names in the annotations); "
                   "an object of another class is then a bad record.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for generated data and split carving.")
@click.option("--pool-splits", is_flag=True,
              help="Ignore the source's splits: pool every image, then carve val and test from the pool "
                   "(for a source that ships one split only, e.g. an MNIST test set).")
@click.option("--strict", is_flag=True, help="Fail (exit 2) on the first bad record instead of skipping it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the dataset card as JSON on the last line.")
@user_errors
def ingest(source, out, codec, quality, image_size, val_fraction, test_fraction, task, classes, seed, pool_splits,
           strict, overwrite, as_json):
    """Ingest SOURCE into a compressed Parquet dataset folder.

    \b
    SOURCE is one of:
      digits         scikit-learn's 8x8 handwritten digits (1797 images, built in)
      shapes[:N]     N generated images with shape labels and boxes (default 1000)
      cifar:PATH     CIFAR-10/100 "python version" folder (pickled batches)
      mnist:PATH     MNIST / Fashion-MNIST IDX files (optionally .gz)
      folder:PATH    image folder: PATH/<class>/* or PATH/{train,val,test}/<class>/*
      yolo:PATH      YOLO detection set: data.yaml, images/<split>/, labels/<split>/
      voc:PATH       Pascal VOC detection set: Annotations/*.xml, JPEGImages/, ImageSets/Main/*.txt

    Bad records (corrupt images, labels out of range, boxes outside the image or degenerate,
    unknown classes, VOC images without annotation) are skipped and listed in dataset.json under
    'skipped'; --strict fails on the first. A YOLO image without a label file (or with an empty
    one) is a background image, kept as an image without objects, as ultralytics reads it.
    """
    from frugalnas.data import ingest as run_ingest

    def progress(count):
        click.echo(f"  ... {count} images stored", err=True)

    card = run_ingest(source, out, codec=codec, quality=quality, image_size=image_size, val_fraction=val_fraction,
                      test_fraction=test_fraction, task=task, seed=seed, strict=strict, overwrite=overwrite,
                      classes=[c.strip() for c in classes.split(",")] if classes else None, pool_splits=pool_splits,
                      progress=progress)
    _summarise_skipped(card)
    if as_json:
        emit_json(card)
    else:
        _print_card(card)
        click.echo(f"written to {Path(out).resolve()}")


@cli.command()
@click.argument("dataset", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON on the last line.")
@user_errors
def info(dataset, as_json):
    """Show the card of an ingested DATASET folder."""
    from frugalnas.data import open_dataset

    card = open_dataset(dataset).card
    emit_json(card) if as_json else _print_card(card)


@cli.command()
@click.argument("config", type=click.Path())
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config key (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the validated config, defaults filled in, as JSON.")
@user_errors
def validate(config, overrides, as_json):
    """Check an experiment CONFIG (YAML) without running it: every key, type and range."""
    from frugalnas.config import load_config

    experiment = load_config(config, overrides)
    if as_json:
        emit_json(experiment.model_dump())
    else:
        click.echo(f"{config}: valid experiment {experiment.name!r}")


@cli.command()
@click.argument("dataset", type=click.Path())
@click.option("--kind", type=click.Choice(["plain", "triplet", "attention"]), default="triplet", show_default=True,
              help="plain: reconstruction loss only; triplet: plus a class-aware triplet-margin term; attention "
                   "(detection data): a spatial gate before the latent, trained to match the box masks.")
@click.option("--latent-dim", type=int, default=16, show_default=True, help="Size of the latent vector.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Training epochs (0 = untrained control).")
@click.option("--image-size", type=int, default=None,
              help="Autoencoder input size (power of 2, >= 8) [default: the next power of 2 >= the stored size, "
                   "at most 64, or 256 for detection data].")
@click.option("--attention-weight", type=float, default=1.0, show_default=True,
              help="attention: weight of the gate-versus-box-mask loss beside reconstruction.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on the last line.")
@user_errors
def embed(dataset, kind, latent_dim, epochs, image_size, attention_weight, seed, as_json):
    """Train an autoencoder on DATASET's stored images and save one latent vector per image.

    Writes DATASET/embeddings/<kind>-d<dim>-<key>.parquet (the key hashes the settings) and reports
    how well the latents group same-class images: label agreement among the 5 and 10 nearest
    neighbours on a held-out split, beside the same measure on raw pixels, with a warning when the
    latents do worse than the pixels. For detection data also the Jaccard of the images' label sets
    (the classes of their boxes) with their nearest and furthest latent neighbours, against raw
    pixels and random pairs.
    """
    from frugalnas.data import open_dataset
    from frugalnas.embed import embed_dataset
    from frugalnas.embed.latents import default_image_size

    def progress(info):
        click.echo(f"  epoch {info['epoch']}/{info['epochs']}  loss {info['loss']:.4f}  ({info['seconds']:.1f}s)", err=True)

    image_size = image_size or default_image_size(open_dataset(dataset).card)
    click.echo(f"training a {kind} autoencoder (latent {latent_dim}, {image_size}px) for {epochs} epoch(s) ...",
               err=True)
    report = embed_dataset(dataset, kind=kind, latent_dim=latent_dim, epochs=epochs, image_size=image_size,
                           attention_weight=attention_weight, seed=seed, progress=progress)
    report = {k: v for k, v in report.items() if k != "history"}
    if as_json:
        emit_json(report)
    else:
        ks = ", ".join(f"k={k}: {v:.3f} (pixels {report['pixel_knn_agreement'][k]:.3f})"
                       for k, v in report["knn_agreement"].items() if v is not None)
        click.echo(f"label agreement of nearest neighbours on {report['eval_split']}: {ks}")
        if "label_jaccard" in report:
            ks = ", ".join(f"k={k}: {v:.3f} (pixels {report['pixel_label_jaccard'][k]:.3f})"
                           for k, v in report["label_jaccard"].items() if v is not None)
            click.echo(f"label-set Jaccard with nearest neighbours: {ks}; random pairs "
                       f"{report['random_label_jaccard']:.3f}")
            click.echo(f"label-set Jaccard with the furthest neighbour: {report['furthest_label_jaccard']:.3f} "
                       f"(pixels {report['pixel_furthest_label_jaccard']:.3f}); within the dominant class "
                       f"{report['furthest_same_class_label_jaccard']:.3f}")
        if "attention_iou" in report:
            click.echo(f"attention gate versus box masks: IoU {report['attention_iou']:.3f}")
        click.echo(f"latents written to {report['path']}")
    if report.get("warning"):
        click.echo(f"frugalnas: warning: {report['warning']}", err=True)


@cli.command()
@click.argument("dataset", type=click.Path())
@click.option("--arch", default="baseline:cnn", show_default=True,
              help="SPACE:ARCH, e.g. baseline:cnn or nb201:'|nor_conv_3x3~0|+|...|'.")
@click.option("--selector", type=click.Choice(["full", "stream", "random", "entropy", "dynamic-random", "dds", "dds-coverage"]),
              default="dds",
              show_default=True, help="Which images each epoch trains on (see the README's selector table).")
@click.option("--subset-size", type=int, default=100, show_default=True,
              help="Images per epoch (all but full; stream: the stream's stretch per epoch).")
@click.option("--hardness", type=float, default=0.9, show_default=True, help="An image is easy above this hardness.")
@click.option("--mastery", type=float, default=0.6, show_default=True,
              help="Subset training accuracy at which it counts as mastered.")
@click.option("--warmup-epochs", type=int, default=5, show_default=True, help="First epochs that always train.")
@click.option("--curriculum-stages", type=int, default=0, show_default=True,
              help="Raise the mastery threshold in this many stages (0 = off; the paper uses 5).")
@click.option("--order", type=click.Choice(["curriculum", "blocks", "shuffled"]), default="curriculum",
              show_default=True, help="dds/dynamic-random training order: easiest first, easiest first in 4 "
                                      "shuffled blocks, or a fresh random order each epoch.")
@click.option("--easy-quantile", type=float, default=None,
              help="dds/dynamic-random: an image is easy above this quantile of the subset's hardness "
                   "(0.8: the easiest fifth) instead of above --hardness.")
@click.option("--mastery-rule", type=click.Choice(["accuracy", "easy-fraction"]), default="accuracy",
              show_default=True, help="Mastered when the subset's training accuracy, or its fraction of easy "
                                      "images (the thesis's variant), reaches --mastery.")
@click.option("--index", type=click.Choice(["kdtree", "exact"]), default="kdtree", show_default=True,
              help="Furthest-neighbour index for dds.")
@click.option("--embedding", "embedding_kind", type=click.Choice(["plain", "triplet"]), default="triplet",
              show_default=True, help="Autoencoder kind for dds (trained on first use, then reused).")
@click.option("--latent-dim", type=int, default=16, show_default=True)
@click.option("--embed-epochs", type=int, default=10, show_default=True, help="Autoencoder epochs (0 = untrained).")
@click.option("--reference-epochs", type=int, default=5, show_default=True,
              help="entropy: epochs of the reference model (baseline:cnn on the whole train split; trained on "
                   "first use, then reused).")
@click.option("--entropy-bin-width", type=float, default=0.5, show_default=True,
              help="entropy: width of the log10-entropy histogram's bins (the paper: 0.5 for CIFAR-10).")
@click.option("--epochs", type=int, default=None,
              help="Training epochs [default: 20, or as many as --images-budget needs when that is given; "
                   "with both, whichever ends first].")
@click.option("--images-budget", type=int, default=None,
              help="Stop after exactly this many training images (forward + backward), mid-epoch if need be; "
                   "the learning-rate schedule then runs over the images instead of the epochs.")
@click.option("--schedule", type=click.Choice(["cosine", "onecycle"]), default="cosine", show_default=True,
              help="Learning-rate schedule: cosine annealing, or one-cycle (10% linear warm-up, then cosine).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=0.05, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the report to this JSON file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on the last line.")
@user_errors
def train(dataset, arch, selector, subset_size, hardness, mastery, warmup_epochs, curriculum_stages, order,
          easy_quantile, mastery_rule, index,
          embedding_kind, latent_dim, embed_epochs, reference_epochs, entropy_bin_width, epochs, images_budget,
          schedule, batch_size, lr, seed, out, as_json):
    """Train one fixed architecture on DATASET with a data selector (no search).

    Reports test accuracy (held-out test split) against the images processed, the cost DDS cuts.
    """
    from frugalnas.train import TrainSettings
    from frugalnas.train.fixed import train_fixed

    if epochs is None and images_budget is None:
        epochs = 20
    end = "?" if epochs is None else epochs

    def progress(r):
        what = (f"trained on {r.images} images, acc {r.train_accuracy:.3f}, loss {r.train_loss:.3f}" if r.images
                else "subset update (no training)" if r.updated else "idle")
        budget = f"/{images_budget}" if images_budget else ""
        cut = "" if r.complete else " (budget reached mid-epoch)"
        click.echo(f"  epoch {r.epoch + 1}/{end}: {what}{cut} | images processed {r.images_processed}{budget} | "
                   f"updates {r.subset_updates} | {r.seconds:.2f}s", err=True)

    def embed_progress(info):
        click.echo(f"  autoencoder epoch {info['epoch']}/{info['epochs']} loss {info['loss']:.4f}", err=True)

    settings = TrainSettings(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, images_budget=images_budget,
                             schedule=schedule)
    report = train_fixed(dataset, arch, selector=selector, subset_size=subset_size, hardness=hardness, mastery=mastery,
                         warmup_epochs=warmup_epochs, curriculum_stages=curriculum_stages, order=order,
                         easy_quantile=easy_quantile, mastery_rule=mastery_rule, index=index,
                         embedding={"kind": embedding_kind, "latent_dim": latent_dim, "epochs": embed_epochs},
                         reference={"epochs": reference_epochs}, entropy_bin_width=entropy_bin_width,
                         settings=settings, progress=progress, embed_progress=embed_progress,
                         reference_progress=lambda r: click.echo(
                             f"  reference model epoch {r.epoch + 1}/{reference_epochs}: train acc "
                             f"{r.train_accuracy:.3f}", err=True))
    if report["embedding"] and report["embedding"].get("warning"):
        click.echo(f"frugalnas: warning: {report['embedding']['warning']}", err=True)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k != "history"}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"{report['arch']} with {selector}: test accuracy {report['test_accuracy']:.4f} after "
                   f"{report['images_processed']:,} images processed ({report['subset_updates']} subset updates, "
                   f"{report['wall_seconds']:.1f}s)")


@cli.command()
@click.argument("config", type=click.Path())
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config key (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder [default: runs/<name>].")
@click.option("--resume", is_flag=True, help="Continue an interrupted search in the same output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json as one JSON object on the last line.")
@user_errors
def run(config, overrides, out, resume, as_json):
    """Run the experiment in CONFIG (YAML): ingest, embed, search, derive, retrain, report.

    Writes OUT/summary.json (best architecture, search cost, final test accuracy, every trial).
    """
    from frugalnas.config import load_config
    from frugalnas.runtime.experiment import run_experiment

    experiment = load_config(config, overrides)

    def log(message):
        click.echo(message, err=True)

    summary = run_experiment(experiment, out, resume=resume, log=log)
    if as_json:
        emit_json(summary)
    else:
        _print_summary(summary)


def _print_summary(summary: dict) -> None:
    trials = summary.get("trials") or []
    metric = summary.get("metric", "accuracy")
    label = {"accuracy": "val acc", "map50_95": "val mAP"}.get(metric, metric)
    if trials:
        click.echo(f"leaderboard ({len(trials)} candidates, best first{'; val mAP = mAP50-95' if metric == 'map50_95' else ''}):")
        truth = "ground_truth" in trials[0]
        click.echo(f"  {'#':>4s} {label:>7s}" + (f" {'truth':>8s}" if truth else "")
                   + f" {'params':>9s} {'images':>9s}  architecture")
        for trial in trials[:10]:
            score = "-" if trial.get(metric) is None else f"{trial[metric]:.4f}"
            number = "-" if trial.get("candidate") is None else str(trial["candidate"])
            value = trial.get("ground_truth")
            shown = "" if not truth else f" {'-' if value is None else f'{value:.4f}':>8s}"
            click.echo(f"  {number:>4s} {score:>7s}{shown} {trial['params'] or 0:9,d} "
                       f"{trial['images_processed'] or 0:9,d}  {trial['arch']}")
        failed = [t for t in trials if t.get("status", "finished") != "finished"]
        if failed:
            click.echo(f"{len(failed)} candidate(s) failed (no accuracy; the strategy was told they failed):")
            for trial in failed:
                click.echo(f"  {trial.get('candidate', '-'):>4} {trial['status']} after {trial['epochs']} epoch(s)"
                           f", {trial.get('retries', 0)} retries: {trial['error']}")
    click.echo(f"best architecture: {summary['best_arch']}")
    truth = summary.get("ground_truth")
    if truth and truth.get("regret") is not None:
        click.echo(f"ground truth ({truth['metric_column']}): chosen {truth['best_arch']:.4f}, optimum of the table "
                   f"{truth['optimum']:.4f}, regret {truth['regret']:.4f}")
    click.echo(f"search: {summary['search_images_processed']:,} images processed in {summary['search_wall_seconds']:.1f}s "
               f"({summary['strategy']}, selection {summary['selection']})")
    if "final_test_map50_95" in summary:
        click.echo(f"final: test mAP50-95 {summary['final_test_map50_95']:.4f}, mAP50 {summary['final_test_map50']:.4f}, "
                   f"{summary['final_params']:,} parameters")
        click.echo(f"outputs in {summary['output_dir']} (summary.json, best.yaml: ultralytics model YAML, "
                   "best.pt: ultralytics weights)")
    else:
        click.echo(f"final: test accuracy {summary['final_test_accuracy']:.4f}, {summary['final_params']:,} parameters")
        click.echo(f"outputs in {summary['output_dir']} (summary.json, final_model.pt)")
    tracking = summary.get("tracking")
    if tracking:
        registered = tracking.get("registered_model_version")
        model = f"; model registered as {tracking['experiment']!r} version {registered}" if registered else ""
        click.echo(f"MLflow: experiment {tracking['experiment']!r}, run {tracking['run_id']}{model}")
        if tracking.get("not_logged"):
            click.echo(f"MLflow could not record {len(tracking['not_logged'])} item(s) (the store failed mid-run): "
                       "see tracking.not_logged in summary.json")
        if tracking["embedded"]:
            click.echo(f"compare the candidates in the MLflow UI:  frugalnas ui --out {summary['output_dir']}")
        else:
            click.echo(f"compare the candidates in the MLflow UI at {tracking['uri']}")


@cli.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--epochs", type=int, default=30, show_default=True, help="Training epochs per selector.")
@click.option("--subset-size", type=int, default=100, show_default=True)
@user_errors
def demo(out, epochs, subset_size):
    """The demo on built-in data: ingest the digits, embed them, and train the same CNN with a
    static random subset and with DDS selection, side by side."""
    from frugalnas.data import ingest as run_ingest
    from frugalnas.train import TrainSettings
    from frugalnas.train.fixed import train_fixed

    out = Path(out)
    click.echo("1/3 ingesting scikit-learn's handwritten digits (8x8, PNG) ...")
    card = run_ingest("digits", out / "dataset", codec="png", overwrite=True)
    _print_card(card)
    results = {}
    for step, selector in ((2, "random"), (3, "dds")):
        click.echo(f"{step}/3 training baseline:cnn for {epochs} epochs with the {selector!r} selector "
                   f"(subset of {subset_size}) ...")

        def progress(r):
            if (r.epoch + 1) % 10 == 0 or r.updated:
                what = "subset update" if r.updated else f"train acc {r.train_accuracy:.3f}"
                click.echo(f"    epoch {r.epoch + 1}/{epochs}: {what}, {r.images_processed} images processed, "
                           f"{r.subset_updates} updates")

        results[selector] = train_fixed(
            out / "dataset", "baseline:cnn", selector=selector, subset_size=subset_size, warmup_epochs=5,
            mastery=0.6, embedding={"kind": "triplet", "latent_dim": 8, "epochs": 20, "image_size": 8},
            settings=TrainSettings(epochs=epochs, batch_size=32, seed=0), progress=progress,
            embed_progress=lambda info: info["epoch"] % 5 == 0 and click.echo(
                f"    autoencoder epoch {info['epoch']}/{info['epochs']} loss {info['loss']:.4f}"))
    click.echo("")
    click.echo(f"{'selector':10s} {'test acc':>8s} {'images':>8s} {'updates':>7s} {'seconds':>7s}")
    for selector, report in results.items():
        click.echo(f"{selector:10s} {report['test_accuracy']:8.4f} {report['images_processed']:8d} "
                   f"{report['subset_updates']:7d} {report['wall_seconds']:7.1f}")
    embedding = results["dds"]["embedding"]
    click.echo(f"triplet embedding: label agreement of 5 nearest neighbours {embedding['knn_agreement']['5']:.3f} "
               f"(raw pixels {embedding['pixel_knn_agreement']['5']:.3f})")
    (out / "demo.json").write_text(json.dumps(results, indent=2) + "\n")
    click.echo(f"outputs in {out.resolve()} (dataset/, dataset/embeddings/, demo.json)")


@cli.command()
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder of an experiment (the one `frugalnas run` wrote) "
                   "[default: the subfolder of runs/ whose MLflow store changed last].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 to reach the UI from other machines).")
@click.option("--port", type=int, default=5000, show_default=True, help="Port to listen on.")
@user_errors
def ui(out, host, port):
    """Open an experiment's MLflow UI: runs, metrics, the candidates side by side, the model.

    An experiment run without a tracking server keeps its MLflow store in its output folder
    (OUT/mlflow/mlflow.db and OUT/mlflow/artifacts). This serves that store with `mlflow server`
    in the foreground, prints the address and the experiment's page, and stops on Ctrl+C.

    Not needed when you track to an MLflow server (tracking.uri in the config, or the
    MLFLOW_TRACKING_URI environment variable): open that server's UI instead.
    """
    import sys

    from frugalnas.track.ui import find_store, newest_store, serve

    store = find_store(out) if out is not None else newest_store("runs")
    code = serve(store, host=host, port=port, echo=click.echo)
    if code:
        click.echo(f"frugalnas: error: mlflow server exited with code {code} (its messages are above)", err=True)
        sys.exit(1)


def _attach_commands() -> None:
    """Commands defined next to their feature (they import helpers from this module)."""
    from frugalnas.compression.cli import compression_command, recode_command
    from frugalnas.export.cli_export import export_command  # models; stored datasets go to data/cli_export
    from frugalnas.fidelity.cli import fidelity_command
    from frugalnas.strategies.cli_bench import bench_searchers_command

    cli.add_command(bench_searchers_command)
    cli.add_command(recode_command)
    cli.add_command(compression_command)
    cli.add_command(export_command)
    cli.add_command(fidelity_command)


_attach_commands()


def main() -> None:
    import os

    # MLflow logs its store migrations at INFO on every first use of a store: not news to a user
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    cli(prog_name="frugalnas")


if __name__ == "__main__":
    main()
