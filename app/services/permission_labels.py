"""zh names for permissions, so admins configure roles in words, not identifiers."""
from __future__ import annotations

from flask_babel import gettext

PERMISSIONS = {
    "can_read": "查看", "can_write": "编辑", "can_delete": "删除", "can_audit": "审单",
    "can_hold": "挂起/解除", "can_reveal": "查看完整收货信息",
    "can_read_finance": "查看成本与利润", "can_read_pii": "查看收货信息（脱敏）",
    "can_reveal_pii": "查看完整收货信息（记录）", "menu_access": "菜单",
    "can_list": "列表", "can_show": "查看", "can_add": "新增", "can_edit": "编辑",
    "can_download": "下载", "can_userinfo": "个人信息", "can_this_form_get": "打开表单",
    "can_this_form_post": "提交表单", "resetmypassword": "修改自己的密码", "resetpasswords": "重置密码",
    "userinfoedit": "编辑个人信息", "copyrole": "复制角色", "can_get": "查看", "can_put": "编辑",
    "can_post": "新增", "can_info": "查看", "can_chart": "图表", "can_sync": "立即同步",
}

VIEWS = {
    "Order": "订单", "OrderEvent": "订单日志", "Customer": "客户", "Product": "商品与SKU",
    "Stock": "库存", "Warehouse": "仓库", "Carrier": "快递公司", "Shop": "店铺", "Jobs": "后台任务",
    "PiiAccessLog": "敏感信息查看记录", "ColumnScope": "列权限", "SyncRun": "同步记录", "SyncReject": "无法保存的平台订单",
    "Sync runs": "同步记录", "ShopListing": "店铺商品（库存同步）", "Stock push": "库存同步",
    "OrderHub": "订单中心", "Orders": "订单", "Order events": "订单日志", "Customers": "客户",
    "Catalog": "商品", "Products": "商品", "SKUs": "SKU", "Bundle components": "组合装明细",
    "Inventory": "库存", "Stock movements": "库存流水", "Warehouses": "仓库", "Logistics": "物流",
    "Carriers": "快递公司", "Settings": "设置", "Shops": "店铺", "PII access log": "敏感信息查看记录",
    "Security": "安全", "List Users": "用户列表", "List Roles": "角色列表", "List Groups": "用户组列表",
    "UserDBModelView": "用户", "RoleModelView": "角色", "OmsRoleModelView": "角色",
    "OmsGroupModelView": "用户组", "UserGroupModelView": "用户组",
    "ResetMyPasswordView": "修改密码", "ResetPasswordView": "重置密码", "UserInfoEditView": "个人信息",
    "AuthDBView": "登录", "LocaleView": "语言", "SwaggerView": "接口文档", "MenuApi": "菜单接口",
    "OmsUserDBModelView": "用户", "UtilView": "工具", "OpenApi": "接口规范",
    "JobsView": "后台任务",
    "StockDocument": "库存单据（入库、调整、盘点、退货入库）",
    "Parcel": "包裹跟踪", "Parcel tracking": "包裹跟踪", "LogisticsException": "物流异常",
    "Logistics exceptions": "物流异常",
    "CarrierRule": "快递规则", "EwaybillAccount": "电子面单账号", "PrintTemplate": "打印模板",
    "CarrierScorecard": "快递考核", "CarrierRate": "运费价目", "CarrierBill": "快递账单",
}


def permission_label(pv) -> str:
    perm = pv.permission.name if pv.permission else ""
    view = pv.view_menu.name if pv.view_menu else ""
    return f"{VIEWS.get(view, gettext(view) if view else '')} · {PERMISSIONS.get(perm, perm)}"


def permissions_label(pvs) -> str:
    return "、".join(sorted(permission_label(pv) for pv in pvs or []))
