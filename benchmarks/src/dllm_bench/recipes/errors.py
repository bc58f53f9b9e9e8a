"""`validation_message`: pydantic validation errors as ``where: field.path: what is wrong (allowed: ...)``
lines, one per problem, instead of pydantic's multi-line dump with documentation URLs."""

from __future__ import annotations

import typing
from collections.abc import Sequence

from pydantic import BaseModel, ValidationError

__all__ = ["validation_message"]

_SCALARS = (str, int, float, bool, type(None))


def _model_at(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The pydantic model a location inside ``model`` points into (list indices skipped), or None when the
    location leaves the nested models (a dict of parameters, a scalar)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        candidates = (field.annotation, *typing.get_args(field.annotation))
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _path(loc: Sequence[int | str]) -> str:
    """``("steps", 0, "method")`` -> ``steps[0].method``; "" for the model as a whole."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _known_fields(model: type[BaseModel], loc: Sequence[int | str]) -> str:
    """The fields of the model holding the unknown key at ``loc`` ("" when that is not a model)."""
    parent = _model_at(model, loc[:-1])
    return ", ".join(parent.model_fields) if parent is not None else ""


def validation_message(err: ValidationError, where: str, model: type[BaseModel]) -> str:
    """One line per problem of ``err`` (raised validating ``model``): ``where: field.path: message`` (no
    path for a problem of the whole model, such as two steps in the wrong order), with
    the rejected value when it is a scalar pydantic's message leaves out, and for an unknown key the
    fields that are allowed there (pydantic's messages for choices already list them)."""
    lines = []
    for error in err.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        if error["type"] == "extra_forbidden":
            known = _known_fields(model, error["loc"])
            message = "unknown field" + (f" (allowed: {known})" if known else "")
        elif error["type"] not in ("value_error", "missing") and isinstance(value, _SCALARS):
            message += f", got {value!r}"
        path = _path(error["loc"])
        lines.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")
    return "\n".join(lines)
