"""``keyplane.parsing`` as FastAPI/pydantic field types, for the JSON routes and their parameters.

A value that fails one of these is refused by FastAPI's validation (400 ``invalid_input`` naming the
field, see ``errors.py``) before the route runs; the limits match the columns that store them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, Field, ValidationInfo

from keyplane import parsing
from keyplane.errors import InvalidInput


def text(max_len: int, *, multiline: bool = False, name: str | None = None) -> AfterValidator:
    """The validator for a text field of at most ``max_len`` characters; its messages name the
    field, or ``name`` when given. None (an optional parameter left out) passes as it is."""

    def check(value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        try:
            return parsing.text(value, name or info.field_name or "value", max_len=max_len, multiline=multiline)
        except parsing.ParseError as e:
            raise ValueError(e.message) from e

    return AfterValidator(check)


def checked_text(value: str, name: str, max_len: int, *, multiline: bool = False) -> str:
    """The same check for a value a route reads itself (a console form): raises InvalidInput."""
    try:
        return parsing.text(value, name, max_len=max_len, multiline=multiline)
    except parsing.ParseError as e:
        raise InvalidInput(e.message, field=name) from e


Email = Annotated[str, Field(max_length=320), text(320)]
Password = Annotated[str, Field(max_length=1024)]  # never stored; argon2 takes any text
Code = Annotated[str, Field(max_length=32), text(32)]
Label = Annotated[str, Field(max_length=200), text(100)]
Amount = Annotated[str, Field(max_length=64), text(64)]
Moment = Annotated[str, Field(max_length=64), text(64)]
PublicKey = Annotated[str, Field(max_length=4096), text(4096, multiline=True)]
ListItem = Annotated[str, Field(max_length=100), text(100, name="item")]
Items = Annotated[list[ListItem], Field(max_length=1000)]

# A key's public id in a path (the column holds 64 characters) and a 64-bit row id.
KeyIdPath = Annotated[str, Path(max_length=64), text(64)]
KeyIdQuery = Annotated[str | None, Query(max_length=64), text(64, name="api_key")]
RowIdPath = Annotated[int, Path(ge=1, le=parsing.INT64_MAX)]
SeqQuery = Annotated[int | None, Query(ge=0, le=parsing.INT64_MAX)]
