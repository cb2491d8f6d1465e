"""The gateways' transport: signed form POSTs over one kept-alive connection per gateway.

urllib3 directly (the layer ``requests`` is built on): a gateway call is one small POST
and one JSON answer, and a first sync makes thousands of them (Taobao: one ``fullinfo``
per order with a buyer message). ``requests`` spends about as much CPU per call on its
own layers (hooks, cookie jar, environment merge, adapters, response wrapping) as the
HTTP exchange itself; here a call is a pool lookup and ``urlopen``.

What ``requests`` gave and this keeps: proxies from the environment (``HTTP(S)_PROXY``,
``NO_PROXY``, read once per transport), certificate checks against ``certifi``'s bundle
or ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE``, connect and read timeouts, a stale
kept-alive connection replaced before it is used. Failures come out as
:class:`TransportError` with a kind (connect, timeout, other), which the clients turn
into zh :class:`~app.platforms.base.PlatformError` messages.
"""
from __future__ import annotations

import os
import threading
import urllib.request
from typing import Optional
from urllib.parse import urlsplit

import urllib3
from urllib3 import exceptions as u3


class TransportError(Exception):
    """A call that got no HTTP answer. ``kind``: "connect" (refused, DNS, TLS, proxy, reset
    before an answer), "timeout" (no answer in time) or "other"."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _ca_bundle() -> Optional[str]:
    path = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
    if path:
        return path
    try:
        import certifi

        return certifi.where()
    except ImportError:  # pragma: no cover - certifi is in requirements.txt
        return None


class FormTransport:
    """POSTs form bodies; one connection pool per gateway host, kept alive between calls.
    Safe to share between the sync's fetch thread and the engine (urllib3 pools are)."""

    def __init__(self, maxsize: int = 4):
        self._maxsize = maxsize
        self._lock = threading.Lock()
        self._direct: Optional[urllib3.PoolManager] = None
        self._proxied: dict[str, urllib3.ProxyManager] = {}
        self._proxies = {k.lower(): v for k, v in urllib.request.getproxies().items()}
        self._pools: dict[str, tuple] = {}  # url → (pool or manager, what to pass as the URL)

    def _route(self, url: str) -> tuple:
        route = self._pools.get(url)
        if route is not None:
            return route
        with self._lock:
            parts = urlsplit(url)
            ssl = {"cert_reqs": "CERT_REQUIRED", "ca_certs": _ca_bundle()} if parts.scheme == "https" else {}
            proxy = self._proxies.get(parts.scheme)
            if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
                manager = self._proxied.get(proxy)
                if manager is None:
                    manager = self._proxied[proxy] = urllib3.ProxyManager(proxy, maxsize=self._maxsize, **ssl)
                route = (manager, url)  # through a proxy the URL is absolute
            else:
                if self._direct is None:
                    self._direct = urllib3.PoolManager(maxsize=self._maxsize, **ssl)
                pool = self._direct.connection_from_url(url)
                target = parts.path or "/"
                if parts.query:
                    target += "?" + parts.query
                route = (pool, target)
            self._pools[url] = route
        return route

    def post(self, url: str, body: bytes, headers: dict, timeout: float) -> tuple[int, bytes]:
        """(status, body) of one POST; :class:`TransportError` when there is no answer."""
        opener, target = self._route(url)
        try:
            resp = opener.urlopen("POST", target, body=body, headers=headers, retries=False,
                                  redirect=False, timeout=urllib3.Timeout(connect=timeout, read=timeout),
                                  preload_content=True)
        except u3.ConnectTimeoutError as exc:
            raise TransportError("connect", type(exc).__name__) from exc
        except (u3.ReadTimeoutError, TimeoutError) as exc:
            raise TransportError("timeout", type(exc).__name__) from exc
        except (u3.NewConnectionError, u3.ProxyError, u3.SSLError, u3.ProtocolError, ConnectionError) as exc:
            raise TransportError("connect", type(exc).__name__) from exc
        except (u3.HTTPError, OSError) as exc:
            raise TransportError("other", type(exc).__name__) from exc
        return resp.status, resp.data

    def close(self) -> None:
        """Closes the kept-alive connections (the next call opens new ones)."""
        with self._lock:
            self._pools.clear()
            if self._direct is not None:
                self._direct.clear()
            for manager in self._proxied.values():
                manager.clear()
