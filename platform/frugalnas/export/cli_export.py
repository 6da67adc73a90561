"""``frugalnas export``: a finished run, or a model registered in MLflow, as files to deploy without
frugalnas; given a stored detection dataset instead, its YOLO folder (``data/cli_export.py``). One
command for both, told apart by what SOURCE is. Attach with ``cli.add_command(export_command)``."""
from __future__ import annotations

import click

from frugalnas.cli_support import emit_json, user_errors


@click.command("export")
@click.argument("source")
@click.option("--format", "formats", default=None, metavar="NAMES",
              help="Comma-separated: torchscript, pt2, onnx (needs `pip install 'frugalnas[onnx]'`), architecture, "
                   "card, ultralytics (detection). [default: torchscript, pt2, onnx if installed, architecture, card; "
                   "for detection runs ultralytics, architecture, card; for a registered model every format it carries]")
@click.option("--to", "to", type=click.Path(file_okay=False), default=None,
              help="Folder to write to [default: OUT/export; required for a registered model].")
@click.option("--dataset", type=click.Path(file_okay=False), default=None,
              help="The run's ingested dataset, if it moved [default: the path in summary.json].")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI for models:/ sources "
                                                  "[default: MLFLOW_TRACKING_URI].")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Stored dataset SOURCE: the YOLO folder to write [default: SOURCE/yolo].")
@click.option("--split", "splits", multiple=True, type=click.Choice(["train", "val", "test"]),
              help="Stored dataset SOURCE: split(s) to write (repeatable) [default: all of the dataset's].")
@click.option("--json", "as_json", is_flag=True, help="Print the export report as JSON on the last line.")
@user_errors
@click.pass_context
def export_command(ctx, source, formats, to, dataset, tracking_uri, out, splits, as_json):
    """Export SOURCE, the output folder of a finished `frugalnas run` (or a registered MLflow model,
    models:/NAME/VERSION), as files that need no frugalnas to use. SOURCE may also be a stored
    detection dataset (a folder with dataset.json, from `frugalnas ingest`): it is then written as a
    YOLO folder for ultralytics (--out, --split; last paragraph below).

    \b
    torchscript   model.ts      torch.jit.load("model.ts")
    pt2           model.pt2     torch.export.load("model.pt2").module()
    onnx          model.onnx    any ONNX runtime (input "images", output "logits")
    architecture  architecture.yaml, architecture.json: space, canonical string, choices,
                  parameters, FLOPs, the dataset card, the test accuracy
    card          MODEL_CARD.md: search settings, cost and results
    ultralytics   best.yaml, best.pt (detection runs)

    \b
    A stored detection dataset as SOURCE (frugalnas export DATASET [--out FOLDER] [--split S]):
    images/<split>/, labels/<split>/ (one 'class cx cy w h' line per box; an empty file is a
    background image) and data.yaml with absolute paths, for `yolo train data=FOLDER/data.yaml`.

    Every model file is loaded back and its outputs compared with the PyTorch model's on 16 real
    test images (tolerance 1e-4 + 1e-4 x |output|, same class for all); the images and outputs are
    kept in check_batch.npz. Models take float32 (batch, channels, height, width) in [0, 1].
    """
    from pathlib import Path

    from frugalnas.errors import ConfigError
    from frugalnas.export import export_registered, export_run

    folder = Path(source).expanduser()
    if (folder / "dataset.json").is_file() and not (folder / "summary.json").is_file():
        from frugalnas.data.cli_export import export_command as export_dataset

        given = [name for name, value in (("--format", formats), ("--to", to), ("--dataset", dataset),
                                          ("--tracking-uri", tracking_uri)) if value]
        if given:
            raise ConfigError(f"{source} is a stored dataset, written as a YOLO folder with --out and --split; "
                              f"{', '.join(given)} are for exporting a run's model")
        return ctx.invoke(export_dataset.callback.__wrapped__, dataset=source, out=out, splits=splits,
                          as_json=as_json)
    if out or splits:
        raise ConfigError(f"--out and --split are for exporting a stored dataset as a YOLO folder; {source} is not "
                          "one (no dataset.json): a run's model export goes to --to DIR")

    def log(message):
        click.echo(message, err=True)

    if source.startswith("models:/"):
        if not to:
            raise ConfigError("exporting a registered model needs --to DIR, the folder to write to")
        report = export_registered(source, to, formats, tracking_uri=tracking_uri, log=log)
    else:
        from frugalnas.export.formats import onnx_available

        if formats is None and not onnx_available():
            log("note: ONNX is left out: it needs the optional packages onnx, onnxscript and onnxruntime "
                "(pip install 'frugalnas[onnx]')")
        report = export_run(source, to, formats, dataset=dataset, log=log)
    if as_json:
        emit_json(report)
        return
    click.echo(f"exported to {report['folder']}: {', '.join(report['files'])}")
