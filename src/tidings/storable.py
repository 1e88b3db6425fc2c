"""What no database can store: NUL characters, lone surrogates, NaN, deep nesting.

Plain Python (no pydantic), shared by the request models and the bulk import's workers.
"""

from __future__ import annotations

import math
from typing import Any

MAX_JSON_DEPTH = 8


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
