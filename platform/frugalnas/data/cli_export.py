"""``frugalnas export``: write a stored detection data set back out as a YOLO folder with a
``data.yaml`` that ultralytics' trainer takes as it is. Attach with ``cli.add_command(export_command)``."""
from __future__ import annotations

import click

from frugalnas.cli_support import emit_json, user_errors


@click.command("export")
@click.argument("dataset", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="The YOLO folder to write [default: DATASET/yolo]. An export of the same dataset is reused.")
@click.option("--split", "splits", multiple=True, type=click.Choice(["train", "val", "test"]),
              help="Split(s) to write (repeatable) [default: all of the dataset's].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object on the last line.")
@user_errors
def export_command(dataset, out, splits, as_json):
    """Write the detection DATASET (ingested by `frugalnas ingest`) as a YOLO-format folder:
    images/<split>/, labels/<split>/ (one 'class cx cy w h' line per box; an empty file is a
    background image) and data.yaml with absolute paths, for `yolo train data=FOLDER/data.yaml`."""
    from frugalnas.data.yolo_export import export_yolo

    export = export_yolo(dataset, out, splits=splits or None)
    if as_json:
        emit_json({"folder": str(export.root), "data_yaml": str(export.data_yaml), "splits": export.info["splits"]})
        return
    counts = ", ".join(f"{split} {n}" for split, n in export.info["splits"].items())
    click.echo(f"YOLO folder {export.root} ({counts} images)")
    click.echo(f"train with ultralytics:  yolo train model=MODEL.yaml data={export.data_yaml}")
