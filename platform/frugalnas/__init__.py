"""frugalnas: neural architecture search that spends as little compute as possible."""

__version__ = "0.1.0"
