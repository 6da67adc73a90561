"""Taking a result away: a finished run (or a registered MLflow model) as files that deploy without
frugalnas: TorchScript, torch.export and ONNX models (each checked against the PyTorch model on real
test images), the architecture as standalone YAML/JSON, a Markdown model card, and for detection
runs the ultralytics model YAML and weights. ``frugalnas export`` is the command."""
from frugalnas.export.bundle import default_formats, export_registered, export_run, load_run, write_bundle
from frugalnas.export.formats import ATOL, EXPORT_FORMATS, RTOL, ExportContext, ExportError, onnx_available

__all__ = ["ATOL", "EXPORT_FORMATS", "RTOL", "ExportContext", "ExportError", "default_formats", "export_registered",
           "export_run", "load_run", "onnx_available", "write_bundle"]
