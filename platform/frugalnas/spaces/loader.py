"""Loading search spaces from their YAML definitions.

A space file names its family and gives that family's settings::

    family: nb201
    network: {channels: 16, cells_per_stage: 5, stages: 3}

``load_space("nb201")`` reads the shipped ``search_spaces/nb201.yaml``; any other argument is a
path to a YAML file (or an already-parsed mapping). Settings are checked by the family's pydantic
model before anything is built: an unknown key or a bad value fails with the file, the key, the
value and what is allowed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

from frugalnas.errors import ConfigError
from frugalnas.registry import UnknownNameError
from frugalnas.spaces.base import SPACE_FAMILIES, Space
from frugalnas.validation import describe

# The repository's search_spaces/ folder: ``builtin`` is a link to it, which a wheel (a non-editable
# install) turns into a copy of its YAML files, so the built-in names work however it is installed.
SPACES_DIR = Path(__file__).parent / "builtin"


def builtin_spaces() -> list[str]:
    """Names accepted by :func:`load_space` besides paths: the YAML files in ``SPACES_DIR``."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml")) if SPACES_DIR.is_dir() else []


def resolve_space_path(spec: str | os.PathLike) -> Path:
    """The YAML file meant by ``spec``: a bare name (``nb201``) is a shipped space, else a path."""
    path = Path(spec)
    if path.suffix == "" and len(path.parts) == 1 and (SPACES_DIR / f"{spec}.yaml").is_file():
        return SPACES_DIR / f"{spec}.yaml"
    if path.is_file():
        return path
    raise ConfigError(
        f"search space {str(spec)!r} is neither a YAML file nor a built-in space; "
        f"built-in: {', '.join(builtin_spaces()) or f'none found in {SPACES_DIR}'}"
    )


def load_space(spec: str | os.PathLike | Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Space:
    """The space described by ``spec`` (built-in name, YAML path, or mapping).

    ``overrides`` is merged into the YAML (nested mappings key by key) before validation, e.g.
    ``load_space("nb201", {"network": {"channels": 8, "cells_per_stage": 1}})`` for tiny images.
    """
    if isinstance(spec, Mapping):
        data, source = dict(spec), "<space settings>"
    else:
        path = resolve_space_path(spec)
        source = str(path)
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a search space must be a mapping with a 'family' key, got {type(data).__name__}")
    if overrides:
        data = _merge(data, overrides)
    return space_from_dict(data, source)


def space_from_dict(data: Mapping[str, Any], source: str = "<space settings>") -> Space:
    """Validate ``data`` against its family's settings model and instantiate the space."""
    if "family" not in data:
        raise ConfigError(f"{source}: missing key 'family'; allowed: {', '.join(SPACE_FAMILIES.names())}")
    try:
        family = SPACE_FAMILIES.get(data["family"])
    except (UnknownNameError, TypeError):
        raise ConfigError(
            f"{source}: key 'family' has value {data['family']!r}; allowed: {', '.join(SPACE_FAMILIES.names())}"
        ) from None
    base_dir = Path(source).parent if Path(source).is_file() else None  # for paths in the file (a builder)
    try:
        config = family.Config.model_validate(dict(data), context={"base_dir": base_dir})
    except ValidationError as err:
        raise ConfigError(describe(err, source, family.Config)) from None
    return family(config)


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
