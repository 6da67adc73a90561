"""``frugalnas recode`` and ``frugalnas compression``: the compression study's commands."""
from __future__ import annotations

from pathlib import Path

import click

from frugalnas.cli_support import emit_json, user_errors

QUALITY_HELP = ("On the codec's own scale: quality 1..100 for jpeg, 0..100 for webp/avif (higher is better, default "
                "75); the constant rate factor (CRF) 0..51 for h264/h265 (lower is better, default 23 / 28).")


@click.command("recode")
@click.argument("dataset", type=click.Path())
@click.option("--codec", required=True,
              help="Codec to re-encode with: jpeg, webp, avif, h264, h265 (one intra frame per image, a fresh "
                   "encoder each), png or raw.")
@click.option("--quality", type=int, default=None, help=QUALITY_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the recoded dataset to.")
@click.option("--splits", default=None, metavar="SPLIT[,SPLIT]", help="Only these splits [default: all].")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the new dataset card as JSON on the last line.")
@user_errors
def recode_command(dataset, codec, quality, out, splits, overwrite, as_json):
    """Re-encode a stored DATASET at another codec and quality, keeping every image's id, split,
    label and boxes, so datasets at different levels hold the same images.

    The new codec encodes the pixels DATASET decodes to (store the reference losslessly, with png
    or raw, to compress it once only). The new card records, per split, payload bits per pixel
    (headers excluded) and stored bits per pixel, PSNR and SSIM against DATASET's pixels, the
    pixel format and the codec library versions.
    """
    from frugalnas.cli import _print_card
    from frugalnas.data.recode import recode

    card = recode(dataset, out, codec=codec, quality=quality, overwrite=overwrite,
                  splits=[s.strip() for s in splits.split(",") if s.strip()] if splits else None,
                  progress=lambda n: click.echo(f"  ... {n} images recoded", err=True))
    if as_json:
        emit_json(card)
    else:
        _print_card(card)
        click.echo(f"written to {Path(out).resolve()} (recoded from {card['recoded_from']['path']})")


@click.command("compression")
@click.argument("config", type=click.Path())
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a config key (repeatable).")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Output folder [default: runs/<name>].")
@click.option("--resume", is_flag=True, help="Continue a stopped study in the same output folder: trained models, "
              "recoded levels and finished searches are reused.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json as one JSON object on the last line.")
@user_errors
def compression_command(config, overrides, out, resume, as_json):
    """Run the compression study in CONFIG (YAML): what lossy compression of the data costs a model,
    and what retraining on compressed data recovers.

    \b
    1. degradation: train compression.model on the reference data, test it on the test split
       re-encoded at every level of compression.levels (codec -> qualities on the codec's own
       scale: JPEG/WebP/AVIF quality, higher is better; H.264/H.265 CRF, lower is better);
    2. recovery: retrain from scratch on compressed training data (compression.recovery), test at
       the same level; recovery = (A_retrained@L - A_orig@L) / (A_orig@ref - A_orig@L), with a
       bootstrap interval, n/a when the drop is within noise;
    3. two-stage NAS (compression.two_stage): search (the config's search settings) on reference
       and on compressed data, retrain each result on both, test every cell on both.

    The score is top-1 accuracy, or mAP50-95 on a detection data set (compression.model is then a
    yolo:ARCH detector or run:PATH of a detection run). Writes OUT/summary.json, OUT/plots/*.png and
    records the study in MLflow.
    """
    from frugalnas.config import load_config
    from frugalnas.runtime.compression import run_compression

    experiment = load_config(config, overrides)
    summary = run_compression(experiment, out, resume=resume, log=lambda message: click.echo(message, err=True))
    if as_json:
        emit_json(summary)
        return
    click.echo(f"outputs in {summary['output_dir']} (summary.json, plots/: {', '.join(Path(p).name for p in summary['plots'])})")
    tracking = summary.get("tracking")
    if tracking:
        where = (f"frugalnas ui --out {summary['output_dir']}" if tracking["embedded"] else tracking["uri"])
        click.echo(f"MLflow: experiment {tracking['experiment']!r}, run {tracking['run_id']} ({where})")
