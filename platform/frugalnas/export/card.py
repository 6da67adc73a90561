"""The model card: a short Markdown page saying what the exported model is, how it was searched and
trained, what that cost, how well it scored, and how to load each exported file."""
from __future__ import annotations

from typing import Any, Mapping

HOW_TO_LOAD = {
    "model.ts": "`torch.jit.load('model.ts')`",
    "model.pt2": "`torch.export.load('model.pt2').module()`",
    "model.onnx": "`onnxruntime.InferenceSession('model.onnx')` (input `images`, output `logits`)",
    "best.pt": "`ultralytics.YOLO('best.pt')`",
    "best.yaml": "`ultralytics.YOLO('best.yaml')` (the architecture, untrained)",
    "architecture.yaml": "the architecture, space and data card (also `architecture.json`)",
    "check_batch.npz": "`numpy.load`: `inputs` (real test images) and the PyTorch model's `outputs` on them",
}


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def model_card(doc: Mapping[str, Any], summary: Mapping[str, Any], files: Mapping[str, dict] | None = None) -> str:
    """The card's Markdown. ``doc`` is the architecture document, ``files`` the export's per-format
    report (files and checks)."""
    config = summary.get("config") or {}
    search, selection = config.get("search") or {}, config.get("selection") or {}
    data = doc.get("dataset") or {}
    inputs = doc.get("input") or {}
    detection = doc.get("task") == "detection"
    score_name = "test mAP50-95" if detection else "test accuracy"
    score = summary.get("final_test_map50_95") if detection else summary.get("final_test_accuracy")
    lines = [
        f"# {summary.get('experiment', 'frugalnas model')}",
        "",
        f"A {'detector' if detection else 'classifier'} for **{data.get('name', '?')}** ({len(doc.get('classes') or [])} "
        f"classes) whose architecture was found by neural architecture search with "
        f"[frugalnas](https://github.com/) ({summary.get('strategy', '?')} over the `{doc.get('space', '?')}` space, "
        f"`{summary.get('selection', '?')}` data selection), then retrained from scratch on the full training split.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{doc.get('arch')}` |",
        f"| search space | `{doc.get('space')}` (family `{doc.get('family')}`) |",
        f"| parameters | {_number(doc.get('params'))} |",
        f"| FLOPs (multiply-adds) | {_number(doc.get('flops'))}"
        + (f" per {inputs.get('height')}x{inputs.get('width')} image |" if inputs else " |"),
    ]
    if inputs:
        lines.append(f"| input | `({inputs.get('layout', 'NCHW')})` float32, {inputs.get('channels')} x "
                     f"{inputs.get('height')} x {inputs.get('width')}, {inputs.get('preprocessing')} |")
        lines.append(f"| output | {inputs.get('output')} |")
    if doc.get("classes"):
        lines.append(f"| classes | {', '.join(map(str, doc['classes']))} |")
    lines += ["", "## Results", "",
              f"- **{score_name}: {_number(score)}** on the held-out test split "
              f"({_number((data.get('splits') or {}).get('test'))} images), never seen during the search.",
              f"- Retrained for {_number(summary.get('final_epochs'))} epochs on the full training split "
              f"({_number(summary.get('final_images_processed'))} images processed, "
              f"{_number(summary.get('final_wall_seconds'), 1)} s)."]
    trials = summary.get("trials") or []
    scores = [t.get("accuracy") for t in trials if t.get("accuracy") is not None]
    if scores:
        lines.append(f"- Best validation accuracy among the {len(trials)} candidates of the search: "
                     f"{max(scores):.4f} (after {search.get('epochs_per_candidate', '?')} epoch(s) each on selected "
                     "subsets: a ranking signal, not a final score).")
    lines += ["", "## Search", "",
              f"- Strategy `{summary.get('strategy')}` with settings {search.get('params') or 'default'}; budget "
              f"{search.get('budget', '?')} candidates, scheduler `{search.get('scheduler', '?')}`, "
              f"{search.get('epochs_per_candidate', '?')} epoch(s) per candidate, objectives "
              f"{search.get('objectives', ['accuracy'])}, seed {config.get('seed', '?')}.",
              f"- Data selection `{summary.get('selection')}`"
              + (f": subsets of {selection.get('subset_size')} images, hardness {selection.get('hardness')}, mastery "
                 f"{selection.get('mastery')}" if summary.get("selection") not in (None, "full") else "") + ".",
              "", "## Cost", "",
              f"- Search: {_number(summary.get('search_images_processed'))} images processed, "
              f"{_number(summary.get('search_wall_seconds'), 1)} s.",
              f"- Whole experiment (ingest, embedding, search, retraining, test): "
              f"{_number(summary.get('total_wall_seconds'), 1)} s.",
              "", "## Data", "",
              f"- `{data.get('name')}` from `{data.get('source')}`, stored as {data.get('codec')}"
              + (f" quality {data.get('quality')}" if data.get("quality") else "")
              + f" at {data.get('image_size') or 'native'} px; splits {data.get('splits')}.",
              f"- Records skipped at ingest: {data.get('skipped', 0)}."]
    if files:
        lines += ["", "## Files", "", "| file | load with | check against the PyTorch model |", "|---|---|---|"]
        for name, entry in files.items():
            check = entry.get("check")
            shown = (f"max abs diff {check['max_abs_diff']:.2g} on {check['batch']} test images "
                     f"(tolerance {check['atol']:g} + {check['rtol']:g} x abs output), same class for all"
                     if check else "")
            for file in entry.get("files", []):
                lines.append(f"| `{file}` | {HOW_TO_LOAD.get(file, name)} | {shown} |")
    lines += ["", "## Limitations", "",
              f"- The {score_name} comes from one training run (seed {config.get('seed', '?')}); expect run-to-run "
              "variation of a few tenths of a point.",
              "- The model saw only this dataset at this image size and encoding; inputs must be preprocessed the same "
              "way (see Model).", ""]
    return "\n".join(lines)
