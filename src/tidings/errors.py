"""Domain error hierarchy. Services raise these; app.py maps each family to an HTTP status once."""

from __future__ import annotations


class TidingsError(Exception):
    """Base of every error a service raises on purpose. ``code`` is stable and machine-readable."""

    code = "error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(TidingsError):
    code = "not_found"


class Conflict(TidingsError):
    code = "conflict"


class RuleViolation(TidingsError):
    """Well-formed input that breaks a business rule (HTTP 422)."""

    code = "rule_violation"
