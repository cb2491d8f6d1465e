"""Request signatures of the three gateways (../shared/platform-apis.md), as pure functions.

All three sort the parameters by key (ASCII), join them as ``key1value1key2value2``
with no separators (UTF-8), and hash; ``sign`` itself and empty keys or values are
left out, as the official SDKs do (TaobaoUtils.signTopRequest). Hex is uppercase.

* Taobao TOP: ``md5`` = MD5(secret + joined + secret); ``hmac`` = HMAC-MD5 keyed by
  the secret over the joined string (no wrapping); ``hmac-sha256`` likewise with SHA-256.
* Pinduoduo and JD JOS: MD5(secret + joined + secret). JD's business parameters
  travel as one JSON string (``360buy_param_json``) that is signed exactly as sent.

Clients pass every parameter through :func:`clean_params` first and send that very
dict, so what is signed is byte for byte what is posted.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any, Mapping

TOP_SIGN_METHODS = ("md5", "hmac", "hmac-sha256")


def form_value(value: Any) -> str:
    """The text a parameter is posted (and signed) as."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        # Nested objects travel as compact JSON (PDD's serialisation of nested
        # objects is UNCONFIRMED; our clients never send any).
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def clean_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Every parameter as text, without ``None`` and empty values (which are neither signed nor sent)."""
    out = {}
    for key, value in params.items():
        if not key or value is None:
            continue
        text = form_value(value)
        if text == "":
            continue
        out[key] = text
    return out


def sign_base(params: Mapping[str, Any]) -> str:
    """``key1value1key2value2...`` over the sorted, non-empty parameters except ``sign``."""
    cleaned = clean_params(params)
    return "".join(f"{key}{cleaned[key]}" for key in sorted(cleaned) if key != "sign")


def _md5_wrapped(joined: str, secret: str) -> str:
    return hashlib.md5(f"{secret}{joined}{secret}".encode("utf-8")).hexdigest().upper()


def top_sign(params: Mapping[str, Any], secret: str, method: str = "md5") -> str:
    """Taobao / Tmall TOP signature; ``method`` is the request's ``sign_method``."""
    joined = sign_base(params)
    if method == "md5":
        return _md5_wrapped(joined, secret)
    if method == "hmac":
        return hmac.new(secret.encode("utf-8"), joined.encode("utf-8"), hashlib.md5).hexdigest().upper()
    if method == "hmac-sha256":
        return hmac.new(secret.encode("utf-8"), joined.encode("utf-8"), hashlib.sha256).hexdigest().upper()
    raise ValueError(f"unsupported TOP sign_method: {method!r} (one of {', '.join(TOP_SIGN_METHODS)})")


def pdd_sign(params: Mapping[str, Any], secret: str) -> str:
    """Pinduoduo signature: MD5(client_secret + joined + client_secret)."""
    return _md5_wrapped(sign_base(params), secret)


def jd_sign(params: Mapping[str, Any], secret: str) -> str:
    """JD JOS signature: MD5(app_secret + joined + app_secret), ``360buy_param_json`` as sent."""
    return _md5_wrapped(sign_base(params), secret)
