"""Base of every request model: rejects values no database can store, with a clear message."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

from tidings.db.types import as_utc

MAX_JSON_DEPTH = 8


def _to_utc(value: datetime) -> datetime:
    # A time near year 1 or 9999 can fall outside datetime's range once moved to UTC.
    try:
        return as_utc(value)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


UtcDateTime = Annotated[datetime, AfterValidator(_to_utc)]
"""A datetime from the outside: naive means UTC, anything else is converted to UTC."""


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="after")
    def _storable(self) -> ApiModel:
        for name in type(self).model_fields:
            check_storable(getattr(self, name), name)
        return self


def check_storable(value: Any, where: str, depth: int = 0) -> None:
    """Refuse NUL characters (PostgreSQL text cannot hold them), NaN/Infinity and deep nesting."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where}: NUL characters are not allowed")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(
                    f"{where}: text must be valid Unicode (no lone surrogates)"
                ) from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: numbers must be finite")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(key, where, depth + 1)
            check_storable(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list | tuple | set):
        for item in value:
            check_storable(item, where, depth + 1)
