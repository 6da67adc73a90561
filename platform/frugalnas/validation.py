"""Pydantic validation errors as messages a user can act on: one line per problem naming the file,
the key path, the value given and what is allowed. Shared by the experiment config and the
search-space files, so both report problems the same way."""
from __future__ import annotations

import typing

from pydantic import BaseModel, ValidationError


def describe(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    """One line per problem: file, key, given value, what is allowed."""
    lines = []
    errors = err.errors()
    for e in errors:
        # A bad item also makes its list "too short"; that follow-on error only confuses.
        if e["type"] == "too_short" and any(o["loc"][: len(e["loc"])] == e["loc"] and len(o["loc"]) > len(e["loc"])
                                            for o in errors):
            continue
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        if not e["loc"]:  # a check across keys (a model validator): its message says what is wrong
            lines.append(f"{source}: {e['msg'].removeprefix('Value error, ')}")
        elif e["type"] == "extra_forbidden":
            allowed = keys_at(model, e["loc"][:-1])
            lines.append(f"{source}: unknown key {key!r} (value {e['input']!r}); allowed keys: {', '.join(allowed)}")
        elif e["type"] == "missing":
            lines.append(f"{source}: missing key {key!r}")
        else:
            lines.append(f"{source}: key {key!r} has value {e['input']!r}: {e['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def keys_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (nested) settings model found at ``loc``."""
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        nested = [a for a in (annotation, *typing.get_args(annotation))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            break
        model = nested[0]
    return list(model.model_fields)
