"""Validation of subscriber fields, shared by the API models and the bulk import.

Plain functions without pydantic or the database, so that import worker processes start fast.
"""

from __future__ import annotations

import json
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
PHONE_PATTERN = re.compile(r"^\+[1-9][0-9]{6,14}$")
MAX_ATTRIBUTES_BYTES = 16_384


def normalize_tag(value: str) -> str:
    tag = value.strip().lower()
    if not TAG_PATTERN.match(tag):
        raise ValueError(
            f"tag {value!r} is invalid: use 1-64 of a-z, 0-9, '_', '.', ':', '-', "
            "starting with a letter or digit"
        )
    return tag


def normalize_tags(values: list[str]) -> list[str]:
    return sorted(set(values))


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"timezone {value!r} is not an IANA zone name such as 'Europe/Berlin'"
        ) from None
    return value


def normalize_phone(value: str) -> str:
    phone = re.sub(r"[\s().-]", "", value)
    if not PHONE_PATTERN.match(phone):
        raise ValueError("phone must be in E.164 form, e.g. +4915112345678")
    return phone


def check_attributes(value: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(value)) > MAX_ATTRIBUTES_BYTES:
        raise ValueError(f"attributes must serialize to at most {MAX_ATTRIBUTES_BYTES} bytes")
    return value
