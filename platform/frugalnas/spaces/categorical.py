"""A search space declared in YAML alone: named decisions, their choices, optional conditions, and
how an architecture is written as a string.

Tabular benchmarks and research spaces are usually nothing more than a few categorical decisions and
a string format (NAS-Bench-201's cells, macro spaces of MobileNet blocks, hardware benchmarks). This
family describes such a space without code, so every ask/tell strategy can search it, e.g. on a table
with ``frugalnas bench-searchers``::

    family: categorical
    format: {style: indices}          # each decision's choice index, concatenated: 0210
    decisions:
      - {name: layer1, choices: [identity, mb3_k3, mb6_k5]}
      - {name: layer2, choices: [identity, mb3_k3, mb6_k5]}
      - {name: kernel2, choices: [3, 5], unless: {layer2: identity}}   # only for a real block

Decisions are ordered; a condition may refer to earlier decisions only: ``when: {d: x}`` or
``when: {d: [x, y]}`` (``d`` must take one of these), ``unless: {d: ...}`` (must take none of
them); several keys must all hold, and a decision that does not exist satisfies no ``when``.
A decision whose conditions fail is *inactive*: it has no value, index -1 in ``to_choices`` and an
all-zero block in ``encode``, and is left out of the string (or written as ``format.inactive``).

String formats (``format.style``):

* ``indices``: each active decision's choice index; ``separator`` between them (default none, which
  needs every decision to have at most 10 choices), e.g. ``0210`` or ``0.2.1.0``;
* ``tokens``: each active decision's choice as text, joined by ``separator`` (default ``-``), e.g.
  ``identity-mb3_k3-mb6_k5-identity``;
* ``template``: a text with one ``{name}`` placeholder per decision, filled with the choice's text,
  e.g. NAS-Bench-201's ``|{e1_0}~0|+|{e2_0}~0|{e2_1}~1|+...``; ``{{`` and ``}}`` are literal braces.

The string is canonical: ``parse`` accepts exactly what ``format`` writes, so a table's strings
must match the format exactly (surrounding whitespace aside). Without conditions the space behaves
exactly like the built-in families (sampling, mutation, enumeration and encoding consume the same
random numbers in the same order), so a categorical copy of a built-in space gives the same search
for the same seed. With conditions, sampling draws each active decision uniformly in order (the
tree-structured prior of Optuna's define-by-run spaces), so it is uniform per decision, not over
architectures.

A categorical space builds networks only if it names a builder: ``builder: my_package.nets:build``
(an importable module) or ``builder: nets.py:build`` (a file, relative to the YAML file), called
as ``build(choices, num_classes, in_channels, **builder_args)`` with ``choices`` a dict of
decision name -> chosen value (None when inactive). Without one, the space is for tables only and
says so when asked to train.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import nn

from frugalnas.errors import ConfigError
from frugalnas.spaces.base import SPACE_FAMILIES, Space, SpaceConfig

Choice = Union[str, int, float]
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


def choice_text(value: Choice) -> str:
    """A choice as it appears in a ``tokens`` or ``template`` string: 3 -> ``3``, 0.5 -> ``0.5``."""
    return value if isinstance(value, str) else str(value)


class Decision(SpaceConfig):
    """One decision: its name, its choices (strings or numbers) and when it exists."""

    name: str
    choices: list[Any] = Field(min_length=1)
    when: dict[str, Union[Choice, list[Choice]]] = Field(default_factory=dict)
    unless: dict[str, Union[Choice, list[Choice]]] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME.match(name):
            raise ValueError(f"decision names are letters, digits and _.- (not starting with . or -), got {name!r}")
        return name

    @field_validator("choices")
    @classmethod
    def _choices(cls, choices: list[Any]) -> list[Any]:
        for value in choices:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(f"a choice is a string or a number, got {value!r} ({type(value).__name__})")
        texts = [choice_text(v) for v in choices]
        repeated = sorted({t for t in texts if texts.count(t) > 1})
        if repeated:
            raise ValueError(f"choices must differ as text, {', '.join(map(repr, repeated))} repeats")
        return choices

    @property
    def conditional(self) -> bool:
        return bool(self.when or self.unless)


class StringFormat(SpaceConfig):
    """How an architecture is written: see the module docstring."""

    style: Literal["indices", "tokens", "template"] = "tokens"
    separator: Optional[str] = Field(None, description="between decisions (indices: none, tokens: '-')")
    template: Optional[str] = Field(None, description="style template: the text with one {name} per decision")
    inactive: Optional[str] = Field(None, description="text of an inactive decision; default: left out")


class CategoricalConfig(SpaceConfig):
    family: Literal["categorical"] = "categorical"
    description: str = ""
    decisions: list[Decision] = Field(min_length=1)
    format: StringFormat = StringFormat()
    builder: Optional[str] = Field(None, description="module:function or file.py:function building a network")
    builder_args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("builder")
    @classmethod
    def _builder(cls, spec: str | None, info: ValidationInfo) -> str | None:
        if spec is None:
            return None
        module, sep, function = spec.rpartition(":")
        if not sep or not module or not function.isidentifier():
            raise ValueError("a builder is 'package.module:function' or 'path/to/file.py:function'")
        base = (info.context or {}).get("base_dir")
        if module.endswith(".py") and base is not None and not Path(module).is_absolute():
            module = str((Path(base) / module).resolve())  # trials run in other folders
        return f"{module}:{function}"

    @model_validator(mode="after")
    def _consistent(self) -> "CategoricalConfig":
        names = [d.name for d in self.decisions]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"decision names must be unique, {', '.join(map(repr, repeated))} repeats")
        for k, decision in enumerate(self.decisions):
            for key, condition in (("when", decision.when), ("unless", decision.unless)):
                for ref, values in condition.items():
                    if ref not in names[:k]:
                        where = "is not a decision" if ref not in names else "comes after it (conditions look back)"
                        raise ValueError(f"decision {decision.name!r}: {key} refers to {ref!r}, which {where}; "
                                         f"earlier decisions: {', '.join(names[:k]) or 'none'}")
                    allowed = [choice_text(c) for c in self.decisions[names.index(ref)].choices]
                    for value in values if isinstance(values, list) else [values]:
                        if choice_text(value) not in allowed:
                            raise ValueError(f"decision {decision.name!r}: {key} {ref}={value!r} is not a choice of "
                                             f"{ref!r}; its choices: {', '.join(allowed)}")
        _check_format(self)
        return self


def _check_format(config: CategoricalConfig) -> None:
    """The format can write every architecture so that it reads back unambiguously."""
    fmt, decisions = config.format, config.decisions
    if fmt.style != "template" and fmt.template is not None:
        raise ValueError(f"format.template is for style 'template', not {fmt.style!r}")
    if fmt.style == "template":
        if not fmt.template:
            raise ValueError("format style 'template' needs format.template, e.g. '{layer1}-{layer2}'")
        if fmt.separator is not None:
            raise ValueError("format.separator is for styles 'indices' and 'tokens'; a template holds its own")
        fields = [f for _, f, _, _ in string.Formatter().parse(fmt.template) if f is not None]
        names = [d.name for d in decisions]
        missing, unknown = [n for n in names if n not in fields], [f for f in fields if f not in names]
        twice = sorted({f for f in fields if fields.count(f) > 1})
        if missing or unknown or twice:
            raise ValueError(f"format.template must hold each decision once as {{name}}: missing "
                             f"{missing or 'none'}, unknown {unknown or 'none'}, repeated {twice or 'none'}")
        return
    texts = _texts(config)
    separator = _separator(fmt)
    for decision, options in zip(decisions, texts):
        if separator:
            clash = [t for t in options if separator in t]
            if clash:
                raise ValueError(f"decision {decision.name!r}: choice(s) {', '.join(map(repr, clash))} contain the "
                                 f"separator {separator!r}; pick another format.separator")
        elif fmt.style == "indices" and len(options) > 10:
            raise ValueError(f"decision {decision.name!r} has {len(options)} choices: indices above 9 need "
                             "format.separator (e.g. '.')")
        elif any(a != b and b.startswith(a) for a in options for b in options):
            raise ValueError(f"decision {decision.name!r}: with no separator no choice may begin with another "
                             f"({', '.join(options)}); set format.separator")
        if fmt.inactive is not None and decision.conditional and fmt.inactive in options:
            raise ValueError(f"format.inactive {fmt.inactive!r} is also a choice of {decision.name!r}")
    if fmt.inactive is not None and not separator and len(fmt.inactive) == 0:
        raise ValueError("format.inactive must not be empty without a separator; leave it unset to omit")


def _separator(fmt: StringFormat) -> str:
    return fmt.separator if fmt.separator is not None else ("" if fmt.style == "indices" else "-")


def _texts(config: CategoricalConfig) -> list[list[str]]:
    """Each decision's choices as written in the string."""
    if config.format.style == "indices":
        return [[str(i) for i in range(len(d.choices))] for d in config.decisions]
    return [[choice_text(c) for c in d.choices] for d in config.decisions]


