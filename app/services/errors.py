"""Typed domain errors. Each carries a zh message that names the field."""
from __future__ import annotations


class DomainError(Exception):
    """Base of every error a service raises on purpose; ``message`` is zh."""

    status_code = 422

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict:
        out = {"message": self.message}
        if self.field:
            out["field"] = self.field
        return out


class ValidationError(DomainError):
    """Bad input: the message names the field, row or column to fix."""


class IllegalTransition(DomainError):
    status_code = 409


class NotFound(DomainError):
    status_code = 404


class Forbidden(DomainError):
    status_code = 403
