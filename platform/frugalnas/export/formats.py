"""Export formats: each writes files a user can deploy without frugalnas, and every model format is
checked by loading the written file back and comparing its outputs with the PyTorch model's on a
real batch of the dataset.

Formats register in :data:`EXPORT_FORMATS` under the name ``--format`` takes:

``torchscript``  ``model.ts``: ``torch.jit.load("model.ts")`` (traced; torch alone, no Python class needed)
``pt2``          ``model.pt2``: ``torch.export.load("model.pt2").module()`` (torch.export's archive)
``onnx``         ``model.onnx``: any ONNX runtime; needs the optional extra ``frugalnas[onnx]``
``architecture`` ``architecture.yaml`` and ``architecture.json``: the space, the canonical string, the
                 choices, parameters, FLOPs, the dataset card and the test accuracy
``card``         ``MODEL_CARD.md``: what the model is, how it was searched, what it cost, how it scored
``ultralytics``  detection runs: ``best.yaml`` (ultralytics model YAML) and ``best.pt`` (its weights)

Model formats take inputs ``(batch, channels, height, width)``, float32 in [0, 1] (pixel / 255),
any batch size, and return one logit per class. The check batch and the PyTorch model's outputs on it
are kept as ``check_batch.npz`` (``inputs``, ``outputs``), so a deployment can re-run the check.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from torch import nn

from frugalnas.errors import FrugalError
from frugalnas.registry import Registry

#: An exported model's outputs must match the PyTorch model's within this (numpy.allclose) tolerance
#: on the check batch, and pick the same class for every image.
ATOL, RTOL = 1e-4, 1e-4
CHECK_FILE = "check_batch.npz"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class ExportError(FrugalError):
    """An export that cannot be written, or whose file does not reproduce the model."""


@dataclass
class ExportContext:
    """What every format needs: the trained model (None for a detection run, which ultralytics
    serialises itself), a real batch and the model's outputs on it, and the architecture document."""

    model: nn.Module | None
    inputs: torch.Tensor | None
    outputs: torch.Tensor | None
    document: dict  # architecture.yaml's content
    summary: dict
    ultralytics_files: dict[str, Path] = field(default_factory=dict)  # detection: {"yaml": ..., "weights": ...}
    written: dict[str, dict] = field(default_factory=dict)  # format -> its files and check, as they are written


Exporter = Callable[[ExportContext, Path], dict]
EXPORT_FORMATS: Registry[Exporter] = Registry("export format")
MODEL_FORMATS = ("torchscript", "pt2", "onnx")


def onnx_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ONNX_PACKAGES)


def _need_model(ctx: ExportContext, name: str) -> nn.Module:
    if ctx.model is None:
        hint = (" (a detection run: its ultralytics weights export themselves, e.g. "
                "YOLO('best.pt').export(format='onnx'))" if ctx.ultralytics_files else "")
        raise ExportError(f"format {name!r} needs a PyTorch classifier and this run has none{hint}")
    return ctx.model


def compare(name: str, path: Path, got: np.ndarray, expected: torch.Tensor) -> dict:
    """The check of one model format: its outputs against the PyTorch model's on the check batch."""
    want = expected.detach().numpy()
    got = np.asarray(got, dtype=np.float32).reshape(want.shape)
    diff = float(np.abs(got - want).max())
    same_class = float((got.argmax(1) == want.argmax(1)).mean())
    check = {"file": path.name, "batch": int(want.shape[0]), "max_abs_diff": diff, "atol": ATOL, "rtol": RTOL,
             "top1_agreement": same_class}
    if not np.allclose(got, want, atol=ATOL, rtol=RTOL) or same_class < 1.0:
        raise ExportError(f"{path}: loaded back, the {name} model differs from the PyTorch model on the check batch "
                          f"(max |difference| {diff:.3g}, allowed {ATOL} + {RTOL} x |output|; same class for "
                          f"{same_class:.0%} of the images)")
    return check


@EXPORT_FORMATS.register("torchscript")
def export_torchscript(ctx: ExportContext, to: Path) -> dict:
    model, path = _need_model(ctx, "torchscript"), to / "model.ts"
    with warnings.catch_warnings():  # torch >= 2.9 calls TorchScript deprecated; the format still loads everywhere
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(model, ctx.inputs, check_trace=False)
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
        with torch.no_grad():
            got = loaded(ctx.inputs)
    return {"files": [path.name], "check": compare("TorchScript", path, got.numpy(), ctx.outputs)}


