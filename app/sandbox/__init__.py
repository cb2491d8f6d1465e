"""The sandbox (沙箱): one local HTTP server speaking the real Taobao TOP,
Pinduoduo and JD JOS gateway protocols, with demo shops whose orders evolve over
time, fault injection, and records of write-backs and stock pushes.

    from app.sandbox import SandboxState, serve_in_thread
    base, stop = serve_in_thread(SandboxState())
    # gateways: {base}/router/rest, {base}/api/router, {base}/routerjson

It is independent of the platform clients (app/platforms/) on purpose: it is
written from the protocol description, so it can catch client mistakes.
"""
from .data import CATALOGUE, UNKNOWN_CATALOGUE
from .server import create_app, run, serve_in_thread
from .state import DEMO_SHOPS, Faults, SandboxShop, SandboxState, order_checksum

__all__ = ["CATALOGUE", "UNKNOWN_CATALOGUE", "DEMO_SHOPS", "Faults", "SandboxShop", "SandboxState",
           "create_app", "order_checksum", "run", "serve_in_thread"]
