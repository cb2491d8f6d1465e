"""``flask oms init``: permissions, roles, the admin, reference data. Idempotent.

Roles are declared here as data, read like the jobs in the foundation issue:
客服 handles orders and buyers but not costs; 财务 sees money but not buyers;
仓库 sees what to pick, pack and ship; 运营 runs shops and products; 管理员 all.
Admins can change any of it later in the security UI; re-running init only adds
what is missing to the seeded roles and never removes an admin's grants.
"""
from __future__ import annotations

import secrets

from flask import current_app

from app.extensions import appbuilder, db

from .columns import COLUMN_SCOPE_VIEW, PERM_FINANCE, PERM_PII, PERM_REVEAL

ROLE_ADMIN = "管理员"
ROLE_OPS = "运营"
ROLE_CS = "客服"
ROLE_WAREHOUSE = "仓库"
ROLE_FINANCE = "财务"

R, W, D = "can_read", "can_write", "can_delete"

# role -> {permission view name: [permissions]}
ROLE_GRANTS: dict[str, dict[str, list[str]]] = {
    ROLE_OPS: {
        "Import": [R, W],  # 导入 (orders, SKUs, stock counts, tracking numbers)
        "Order": [R, W, "can_audit", "can_hold"],
        "OrderEvent": [R],
        "Customer": [R, W],
        "Product": [R, W, D],
        "Stock": [R],
        "Warehouse": [R],
        "Carrier": [R, W],
        "CarrierRule": [R, W, D],  # 快递规则
        "Parcel": [R],  # 包裹跟踪
        "LogisticsException": [R, W],  # 物流异常: assign and resolve
        "CarrierScorecard": [R],  # 快递考核
        "CarrierRate": [R, W, D],  # 运费价目
        "CarrierBill": [R, W, D],  # 快递账单
        "Shop": [R, W, "can_sync"],
        "SyncRun": [R],
        "SyncReject": [R, D, "can_sync"],  # 无法保存的平台订单: retry now, or drop
        "ShopListing": [R, W],
        "Jobs": [R],  # 我的任务: their own background jobs
        COLUMN_SCOPE_VIEW: [PERM_FINANCE, PERM_PII],
    },
    ROLE_CS: {
        "Order": [R, W, "can_hold", "can_reveal"],
        "OrderEvent": [R],
        "Customer": [R, W],
        "Product": [R],
        "Stock": [R],
        "Carrier": [R],
        "Parcel": [R],  # 包裹跟踪: "where is my parcel"
        "LogisticsException": [R, W],  # 物流异常: assign and resolve
        "CarrierScorecard": [R],  # 快递考核 (costs hidden: no finance columns)
        "Jobs": [R],  # 我的任务: their own background jobs
        COLUMN_SCOPE_VIEW: [PERM_PII, PERM_REVEAL],
    },
    ROLE_WAREHOUSE: {
        "Import": [R, W],  # 导入 (orders, SKUs, stock counts, tracking numbers)
        "Order": [R, W, "can_hold"],
        "OrderEvent": [R],
        "Product": [R],
        "Stock": [R],
        "Warehouse": [R, W],
        "StockDocument": [W],  # 入库, 调整, 盘点, 退货入库 (every page of them is a write)
        "Carrier": [R, W],
        "CarrierRule": [R],  # 快递规则
        "Parcel": [R],  # 包裹跟踪
        "LogisticsException": [R, W],  # 物流异常: assign and resolve
        "CarrierScorecard": [R],  # 快递考核
        "CarrierRate": [R],  # 运费价目
        "ShopListing": [R],
        "Jobs": [R],  # 我的任务: their own background jobs
        COLUMN_SCOPE_VIEW: [PERM_PII],
    },
    ROLE_FINANCE: {
        "Order": [R],
        "OrderEvent": [R],
        "Customer": [R],
        "Product": [R],
        "Stock": [R],
        "Warehouse": [R],
        "Shop": [R],
        "CarrierScorecard": [R],  # 快递考核
        "CarrierRate": [R, W],  # 运费价目
        "CarrierBill": [R, W, D],  # 快递账单: import the carriers' bills
        "Jobs": [R],  # 我的任务: their own background jobs
        COLUMN_SCOPE_VIEW: [PERM_FINANCE],
    },
}
# Everyone who logs in may see and edit their own profile and password.
SELF_SERVICE = [
    ("can_userinfo", "OmsUserDBModelView"),
    ("can_this_form_get", "ResetMyPasswordView"),
    ("can_this_form_post", "ResetMyPasswordView"),
    ("can_this_form_get", "UserInfoEditView"),
    ("can_this_form_post", "UserInfoEditView"),
    ("resetmypassword", "OmsUserDBModelView"),
    ("userinfoedit", "OmsUserDBModelView"),
]