@EXPORT_FORMATS.register("pt2")
def export_pt2(ctx: ExportContext, to: Path) -> dict:
    model, path = _need_model(ctx, "pt2"), to / "model.pt2"
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(model, (ctx.inputs,), dynamic_shapes=({0: batch},))
    except Exception:  # a model whose code ties the batch size (e.g. a view with a fixed size): export it fixed
        program = torch.export.export(model, (ctx.inputs,))
    torch.export.save(program, str(path))
    with torch.no_grad():
        got = torch.export.load(str(path)).module()(ctx.inputs)
    return {"files": [path.name], "check": compare("torch.export", path, got.numpy(), ctx.outputs)}


@EXPORT_FORMATS.register("onnx")
def export_onnx(ctx: ExportContext, to: Path) -> dict:
    model, path = _need_model(ctx, "onnx"), to / "model.onnx"
    if not onnx_available():
        missing = [n for n in ONNX_PACKAGES if not _importable(n)]
        raise ExportError(f"format 'onnx' needs the optional packages {', '.join(ONNX_PACKAGES)} "
                          f"({', '.join(missing)} missing): pip install 'frugalnas[onnx]' "
                          f"(or pip install {' '.join(ONNX_PACKAGES)})")
    import onnxruntime

    quiet = io.StringIO()  # the exporter prints its progress; --json must keep stdout for the result
    with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (ctx.inputs,), str(path), input_names=["images"], output_names=["logits"],
                          dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                          external_data=False, verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: ctx.inputs.numpy()})[0]
    return {"files": [path.name], "check": compare("ONNX (onnxruntime)", path, got, ctx.outputs)}


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@EXPORT_FORMATS.register("architecture")
def export_architecture(ctx: ExportContext, to: Path) -> dict:
    (to / "architecture.yaml").write_text(
        "# The architecture frugalnas found and trained; rebuild it with\n"
        "#   frugalnas.spaces.load_space(doc['space_settings']).build(space.parse(doc['arch']), ...)\n"
        + yaml.safe_dump(ctx.document, sort_keys=False, allow_unicode=True))
    (to / "architecture.json").write_text(json.dumps(ctx.document, indent=2) + "\n")
    return {"files": ["architecture.yaml", "architecture.json"]}


@EXPORT_FORMATS.register("card")
def export_card(ctx: ExportContext, to: Path) -> dict:
    from frugalnas.export.card import model_card

    (to / "MODEL_CARD.md").write_text(model_card(ctx.document, ctx.summary, ctx.written))
    return {"files": ["MODEL_CARD.md"]}


@EXPORT_FORMATS.register("ultralytics")
def export_ultralytics(ctx: ExportContext, to: Path) -> dict:
    if not ctx.ultralytics_files:
        raise ExportError("format 'ultralytics' is for detection runs (OUT/best.yaml and OUT/best.pt); this run "
                          "has neither")
    files = []
    for source in ctx.ultralytics_files.values():
        if Path(source).resolve() != (to / Path(source).name).resolve():
            shutil.copyfile(source, to / Path(source).name)
        files.append(Path(source).name)
    return {"files": files}


def write_check_batch(ctx: ExportContext, to: Path) -> str | None:
    if ctx.inputs is None or ctx.outputs is None:
        return None
    np.savez_compressed(to / CHECK_FILE, inputs=ctx.inputs.numpy(), outputs=ctx.outputs.detach().numpy())
    return CHECK_FILE


def recheck(name: str, path: Path, check_file: Path) -> dict:
    """Load an exported model file again and compare it with the outputs saved in ``check_batch.npz``
    (what a deployment can do to verify a copy: no frugalnas model code involved)."""
    saved = np.load(check_file)
    inputs, expected = torch.from_numpy(saved["inputs"]), torch.from_numpy(saved["outputs"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "torchscript":
            with torch.no_grad():
                got = torch.jit.load(str(path))(inputs).numpy()
        elif name == "pt2":
            with torch.no_grad():
                got = torch.export.load(str(path)).module()(inputs).numpy()
        elif name == "onnx":
            if not onnx_available():
                raise ExportError("checking model.onnx needs onnxruntime: pip install 'frugalnas[onnx]'")
            import onnxruntime

            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = session.run(None, {session.get_inputs()[0].name: saved["inputs"]})[0]
        else:
            raise ValueError(f"no check for format {name!r}")
    return compare(name, path, got, expected)


def describe_formats() -> dict[str, Any]:
    """Format name -> the files it writes (for --help and the README)."""
    return {"torchscript": ["model.ts"], "pt2": ["model.pt2"], "onnx": ["model.onnx"],
            "architecture": ["architecture.yaml", "architecture.json"], "card": ["MODEL_CARD.md"],
            "ultralytics": ["best.yaml", "best.pt"]}
