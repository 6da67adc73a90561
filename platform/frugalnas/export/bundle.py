"""Exporting a finished run: from its output folder (``summary.json``, ``final_model.pt``, the
dataset) or from a model registered in MLflow, into a folder of files that need no frugalnas.

``frugalnas run`` writes the bundle to ``OUT/export/`` as its last step (and registers it with the
model in MLflow); ``frugalnas export OUT`` writes it again, elsewhere or in other formats.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from frugalnas.errors import DataError
from frugalnas.export.formats import (CHECK_FILE, EXPORT_FORMATS, MODEL_FORMATS, ExportContext, ExportError,
                                      onnx_available, recheck, write_check_batch)

REPORT_FILE = "export.json"
CHECK_IMAGES = 16  # test images in the check batch
ORDER = ("torchscript", "pt2", "onnx", "ultralytics", "architecture", "card")  # the card describes the others


def _order(name: str) -> float:
    """Where a format is written: the model files first, the card last (a newly registered format
    goes before the architecture and the card, which describe what was written)."""
    return ORDER.index(name) if name in ORDER else ORDER.index("architecture") - 0.5


def default_formats(detection: bool = False) -> list[str]:
    """What an export writes unless told otherwise: every model format that is installed, the
    architecture and the card (ONNX only with the optional extra); ultralytics files for detection."""
    if detection:
        return ["ultralytics", "architecture", "card"]
    return ["torchscript", "pt2"] + (["onnx"] if onnx_available() else []) + ["architecture", "card"]


def parse_formats(text: str | Sequence[str] | None, detection: bool = False) -> list[str]:
    if text is None or text == "" or text == ["default"]:
        return default_formats(detection)
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    for name in names:
        EXPORT_FORMATS.get(name)  # an unknown name lists the allowed ones
    return sorted(set(names), key=_order)


def architecture_document(*, space_name: str, space, arch, summary: Mapping[str, Any], card: Mapping[str, Any],
                          params: int | None, flops: int | None) -> dict:
    """The standalone description of the exported architecture (``architecture.yaml``)."""
    choices = ({name: options[i] for (name, options), i in zip(space.choices(), space.to_choices(arch)) if i >= 0}
               if space is not None else None)
    size = card.get("image_size")
    detection = card.get("task") == "detection"
    doc = {
        "experiment": summary.get("experiment"),
        "task": card.get("task", "classification"),
        "space": space_name,
        "family": space.family if space is not None else summary.get("space_family"),
        "space_settings": space.config.model_dump(mode="json") if space is not None else summary.get("space_settings"),
        "arch": str(arch),
        "choices": json.loads(json.dumps(choices, default=str)),
        "params": params,
        "flops": flops,
        "input": None if detection else {
            "layout": "NCHW", "channels": card.get("channels"), "height": size, "width": size, "dtype": "float32",
            "preprocessing": "pixel values / 255 (range 0..1), no mean/std normalisation",
            "output": f"(batch, {len(card.get('classes') or [])}) logits, one per class in `classes` order"},
        "classes": list(card.get("classes") or []),
        "test_accuracy": summary.get("final_test_accuracy"),
        "dataset": {**{k: v for k, v in card.items() if k != "skipped"}, "skipped": len(card.get("skipped") or [])},
    }
    if detection:
        doc["test_map50_95"] = summary.get("final_test_map50_95")
        doc["test_map50"] = summary.get("final_test_map50")
        doc.pop("test_accuracy")
    return doc


def check_batch(dataset_dir: Path, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test images of the dataset (val or train when there is no test split) and the
    model's outputs on them."""
    from frugalnas.data import open_dataset

    dataset = open_dataset(dataset_dir)
    split = next((s for s in ("test", "val", "train") if dataset.card["splits"].get(s)), None)
    if split is None:
        raise DataError(f"{dataset_dir}: no images to check the export with")
    from frugalnas.data.torch_dataset import ImageSplit

    ids = dataset.labels(split)[0][:CHECK_IMAGES]  # no decoding of the whole split
    images = ImageSplit(dataset, split, ids=ids).images
    model.eval()
    with torch.no_grad():
        return images, model(images)