def menu_names_for(view_perm_names: set[str]) -> set[str]:
    """Menu entries (and their categories) whose view the role may read."""
    from app.views import MENU

    names = set()
    for view, name, _label, category, _clabel, _icon in MENU:
        if view.class_permission_name in view_perm_names:
            names.add(name)
            names.add(category)
    if "Order" in view_perm_names:
        names.add("Write-back failures")
    return names


def sync_permissions() -> None:
    sm = appbuilder.sm
    admin = sm.find_role(ROLE_ADMIN) or sm.add_role(ROLE_ADMIN)
    appbuilder.add_permissions(update_perms=True)
    for perm in (PERM_FINANCE, PERM_PII, PERM_REVEAL):
        sm.add_permission_view_menu(perm, COLUMN_SCOPE_VIEW)
    # The admin role holds every permission that exists.
    for pv in db.session.query(sm.permissionview_model).all():
        if pv not in admin.permissions:
            sm.add_permission_role(admin, pv)


def seed_roles() -> list[str]:
    sm = appbuilder.sm
    out = []
    for role_name, grants in ROLE_GRANTS.items():
        role = sm.find_role(role_name) or sm.add_role(role_name)
        wanted = [(perm, view) for view, perms in grants.items() for perm in perms]
        wanted += [("menu_access", m) for m in menu_names_for(set(grants))]
        wanted += SELF_SERVICE
        added = 0
        for perm, view in wanted:
            pv = sm.find_permission_view_menu(perm, view)
            if pv is None:
                pv = sm.add_permission_view_menu(perm, view)
            if pv is not None and pv not in role.permissions:
                sm.add_permission_role(role, pv)
                added += 1
        out.append(f"角色「{role_name}」：新增 {added} 项权限")
    return out


def ensure_admin(password: str | None) -> list[str]:
    sm = appbuilder.sm
    user = sm.find_user(username="admin")
    if user is not None:
        if password:
            sm.reset_password(user.id, password)
            return ["管理员 admin 已存在，密码已按 OMS_ADMIN_PASSWORD 更新"]
        return ["管理员 admin 已存在"]
    generated = not password
    password = password or secrets.token_urlsafe(12)
    user = sm.add_user("admin", "系统", "管理员", "admin@example.com", sm.find_role(ROLE_ADMIN), password)
    if not user:  # FAB logs the cause and returns False
        raise RuntimeError("创建管理员 admin 失败，请检查数据库是否已迁移（flask db upgrade）")
    user.all_shops = True
    db.session.commit()
    if generated:
        return [f"已创建管理员 admin，初始密码（只显示这一次）：{password}"]
    return ["已创建管理员 admin（密码来自 OMS_ADMIN_PASSWORD）"]


CARRIERS = [
    # code, name, kuaidi100, taobao, pdd logistics_id, jd
    ("SF", "顺丰速运", "shunfeng", "SF", "44", "467"),
    ("YTO", "圆通速递", "yuantong", "YTO", "85", "463"),
    ("ZTO", "中通快递", "zhongtong", "ZTO", "115", "1499"),
    ("STO", "申通快递", "shentong", "STO", "1", "470"),
    ("YUNDA", "韵达快递", "yunda", "YUNDA", "121", "1327"),
    ("JT", "极兔速递", "jtexpress", "HTKY", "384", "1327"),
    ("EMS", "EMS", "ems", "EMS", "118", "465"),
    ("POSTB", "邮政快递包裹", "youzhengguonei", "POSTB", "132", "2170"),
    ("JD", "京东快递", "jd", "JD", "120", "2087"),
    ("DBKD", "德邦快递", "debangkuaidi", "DBKD", "131", "3046"),
]


def seed_carriers() -> list[str]:
    """Carrier codes per platform. Platform codes beyond Kuaidi100's are best effort
    (platform-apis.md marks the full lists UNCONFIRMED); admins can correct them."""
    from app.models import Carrier

    added = 0
    for code, name, k100, tb, pdd, jd in CARRIERS:
        if db.session.query(Carrier).filter_by(code=code).first() is None:
            db.session.add(Carrier(code=code, name=name, kuaidi100_code=k100, taobao_code=tb,
                                   pdd_code=pdd, jd_code=jd, active=True))
            added += 1
    db.session.commit()
    return [f"快递公司：新增 {added} 家"]


def initialise(admin_password: str | None = None) -> list[str]:
    sync_permissions()
    report = ["权限已同步"]
    report += seed_roles()
    report += ensure_admin(admin_password)
    report += seed_carriers()
    return report
