"""Server-side signature checks of the three gateways (pure functions).

Written from /work/shared/platform-apis.md, independently of the clients in
app/platforms/, so that a client bug cannot hide behind a shared helper.

- Taobao TOP: sort all parameters except ``sign`` by key (ASCII), join as
  key1value1key2value2…, then ``md5``: MD5(secret + joined + secret);
  ``hmac``: HMAC-MD5(key=secret, joined); ``hmac-sha256``: HMAC-SHA256(key=secret,
  joined). Uppercase hex.
- Pinduoduo and JD: MD5(secret + joined + secret), uppercase hex. JD's
  ``360buy_param_json`` is one parameter, signed exactly as sent.

Empty values: the official Taobao SDK leaves empty keys/values out; whether the
gateways do the same for a parameter that *is* sent empty is UNCONFIRMED (for
PDD the spec leaves it open too). The verifiers therefore accept a signature
computed either way (empty parameters left out, or joined as ``key`` + "").
Signatures must be uppercase hex, as the spec says; a lowercase one is refused.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Mapping

TOP_SIGN_METHODS = ("md5", "hmac", "hmac-sha256")


def joined(params: Mapping[str, str], *, skip_empty: bool = True) -> str:
    """key1value1key2value2… over the parameters sorted by key, ``sign`` left out."""
    parts = []
    for key in sorted(params):
        value = params[key]
        if key == "sign" or not key:
            continue
        if value is None:
            value = ""
        if skip_empty and value == "":
            continue
        parts.append(f"{key}{value}")
    return "".join(parts)


def top_sign(params: Mapping[str, str], secret: str, sign_method: str = "md5", *,
             skip_empty: bool = True) -> str:
    text = joined(params, skip_empty=skip_empty)
    if sign_method == "md5":
        return hashlib.md5((secret + text + secret).encode("utf-8")).hexdigest().upper()
    if sign_method == "hmac":
        return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.md5).hexdigest().upper()
    if sign_method == "hmac-sha256":
        return hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).hexdigest().upper()
    raise ValueError(f"unknown sign_method {sign_method!r}")


def wrapped_md5_sign(params: Mapping[str, str], secret: str, *, skip_empty: bool = True) -> str:
    """MD5(secret + joined + secret), uppercase: Pinduoduo and JD."""
    text = joined(params, skip_empty=skip_empty)
    return hashlib.md5((secret + text + secret).encode("utf-8")).hexdigest().upper()


def _matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def verify_top(params: Mapping[str, str], secret: str) -> bool:
    """True if ``params['sign']`` is right for ``params['sign_method']`` (default md5)."""
    given = params.get("sign") or ""
    method = params.get("sign_method") or "md5"
    if not given or method not in TOP_SIGN_METHODS:
        return False
    return any(_matches(given, top_sign(params, secret, method, skip_empty=skip))
               for skip in (True, False))


def verify_wrapped(params: Mapping[str, str], secret: str) -> bool:
    """True if ``params['sign']`` is MD5(secret + joined + secret) (PDD, JD)."""
    given = params.get("sign") or ""
    if not given:
        return False
    return any(_matches(given, wrapped_md5_sign(params, secret, skip_empty=skip))
               for skip in (True, False))
