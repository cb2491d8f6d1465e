"""Column types shared by the models: money, aware UTC times, encrypted PII."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import DateTime, Numeric, String, Text
from sqlalchemy.types import TypeDecorator

from app.services import crypto

# Money is Numeric(12, 2) in 元, never float (GLOSSARY.md).
Money = Numeric(12, 2, asdecimal=True)
ZERO = Decimal("0.00")


class UTCDateTime(TypeDecorator):
    """Timezone-aware datetime stored in UTC.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so values are
    normalised to UTC on the way in and tagged UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: times must be timezone-aware")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class EncryptedText(TypeDecorator):
    """Text encrypted at rest (AES-GCM, key from config); plaintext in Python.

    The database row never holds the plaintext, so a leaked dump leaks no buyer.
    """

    impl = Text
    cache_ok = True

    def __init__(self, purpose: str = "pii", **kw):
        super().__init__(**kw)
        self.purpose = purpose

    def process_bind_param(self, value, dialect):
        if value is None or value == "":
            return value
        return crypto.encrypt(str(value), self.purpose)

    def process_result_value(self, value, dialect):
        if value is None or value == "":
            return value
        return crypto.decrypt(value, self.purpose)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
