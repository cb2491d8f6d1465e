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
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    for line in report:
        click.echo(line)


@oms.command("worker")
@click.option("--queues", default=None, help="逗号分隔的队列名，默认全部")
@click.option("--burst", is_flag=True, help="处理完队列后退出")
def worker_cmd(queues, burst):
    """Run an RQ worker for the app's queues."""
    from app.jobs.queue import redis_conn
    from app.jobs.worker import AppWorker, settle_process

    names = queues.split(",") if queues else current_app.config["OMS_QUEUES"]
    AppWorker.flask_app = current_app._get_current_object()
    worker = AppWorker(names, connection=redis_conn())
    settle_process()
    worker.work(burst=burst, with_scheduler=True)


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


@oms.command("sync")
@click.option("--shop", "shops", multiple=True, help="店铺名称或 ID，可多次指定；默认全部启用的店铺")
def sync_cmd(shops):
    """Sync shops in the foreground, with a progress bar."""
    from sqlalchemy import or_, select

    from app.extensions import db
    from app.jobs.worker import settle_process
    from app.models import Shop
    from app.services import sync

    settle_process()  # a backfill can run for minutes: as a worker would
    query = select(Shop).where(Shop.active.is_(True), Shop.platform.in_(("taobao", "tmall", "pdd", "jd")))
    if shops:
        ids = [int(s) for s in shops if s.isdigit()]
        query = query.where(or_(Shop.name.in_(shops), Shop.id.in_(ids)))
    targets = [(s.id, s.name) for s in db.session.scalars(query)]
    if not targets:
        raise click.ClickException("没有找到要同步的店铺")
    failed = 0
    for shop_id, name in targets:
        with click.progressbar(length=100, label=f"同步 {name}") as bar:
            state = {"pct": 0}

            def progress(done, total, message=None):
                pct = int(100 * done / total) if total else 100
                bar.update(pct - state["pct"])
                state["pct"] = pct

            try:
                run = sync.sync_shop(shop_id, trigger="cli", progress=progress)
            except sync.SyncBusy as exc:
                click.echo(f"  {name}：{exc.message}")
                continue
            bar.update(100 - state["pct"])
        if run.status == "success":
            click.echo(f"  {name}：获取 {run.fetched}，新增 {run.created}，更新 {run.updated}，"
                       f"未变 {run.unchanged}，用时 {run.duration_seconds} 秒")
            if run.rejected:
                click.echo(f"  {name}：{run.error}")
        else:
            failed += 1
            click.echo(f"  {name}：失败：{run.error}")
    if failed:
        raise SystemExit(1)


@oms.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8900, show_default=True, type=int)
@click.option("--seed", default=None, type=int, help="随机种子，默认 OMS_SANDBOX_SEED（与演示数据一致）")
def sandbox_cmd(host, port, seed):
    """Run the local platform sandbox (Taobao/Tmall TOP, Pinduoduo, JD) for demo and tests."""
    from app.sandbox.server import run

    run(host=host, port=port, seed=seed if seed is not None else current_app.config["OMS_SANDBOX_SEED"])


@oms.command("print")
@click.option("--status", default="to_ship", show_default=True, type=click.Choice(["to_ship", "shipped"]),
              help="订单状态（待发货 to_ship，补打已发货 shipped）")
@click.option("--shop", "shops", multiple=True, help="店铺名称或 ID，可多次指定；默认全部店铺")
@click.option("--limit", default=500, show_default=True, type=click.IntRange(1, 500), help="最多打印多少个订单")
@click.option("--documents", default="label,packing_list", show_default=True,
              help="单据：label（面单）、packing_list（发货单），逗号分隔")
@click.option("--user", "username", default="admin", show_default=True,
              help="以该用户打印：只能打印其店铺的订单，并记入敏感信息查看记录")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="输出的 PDF 文件")
def print_cmd(status, shops, limit, documents, username, out):
    """Print waybill labels and packing lists of orders into one PDF (label + packing list per order)."""
    import os

    from sqlalchemy import or_, select

    from app.extensions import appbuilder, db
    from app.models import Order, Shop
    from app.services import printing
    from app.services.errors import DomainError
    from app.services.scope import as_user

    user = appbuilder.sm.find_user(username=username)
    if user is None:
        raise click.ClickException(f"用户不存在：{username}")
    with as_user(user.id):
        query = select(Order.id).where(Order.status == status, Order.is_held.is_(False))
        if shops:
            numbers = [int(s) for s in shops if s.isdigit()]
            found = db.session.execute(
                select(Shop.id, Shop.name).where(or_(Shop.name.in_(shops), Shop.id.in_(numbers)))).all()
            known = {name for _, name in found} | {str(sid) for sid, _ in found}
            missing = [s for s in shops if s not in known]
            if missing:
                raise click.ClickException("店铺不存在或无权访问：" + "、".join(missing))
            query = query.where(Order.shop_id.in_([sid for sid, _ in found]))
        ids = list(db.session.scalars(query.order_by(Order.paid_at, Order.id).limit(limit)))
        if not ids:
            raise click.ClickException("没有符合条件的订单")
        partial = out + ".part"
        with click.progressbar(length=len(ids), label=f"打印 {len(ids)} 个订单") as bar:
            state = {"done": 0}

            def progress(done, total, message=None):
                bar.update(done - state["done"])
                state["done"] = done

            def deliver(pdf):
                with open(partial, "wb") as fh:
                    fh.write(pdf)

            try:
                pdf = printing.render_orders(ids, documents=documents, user_id=user.id,
                                             progress=progress, deliver=deliver)
                os.replace(partial, out)
            except DomainError as exc:
                raise click.ClickException(exc.message) from None
            except OSError as exc:
                raise click.ClickException(f"无法写入 {out}：{exc.strerror or exc}") from None
            finally:
                if os.path.exists(partial):
                    os.remove(partial)
    click.echo(f"已打印 {len(ids)} 个订单，共 {printing.page_count(pdf)} 页：{out}")