def write_bundle(ctx: ExportContext, to: Path, formats: Sequence[str],
                 log: Callable[[str], None] | None = None) -> dict:
    """Write ``formats`` into ``to`` (model formats checked as they are written); returns the report,
    also written as ``to/export.json``."""
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    formats = sorted(set(formats), key=_order)
    ctx.written = {}
    for name in formats:
        entry = EXPORT_FORMATS.get(name)(ctx, to)
        ctx.written[name] = entry
        if log:
            check = entry.get("check")
            shown = (f" (loaded back: max |diff| {check['max_abs_diff']:.2g} on {check['batch']} test images, "
                     "same class for all)" if check else "")
            log(f"  {name}: {', '.join(entry['files'])}{shown}")
    files = [f for entry in ctx.written.values() for f in entry["files"]]
    if any(name in MODEL_FORMATS for name in formats):
        check_file = write_check_batch(ctx, to)
        if check_file:
            files.append(check_file)
    report = {"folder": str(to.resolve()), "formats": ctx.written, "files": files,
              "tolerance": {"atol": 1e-4, "rtol": 1e-4}}
    (to / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    report["files"].append(REPORT_FILE)
    return report


# ---------------------------------------------------------------------------------------- from a run


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot be read ({error})") from None


def load_run(out: str | Path, dataset: str | Path | None = None) -> ExportContext:
    """The export context of a finished ``frugalnas run`` output folder."""
    from frugalnas.config import parse_config
    from frugalnas.data import open_dataset
    from frugalnas.spaces import load_space

    out = Path(out).expanduser().resolve()
    if not (out / "summary.json").is_file():
        raise DataError(f"{out} holds no summary.json: export takes the output folder of a finished `frugalnas run` "
                        "(or a registered model, models:/NAME/VERSION)")
    summary = _read_json(out / "summary.json")
    config = summary.get("config") or (_read_json(out / "config.json") if (out / "config.json").is_file() else {})
    summary = {**summary, "config": config}
    dataset_dir = Path(dataset or (summary.get("dataset") or {}).get("path") or out / "dataset").expanduser()
    if not (dataset_dir / "dataset.json").is_file():
        raise DataError(f"the run's dataset {dataset_dir} is not there (moved or deleted?): pass --dataset DIR, the "
                        "ingested dataset the run trained on (it supplies the data card and the check batch)")
    card = open_dataset(dataset_dir).card

    def space_of_run():
        if summary.get("space_settings"):
            return load_space(summary["space_settings"])
        name, overrides = parse_config(config, str(out / "config.json")).space_spec()
        return load_space(name, overrides or None)

    detection = card.get("task") == "detection" or (out / "best.pt").is_file()
    if detection:  # ultralytics serialises the model itself: best.yaml (architecture) and best.pt (weights)
        files = {k: out / f for k, f in (("yaml", "best.yaml"), ("weights", "best.pt")) if (out / f).is_file()}
        if not files:
            raise DataError(f"{out}: a detection run keeps its model in best.yaml and best.pt, and neither is there")
        try:
            space = space_of_run()
            doc = architecture_document(space_name=summary.get("space") or space.family, space=space,
                                        arch=space.parse(summary["best_arch"]), summary=summary, card=card,
                                        params=summary.get("final_params"), flops=summary.get("final_flops"))
        except Exception:  # noqa: BLE001 (the files carry the model; the document then lacks the choices)
            doc = architecture_document(space_name=str(summary.get("space")), space=None, arch=summary["best_arch"],
                                        summary=summary, card=card, params=summary.get("final_params"),
                                        flops=summary.get("final_flops"))
        return ExportContext(model=None, inputs=None, outputs=None, document=doc, summary=summary,
                             ultralytics_files=files)
    space = space_of_run()
    arch = space.parse(summary["best_arch"])
    space_name = summary.get("space") or space.family
    weights = out / "final_model.pt"
    if not weights.is_file():
        raise DataError(f"{out}: no final_model.pt (the retrained model's weights); did the run finish?")
    model = space.build(arch, len(card["classes"]), card["channels"])
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))  # tensors only, no code
    inputs, outputs = check_batch(dataset_dir, model)
    size = card.get("image_size") or inputs.shape[-1]
    doc = architecture_document(space_name=space_name, space=space, arch=arch, summary=summary, card=card,
                                params=sum(p.numel() for p in model.parameters()),
                                flops=space.count_flops(arch, len(card["classes"]), card["channels"], size))
    return ExportContext(model=model, inputs=inputs, outputs=outputs, document=doc, summary=summary)


