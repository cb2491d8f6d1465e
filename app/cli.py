"""``flask oms ...``: operations from the command line (thin: parse, call a service, print)."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

oms = AppGroup("oms", help="店群订单管理运维命令")


@oms.command("init")
def init_cmd():
    """Migrate the database, sync permissions, seed roles and carriers, ensure the admin (idempotent)."""
    from flask_migrate import upgrade

    from app.services import setup

    upgrade()
    report = setup.initialise(admin_password=current_app.config.get("OMS_ADMIN_PASSWORD") or None)
    for line in report:
        click.echo(line)


@oms.command("demo")
@click.option("--orders", default=5000, show_default=True, help="订单数量")
@click.option("--force", is_flag=True, help="即使已有订单也生成")
@click.option("--seed", default=20261125, show_default=True, help="随机种子")
def demo_cmd(orders, force, seed):
    """Create the demo shop group (shops, SKUs, warehouses, carriers, orders, one user per role)."""
    from app.services import demo

    try:
        report = demo.create_demo(order_count=orders, force=force, seed=seed)
    except demo.DemoExists as exc:
        click.echo(str(exc))
        return
    for line in report:
        click.echo(line)


@oms.command("worker")
@click.option("--queues", default=None, help="逗号分隔的队列名，默认全部")
@click.option("--burst", is_flag=True, help="处理完队列后退出")
def worker_cmd(queues, burst):
    """Run an RQ worker for the app's queues."""
    from app.jobs.queue import redis_conn
    from app.jobs.worker import AppWorker

    names = queues.split(",") if queues else current_app.config["OMS_QUEUES"]
    AppWorker.flask_app = current_app._get_current_object()
    worker = AppWorker(names, connection=redis_conn())
    worker.work(burst=burst, with_scheduler=False)


@oms.command("scheduler")
def scheduler_cmd():
    """Run the cron scheduler (RQ 2.12: cron expressions are in UTC)."""
    from app.jobs.schedule import build_scheduler

    build_scheduler().start()


@oms.command("set-password")
@click.argument("username")
@click.password_option()
def set_password_cmd(username, password):
    """Set a user's password."""
    from app.extensions import appbuilder

    user = appbuilder.sm.find_user(username=username)
    if user is None:
        raise click.ClickException(f"用户不存在：{username}")
    appbuilder.sm.reset_password(user.id, password)
    click.echo(f"已更新 {username} 的密码")


@oms.command("order-count")
def order_count_cmd():
    """Print how many orders exist (used by `make run` to decide on demo data)."""
    from sqlalchemy import func, select

    from app.extensions import db
    from app.models import Order

    click.echo(db.session.execute(select(func.count()).select_from(Order)).scalar())
