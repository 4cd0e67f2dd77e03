"""The base of every configuration section: strict, frozen, and no YAML booleans where numbers go.

>>> class Section(Frozen):
...     gamma: float = 0.1
>>> Section.model_validate({"gamma": True})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Section
...
"""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator


def _is_number_type(ann: object) -> bool:
    """Whether a field holds numbers (int, float, optionally None, or a tuple of them), not booleans."""
    if ann in (int, float):
        return True
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType, tuple):
        args = [a for a in typing.get_args(ann) if a not in (type(None), Ellipsis)]
        return bool(args) and all(_is_number_type(a) for a in args)
    return False


class Frozen(BaseModel):
    """A strict (``extra="forbid"``), immutable configuration section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, v: object, info) -> object:
        """YAML reads true/yes/on as booleans; pydantic would silently turn them into 1 (``gamma: true``)."""
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        if field is None or not _is_number_type(field.annotation):
            return v
        items = v if isinstance(v, list | tuple) else [v]
        if any(isinstance(x, bool) for x in items):
            raise ValueError(f"expected a number, got {v!r} (YAML reads true/false/yes/no/on/off as booleans)")
        return v


def unique_nonempty(v: tuple, what: str) -> tuple:
    """``v`` if it is non-empty and has no repeated item, else a ``ValueError`` naming ``what``."""
    if not v:
        raise ValueError(f"list at least one {what} (an empty list would run nothing)")
    dupes = sorted({str(x) for x in v if list(v).count(x) > 1})
    if dupes:
        raise ValueError(f"each {what} must appear once, repeated: {dupes}")
    return v


def format_error(err: ValidationError, source: str) -> str:
    """One line: the file, then each bad key and what to do about it."""
    items = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            items.append(f"unknown key '{key}' (check the spelling; allowed keys are the fields of its section)")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            items.append(msg if key == "<root>" else f"'{key}': {msg}")
    return f"invalid configuration in {source}: " + "; ".join(items)
