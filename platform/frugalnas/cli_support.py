"""Helpers shared by every ``frugalnas`` command (kept apart from ``cli.py`` so that commands defined
next to their feature can use them without importing the command group)."""
from __future__ import annotations

import functools
import json
import sys

import click

from frugalnas.errors import FrugalError
from frugalnas.registry import UnknownNameError


def _fail(message: str) -> None:
    click.echo(f"frugalnas: error: {message}", err=True)
    sys.exit(2)


def user_errors(command):
    """Turn the library's user-facing errors into exit code 2 with their message."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (FrugalError, UnknownNameError) as error:
            _fail(str(error))

    return wrapper


def emit_json(payload: dict) -> None:
    """The machine-readable result: one JSON object on the last line of stdout."""
    click.echo(json.dumps(payload, default=str))
