"""State machines as data: one check, and one message that lists the allowed moves."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from tidings.errors import TidingsError

S = TypeVar("S", bound=StrEnum)


def check_transition(
    transitions: Mapping[S, tuple[S, ...]],
    current: S,
    target: S,
    what: str,
    error: type[TidingsError],
) -> None:
    """Raise ``error`` unless ``transitions`` lets a ``what`` go from ``current`` to ``target``."""
    allowed = transitions[current]
    if target not in allowed:
        moves = ", ".join(f"{current} → {s}" for s in allowed) or f"none ({current} is final)"
        raise error(f"cannot change a {what} from {current} to {target}; allowed: {moves}")