@dataclass(frozen=True)
class CategoricalArch:
    """The chosen option index of each decision (-1: inactive); ``str`` is the canonical string."""

    indices: tuple[int, ...]
    text: str = field(compare=False)

    def __str__(self) -> str:
        return self.text


@SPACE_FAMILIES.register("categorical")
class CategoricalSpace(Space):
    """Any space of categorical decisions, declared in YAML (see the module docstring)."""

    Config = CategoricalConfig
    config: CategoricalConfig

    def __init__(self, config=None):
        super().__init__(config)
        decisions = self.config.decisions
        self._names = [d.name for d in decisions]
        self._options = [list(d.choices) for d in decisions]
        self._texts = _texts(self.config)
        self._lookup = [{t: i for i, t in enumerate(texts)} for texts in self._texts]
        # conditions as (decision index, allowed option indices, True for when / False for unless)
        self._conditions: list[list[tuple[int, frozenset[int], bool]]] = []
        for decision in decisions:
            rules = []
            for positive, condition in ((True, decision.when), (False, decision.unless)):
                for ref, values in condition.items():
                    k = self._names.index(ref)
                    texts = [choice_text(c) for c in self._options[k]]
                    values = values if isinstance(values, list) else [values]
                    rules.append((k, frozenset(texts.index(choice_text(v)) for v in values), positive))
            self._conditions.append(rules)
        self.conditional = any(self._conditions)
        # for counting: the earlier decisions that decisions d.. look at
        self._refs_from = []
        for d in range(len(decisions) + 1):
            self._refs_from.append(tuple(sorted({k for rules in self._conditions[d:] for k, _, _ in rules if k < d})))
        self._counts: dict[tuple, int] = {}
        self._template = self._compile_template() if self.config.format.style == "template" else None
        self._builder = None

    # -- decisions ---------------------------------------------------------------------------

    def choices(self) -> list[tuple[str, list[Any]]]:
        return [(name, list(options)) for name, options in zip(self._names, self._options)]

    def decision_active(self, d: int, prefix: Sequence[int]) -> bool:
        for k, allowed, positive in self._conditions[d]:
            if (prefix[k] in allowed) != positive:  # an inactive decision (-1) is in no allowed set
                return False
        return True

    def from_choices(self, indices: Sequence[int]) -> CategoricalArch:
        """The architecture of ``indices``; values given for inactive decisions are ignored."""
        indices = [int(i) for i in indices]
        if len(indices) != len(self._names):
            raise ValueError(f"categorical: expected {len(self._names)} choice indices, got {len(indices)}")
        out: list[int] = []
        for d, i in enumerate(indices):
            if not self.decision_active(d, out):
                out.append(-1)
                continue
            if not 0 <= i < len(self._options[d]):
                raise ValueError(f"categorical: choice {self._names[d]!r} index {i} is out of range "
                                 f"0..{len(self._options[d]) - 1}")
            out.append(i)
        return CategoricalArch(tuple(out), self._format(out))

    def to_choices(self, arch: CategoricalArch) -> list[int]:
        if not isinstance(arch, CategoricalArch) or len(arch.indices) != len(self._names):
            raise TypeError(f"this categorical space expects a CategoricalArch of {len(self._names)} decisions, "
                            f"got {type(arch).__name__}: {arch!r}")
        return list(arch.indices)

    def values(self, arch: CategoricalArch) -> dict[str, Any]:
        """Decision name -> chosen value (None for an inactive decision), in decision order."""
        return {name: (None if i < 0 else options[i])
                for name, options, i in zip(self._names, self._options, self.to_choices(arch))}

    # -- search operators --------------------------------------------------------------------

    def sample(self, rng: np.random.Generator) -> CategoricalArch:
        """Each active decision drawn uniformly, in order (the same draws as the built-in families
        when nothing is conditional)."""
        indices: list[int] = []
        for d, options in enumerate(self._options):
            indices.append(int(rng.integers(len(options))) if self.decision_active(d, indices) else -1)
        return CategoricalArch(tuple(indices), self._format(indices))

    def mutate(self, arch: CategoricalArch, rng: np.random.Generator) -> CategoricalArch:
        """One active decision changed to another choice; decisions that this switches on get a
        random choice, those it switches off are dropped."""
        indices = self.to_choices(arch)
        open_ = [d for d, options in enumerate(self._options) if indices[d] >= 0 and len(options) > 1]
        if not open_:
            raise ValueError("categorical: the space holds a single architecture; nothing to mutate")
        d = open_[int(rng.integers(len(open_)))]
        new = int(rng.integers(len(self._options[d]) - 1))
        indices[d] = new if new < indices[d] else new + 1
        if self.conditional:
            for e in range(d + 1, len(indices)):
                if not self.decision_active(e, indices):
                    indices[e] = -1
                elif indices[e] < 0:
                    indices[e] = int(rng.integers(len(self._options[e])))
        return CategoricalArch(tuple(indices), self._format(indices))

    # -- counting and enumeration ------------------------------------------------------------

    def _count(self, d: int, prefix: list[int]) -> int:
        """Architectures completing ``prefix`` (the indices of decisions 0..d-1)."""
        if d == len(self._options):
            return 1
        key = (d, *(prefix[k] for k in self._refs_from[d]))
        if key not in self._counts:
            if self.decision_active(d, prefix):
                total = sum(self._count(d + 1, prefix + [i]) for i in range(len(self._options[d])))
            else:
                total = self._count(d + 1, prefix + [-1])
            self._counts[key] = total
        return self._counts[key]

    def size(self) -> int:
        return super().size() if not self.conditional else self._count(0, [])

    def index(self, arch: CategoricalArch) -> int:
        if not self.conditional:
            return super().index(arch)
        indices, index = self.to_choices(arch), 0
        for d, i in enumerate(indices):
            index += sum(self._count(d + 1, indices[:d] + [j]) for j in range(max(i, 0)))
        return index

    def at(self, index: int) -> CategoricalArch:
        if not self.conditional:
            return super().at(index)
        index = int(index)
        if not 0 <= index < self.size():
            raise ValueError(f"categorical: index {index} is out of range 0..{self.size() - 1}")
        indices: list[int] = []
        for d, options in enumerate(self._options):
            if not self.decision_active(d, indices):
                indices.append(-1)
                continue
            for j in range(len(options)):
                n = self._count(d + 1, indices + [j])
                if index < n:
                    indices.append(j)
                    break
                index -= n
        return CategoricalArch(tuple(indices), self._format(indices))

    # -- text form ---------------------------------------------------------------------------

    def _format(self, indices: Sequence[int]) -> str:
        fmt = self.config.format
        parts = [self._texts[d][i] if i >= 0 else fmt.inactive for d, i in enumerate(indices)]
        if self._template is not None:
            return "".join(item if isinstance(item, str) else (parts[item] or "") for item in self._template)
        return _separator(fmt).join(p for p in parts if p is not None)

    def parse(self, text: str) -> CategoricalArch:
        text = str(text).strip()
        indices = self._parse_template(text) if self._template is not None else self._parse_sequence(text)
        return CategoricalArch(tuple(indices), self._format(indices))

    def _expected(self) -> str:
        fmt = self.config.format
        if fmt.style == "template":
            return f"the template {fmt.template!r}"
        example = self._format(self.at(0).indices) if self.size() else ""
        joined = f"joined by {_separator(fmt)!r}" if _separator(fmt) else "written one after another"
        return f"{'choice indices' if fmt.style == 'indices' else 'choices'} {joined}, like {example!r}"

    def _parse_sequence(self, text: str) -> list[int]:
        """indices / tokens: the active decisions' texts in order."""
        fmt, separator = self.config.format, _separator(self.config.format)
        pieces = text.split(separator) if separator else None
        indices: list[int] = []
        pos = 0  # piece number with a separator, character position without
        for d, name in enumerate(self._names):
            active = self.decision_active(d, indices)
            if not active and fmt.inactive is None:
                indices.append(-1)
                continue
            if pieces is not None:
                if pos >= len(pieces):
                    raise ValueError(f"bad architecture {text!r}: it ends before decision {name!r}; "
                                     f"expected {self._expected()}")
                piece = pieces[pos]
            else:
                candidates = [fmt.inactive] if not active else self._texts[d]
                piece = next((t for t in candidates if text.startswith(t, pos)), None)
                if piece is None:
                    raise ValueError(f"bad architecture {text!r}: at character {pos} decision {name!r} expects one "
                                     f"of {', '.join(map(repr, candidates))}; expected {self._expected()}")
            if not active:
                if piece != fmt.inactive:
                    raise ValueError(f"bad architecture {text!r}: decision {name!r} is inactive here (its conditions "
                                     f"do not hold) and is written {fmt.inactive!r}, got {piece!r}")
                indices.append(-1)
            elif piece in self._lookup[d]:
                indices.append(self._lookup[d][piece])
            else:
                raise ValueError(f"bad architecture {text!r}: {piece!r} is not a choice of decision {name!r}; "
                                 f"allowed: {', '.join(self._texts[d])}")
            pos += 1 if pieces is not None else len(piece)
        if (pieces is not None and pos != len(pieces)) or (pieces is None and pos != len(text)):
            rest = separator.join(pieces[pos:]) if pieces is not None else text[pos:]
            raise ValueError(f"bad architecture {text!r}: {rest!r} is left over after the last decision; "
                             f"expected {self._expected()}")
        return indices

    def _compile_template(self) -> list[str | int]:
        """The template as literal texts and decision indices."""
        items: list[str | int] = []
        for literal, name, _, _ in string.Formatter().parse(self.config.format.template):
            if literal:
                items.append(literal)
            if name is not None:
                items.append(self._names.index(name))
        return items

    def _parse_template(self, text: str) -> list[int]:
        """Every way the template matches ``text``, kept if the decisions' activity is consistent;
        exactly one must remain."""
        inactive = self.config.format.inactive or ""
        found: list[list[int]] = []
        furthest = [0, 0]  # the furthest character reached and the template item expected there

        def walk(k: int, pos: int, assigned: dict[int, int]) -> None:
            if len(found) > 1:
                return
            if pos > furthest[0]:  # the first item expected at the furthest character is what failed
                furthest[:] = [pos, k]
            if k == len(self._template):
                if pos == len(text):
                    indices = [assigned[d] for d in range(len(self._names))]
                    if all((i >= 0) == self.decision_active(d, indices) for d, i in enumerate(indices)):
                        found.append(indices)
                return
            item = self._template[k]
            if isinstance(item, str):
                if text.startswith(item, pos):
                    walk(k + 1, pos + len(item), assigned)
                return
            options = list(enumerate(self._texts[item]))
            if self.config.decisions[item].conditional:
                options.append((-1, inactive))
            for i, t in options:
                if text.startswith(t, pos):
                    walk(k + 1, pos + len(t), {**assigned, item: i})

        walk(0, 0, {})
        if len(found) == 1:
            return found[0]
        if found:
            raise ValueError(f"bad architecture {text!r}: it reads as more than one architecture under "
                             f"{self._expected()}; make the template's literal text separate the decisions")
        pos, k = furthest
        wanted = ("the end of the string" if k >= len(self._template) else repr(self._template[k])
                  if isinstance(self._template[k], str) else
                  f"a choice of {self._names[self._template[k]]!r} ({', '.join(self._texts[self._template[k]])})")
        raise ValueError(f"bad architecture {text!r}: at character {pos} expected {wanted}; "
                         f"expected {self._expected()}")

    # -- networks ----------------------------------------------------------------------------

    def check_buildable(self) -> None:
        if self.config.builder is None:
            raise ConfigError(
                "this categorical search space has no builder, so its architectures cannot be trained: it is for "
                "tabular benchmarks (`frugalnas bench-searchers`). To train, add to its YAML "
                "'builder: my_module:build' (or 'builder: file.py:build', relative to the YAML file), a function "
                "build(choices, num_classes, in_channels, **builder_args) returning a torch.nn.Module")
        self._load_builder()

    def _load_builder(self):
        if self._builder is None:
            module_name, _, function = self.config.builder.rpartition(":")
            try:
                if module_name.endswith(".py"):
                    spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
                    if spec is None or not Path(module_name).is_file():
                        raise FileNotFoundError(f"no file {module_name}")
                    module = importlib.util.module_from_spec(spec)
                    spec.loader.exec_module(module)
                else:
                    module = importlib.import_module(module_name)
                builder = getattr(module, function)
            except (ImportError, FileNotFoundError, AttributeError, SyntaxError) as error:
                raise ConfigError(f"categorical space: builder {self.config.builder!r} cannot be loaded "
                                  f"({type(error).__name__}: {error})") from None
            if not callable(builder):
                raise ConfigError(f"categorical space: builder {self.config.builder!r} is not a function")
            self._builder = builder
        return self._builder

    def build(self, arch: CategoricalArch, num_classes: int, in_channels: int) -> nn.Module:
        self.check_buildable()
        model = self._load_builder()(self.values(arch), num_classes, in_channels, **self.config.builder_args)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"categorical space: builder {self.config.builder!r} returned "
                              f"{type(model).__name__}, not a torch.nn.Module")
        return model

    def __getstate__(self):  # a loaded builder module need not pickle; it is loaded again on use
        return {**self.__dict__, "_builder": None}
