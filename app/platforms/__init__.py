"""Platform connectors: one module per platform behind one small interface (base.py).

``client_for(shop)`` builds the client for a Shop row; the sandbox (app/sandbox/)
is the same protocols seen from the server side.
"""
from __future__ import annotations

from .base import PlatformClient, PlatformError, PlatformLine, PlatformOrder  # noqa: F401

REAL_GATEWAYS = {
    "taobao": "https://eco.taobao.com/router/rest",
    "tmall": "https://eco.taobao.com/router/rest",
    "pdd": "https://gw-api.pinduoduo.com/api/router",
    "jd": "https://api.jd.com/routerjson",
}


def client_class(platform: str):
    from . import jd, pdd, taobao

    return {"taobao": taobao.TaobaoClient, "tmall": taobao.TaobaoClient, "pdd": pdd.PddClient,
            "jd": jd.JdClient}.get(platform)


def client_for(shop, **kwargs) -> PlatformClient:
    cls = client_class(shop.platform)
    if cls is None:
        raise PlatformError("unsupported", f"平台「{shop.platform}」不支持接口同步", kind="bad_request")
    return cls(gateway_url=shop.gateway_url or REAL_GATEWAYS[shop.platform], app_key=shop.app_key or "",
               app_secret=shop.app_secret or "", access_token=shop.access_token or "", **kwargs)
