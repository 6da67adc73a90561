"""The compression study (``frugalnas compression``): what lossy compression of the stored data costs a
model, how much of it retraining on compressed data recovers, and how two-stage NAS fares on
compressed data. Plain Python here (levels, statistics, training jobs, plots); the pipeline that runs
it on Ray and records it in MLflow is :mod:`frugalnas.runtime.compression`."""
from frugalnas.compression.levels import Level, study_levels
from frugalnas.compression.stats import PairedBootstrap, interval, recovery_estimate

__all__ = ["Level", "PairedBootstrap", "interval", "recovery_estimate", "study_levels"]
