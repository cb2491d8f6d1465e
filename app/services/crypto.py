"""Encryption at rest and blind indexes for buyer PII and shop credentials.

AES-256-GCM with a per-purpose key derived (HKDF) from the configured secret;
stored as ``v1:<base64(nonce|ciphertext)>``. A blind index is HMAC-SHA256 of the
normalised value, so an exact phone search and cross-shop customer matching work
without the plaintext ever being stored.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_PREFIX = "v1:"
_secrets: dict[str, str] = {}


def configure(pii_key: str, credentials_key: str) -> None:
    _secrets["pii"] = pii_key
    _secrets["index"] = pii_key
    _secrets["credentials"] = credentials_key
    _derive.cache_clear()


def _secret(purpose: str) -> str:
    if purpose not in _secrets:
        from flask import current_app

        cfg = current_app.config
        configure(cfg["OMS_PII_KEY"], cfg["OMS_CREDENTIALS_KEY"])
    return _secrets[purpose]


@lru_cache(maxsize=8)
def _derive(purpose: str, secret: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"oms-" + purpose.encode(), info=b"oms"
    ).derive(secret.encode())


def _key(purpose: str) -> bytes:
    return _derive(purpose, _secret(purpose))


@lru_cache(maxsize=8)
def _aead(key: bytes) -> AESGCM:
    return AESGCM(key)  # keyed by the key itself: a reconfigured secret gets a new cipher


def encrypt(plaintext: str, purpose: str = "pii") -> str:
    nonce = os.urandom(12)
    ct = _aead(_key(purpose)).encrypt(nonce, plaintext.encode("utf-8"), purpose.encode())
    return _PREFIX + base64.b64encode(nonce + ct).decode("ascii")


def encrypt_many(values: list, purpose: str = "pii") -> list:
    """:func:`encrypt` for many values at once (None and "" are kept as they are): the same
    tokens, with the random nonces drawn in one read of the OS generator, not one per value."""
    todo = [i for i, v in enumerate(values) if v is not None and v != ""]
    out = list(values)
    if not todo:
        return out
    seal = _aead(_key(purpose)).encrypt
    aad = purpose.encode()
    nonces = os.urandom(12 * len(todo))
    b64 = binascii.b2a_base64
    for k, i in enumerate(todo):
        nonce = nonces[12 * k:12 * k + 12]
        out[i] = _PREFIX + b64(nonce + seal(nonce, str(values[i]).encode("utf-8"), aad), newline=False).decode("ascii")
    return out


def decrypt(token: str, purpose: str = "pii") -> str:
    if not token.startswith(_PREFIX):
        raise ValueError("not an encrypted value")
    raw = base64.b64decode(token[len(_PREFIX):])
    return _aead(_key(purpose)).decrypt(raw[:12], raw[12:], purpose.encode()).decode("utf-8")


def normalize_phone(phone: str | None) -> str:
    """Digits only, without a +86 / 0086 country prefix."""
    digits = re.sub(r"\D", "", phone or "")
    if digits.startswith("0086"):
        digits = digits[4:]
    elif digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return digits


def blind_index(value: str | None) -> str | None:
    if not value:
        return None
    return hmac.new(_key("index"), value.encode("utf-8"), hashlib.sha256).hexdigest()


def phone_index(phone: str | None) -> str | None:
    return blind_index(normalize_phone(phone))
