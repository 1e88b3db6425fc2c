"""Base of every request model: rejects values no database can store, with a clear message."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

from tidings.db.types import as_utc
from tidings.storable import check_storable


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
