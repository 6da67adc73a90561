"""Errors meant for the user: the CLI prints their message and exits with code 2."""


class FrugalError(Exception):
    """Base of every error whose message is written for the user (names the culprit and what is allowed)."""


class DataError(FrugalError):
    """Bad or missing input data (a path, a file, a record)."""


class ConfigError(FrugalError):
    """An invalid experiment configuration."""