def export_run(out: str | Path, to: str | Path | None = None, formats: str | Sequence[str] | None = None,
               dataset: str | Path | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Export the run in output folder ``out`` to ``to`` (default ``OUT/export``)."""
    ctx = load_run(out, dataset)
    names = parse_formats(formats, detection=ctx.model is None)
    target = Path(to).expanduser() if to else Path(out).expanduser().resolve() / "export"
    return write_bundle(ctx, target, names, log)


# ----------------------------------------------------------------------------- from the MLflow registry


def export_registered(uri: str, to: str | Path, formats: str | Sequence[str] | None = None,
                      tracking_uri: str | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Copy the export files a registered model carries (``models:/NAME/VERSION``) into ``to`` and
    check each model file again against the check batch stored with it."""
    import contextlib

    import mlflow

    from frugalnas.track.runs import tracking_uri_set_to

    with tempfile.TemporaryDirectory(prefix="frugalnas-export-") as tmp:
        try:  # models:/ URIs resolve through the registry, which follows the global tracking URI
            with tracking_uri_set_to(tracking_uri) if tracking_uri else contextlib.nullcontext():
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except Exception as error:  # MlflowException and connection errors alike mean "not there"
            raise DataError(f"cannot fetch {uri} from the MLflow tracking server "
                            f"{tracking_uri or mlflow.get_tracking_uri()}: {str(error).splitlines()[0][:300]}") from None
        extra = local / "extra_files"
        report_path = extra / REPORT_FILE
        if not report_path.is_file():
            raise DataError(f"{uri} carries no frugalnas export files (extra_files/{REPORT_FILE}); it was registered "
                            "by an older frugalnas: export from the run's output folder instead")
        saved = _read_json(report_path)
        available = list(saved["formats"])
        wanted = available if formats is None else parse_formats(formats)
        absent = [n for n in wanted if n not in available]
        if absent:
            raise ExportError(f"{uri} carries the formats {', '.join(available)}; not {', '.join(absent)}: export "
                              "those from the run's output folder")
        to = Path(to).expanduser()
        to.mkdir(parents=True, exist_ok=True)
        written: dict[str, dict] = {}
        for name in wanted:
            entry = dict(saved["formats"][name])
            for file in entry["files"]:
                shutil.copyfile(extra / file, to / file)
            if name in MODEL_FORMATS:
                entry["check"] = recheck(name, to / entry["files"][0], extra / CHECK_FILE)
            written[name] = entry
            if log:
                log(f"  {name}: {', '.join(entry['files'])}")
        files = [f for entry in written.values() for f in entry["files"]]
        if any(name in MODEL_FORMATS for name in wanted):
            shutil.copyfile(extra / CHECK_FILE, to / CHECK_FILE)
            files.append(CHECK_FILE)
    report = {"folder": str(to.resolve()), "source": uri, "formats": written, "files": files,
              "tolerance": saved.get("tolerance")}
    (to / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    report["files"].append(REPORT_FILE)
    return report