@oms.command("stock-check")
def stock_check_cmd():
    """Prove every stock row equals the sums of its movements (库存对账); exit 1 on a mismatch."""
    from app.services import stock

    mismatches = stock.check_ledger()
    if not mismatches:
        click.echo("库存对账通过：所有库存与流水合计一致")
        return
    click.echo(f"库存对账失败：{len(mismatches)} 条库存与流水合计不一致", err=True)
    for m in mismatches:
        click.echo("  " + m.zh(), err=True)
    raise SystemExit(1)


@oms.command("counts-check")
@click.option("--rebuild", is_flag=True, help="重新计算计数（先对账，不一致时修复）")
def counts_check_cmd(rebuild):
    """Prove the status-tab counters equal an exact count of orders; exit 1 on a mismatch."""
    from app.services import order_counts

    mismatches = order_counts.check()
    if not mismatches:
        click.echo("订单计数对账通过：各页签计数与订单一致")
        return
    click.echo(f"订单计数对账失败：{len(mismatches)} 组计数与订单不一致", err=True)
    for m in mismatches[:50]:
        click.echo(f"  店铺 {m['shop_id']} {m['platform']} {m['status']}{'（挂起）' if m['is_held'] else ''}："
                   f"计数 {m['counter']}，实际 {m['exact']}", err=True)
    if rebuild:
        groups = order_counts.rebuild()
        click.echo(f"已重新计算：{groups} 组")
        return
    raise SystemExit(1)


@oms.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--profile", "profile_names", multiple=True,
              help="导入模板名称（imports/ 下的文件名，如 taobao_orders），每个文件一个；默认按表头自动识别")
@click.option("--shop", default=None, help="导入到该店铺；不存在时按模板的平台新建（还没有接口密钥时从表格开始）")
@click.option("--valid-only", is_flag=True, help="只导入没有错误的行（默认：有任何错误就不导入）")
@click.option("--user", "username", default="admin", show_default=True, help="以该用户导入（只能导入其店铺）")
def import_cmd(files, profile_names, shop, valid_only, username):
    """Import orders, SKUs, stock counts or tracking numbers from Excel/CSV (Taobao: order sheet + item sheet)."""
    from app.extensions import appbuilder
    from app.services.imports import ImportFileError, run_import

    user = appbuilder.sm.find_user(username=username)
    if user is None:
        raise click.ClickException(f"用户不存在：{username}")
    with click.progressbar(length=100, label="导入 " + "、".join(click.format_filename(f) for f in files)) as bar:
        state = {"pct": 0}

        def progress(done, total, message=None):
            pct = min(100, int(100 * done / total) if total else 100)
            if pct > state["pct"]:
                bar.update(pct - state["pct"])
                state["pct"] = pct

        try:
            result = run_import(list(files), profile_names=list(profile_names) or None, shop=shop,
                                valid_only=valid_only, user_id=user.id, create_shop=bool(shop), progress=progress)
        except ImportFileError as exc:
            raise click.ClickException(exc.message) from None
        bar.update(100 - state["pct"])
    click.echo(result.summary)
    if result.issues:
        for issue in result.issues[:20]:
            click.echo("  " + issue.message, err=True)
        if len(result.issues) > 20:
            click.echo(f"  …… 共 {len(result.issues)} 处错误", err=True)
        click.echo(f"错误报告：{result.report_path}", err=True)
        raise SystemExit(1)


@oms.command("export")
@click.argument("entity")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="输出文件（.xlsx 或 .csv）")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help='筛选条件，可多次指定，与表格相同（如 tab=to_audit、shop_id=[1,2]、paid_at={"from":"2026-11-01"}）')
@click.option("--columns", default=None, help="逗号分隔的列名（默认全部可见列）")
@click.option("--sort", default=None, help="排序，如 paid_at:desc")
@click.option("--format", "fmt", default=None, type=click.Choice(["xlsx", "csv", "csv_gbk"]),
              help="默认按 --out 的扩展名：.csv 为 UTF-8（带 BOM），其他为 xlsx")
@click.option("--user", "username", default="admin", show_default=True,
              help="以该用户导出：只含其店铺的记录和其有权查看的列，敏感信息打码")
def export_cmd(entity, out, filters, columns, sort, fmt, username):
    """Export a grid (order, sku, stock, customer, ...) to xlsx or CSV, as a user sees it."""
    import os

    from app.extensions import appbuilder
    from app.services import exports
    from app.services.errors import DomainError

    user = appbuilder.sm.find_user(username=username)
    if user is None:
        raise click.ClickException(f"用户不存在：{username}")
    if fmt is None:
        fmt = "csv" if out.lower().endswith(".csv") else "xlsx"
    partial = out + ".part"
    try:
        with exports.as_user(user.id):
            req = exports.ExportRequest.parse(entity, filters=exports.apply_filters_kv(filters),
                                              columns=columns, sort=sort, fmt=fmt)
            total, _ = exports.count(req, exports.XLSX_MAX_ROWS + 1)
            with click.progressbar(length=max(total, 1), label=f"导出 {total} 行") as bar:
                state = {"done": 0}

                def progress(done, _total=None, message=None):
                    bar.update(done - state["done"])
                    state["done"] = done

                rows = exports.write_export(req, partial, progress=progress, total=total)
                bar.update(max(total, 1) - state["done"])
        os.replace(partial, out)
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    except OSError as exc:
        raise click.ClickException(f"无法写入 {out}：{exc.strerror or exc}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    click.echo(f"已导出 {rows} 行：{out}")
