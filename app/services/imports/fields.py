"""What a sheet column can be imported into, per entity: the field's zh name, its
converter and whether it belongs to the order or to one line.

A profile (imports/*.toml) maps sheet headers to these field names; the preview
lets a user change that mapping, and the converter follows the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import convert as c

ENTITIES = {
    "orders": "订单",
    "order_items": "订单明细",
    "skus": "商品 SKU",
    "stocktake": "盘点",
    "tracking": "快递单号",
    "inbound": "入库",
    "carrier_bill": "快递账单",
}


@dataclass(frozen=True)
class Field:
    name: str
    zh: str
    conv: Callable
    level: str = "order"  # "order" or "line" (orders); "row" for the other entities


def _fields(*items: Field) -> dict[str, Field]:
    return {f.name: f for f in items}


ORDER_FIELDS = _fields(
    Field("shop_name", "店铺", c.short_text(100)),
    Field("platform_order_id", "订单号", c.identifier),
    Field("status", "订单状态", c.short_text(64)),
    Field("refund_state", "售后状态", c.short_text(64)),
    Field("goods_amount", "商品金额", c.money),
    Field("discount_amount", "优惠金额", c.money),
    Field("post_fee", "运费", c.money),
    Field("paid_amount", "实付金额", c.money),
    Field("buyer_nick", "买家昵称", c.short_text(100)),
    Field("receiver_name", "收货人", c.short_text(100)),
    Field("receiver_phone", "收货人手机", c.phone),
    Field("receiver_full_address", "收货地址（省 市 区 详址）", c.split_address),
    Field("receiver_province", "省", c.short_text(32)),
    Field("receiver_city", "市", c.short_text(32)),
    Field("receiver_district", "区", c.short_text(32)),
    Field("receiver_address", "详细地址", c.short_text(500)),
    Field("receiver_zip", "邮编", c.short_text(16)),
    Field("buyer_message", "买家留言", c.short_text(2000)),
    Field("seller_memo", "卖家备注", c.short_text(2000)),
    Field("flag", "旗帜", c.flag),
    Field("platform_created_at", "下单时间", c.datetime),
    Field("paid_at", "付款时间", c.datetime),
    Field("shipped_at", "发货时间", c.datetime),
    Field("completed_at", "完成时间", c.datetime),
    Field("close_reason", "关闭原因", c.short_text(200)),
    Field("tracking_number", "快递单号", c.identifier),
    Field("carrier_name", "快递公司", c.short_text(64)),
    Field("line_id", "子订单编号", c.identifier, "line"),
    Field("merchant_code", "商家编码", c.short_text(64), "line"),
    Field("title", "商品名称", c.short_text(255), "line"),
    Field("spec", "规格", c.short_text(255), "line"),
    Field("quantity", "数量", c.quantity, "line"),
    Field("price", "单价", c.money, "line"),
    Field("line_total", "商品总价", c.money, "line"),
    Field("line_paid_amount", "子订单实付金额", c.money, "line"),
    Field("line_refund_status", "退款状态", c.short_text(32), "line"),
)

SKU_FIELDS = _fields(
    Field("merchant_code", "商家编码", c.short_text(64), "row"),
    Field("name", "名称", c.short_text(200), "row"),
    Field("spec", "规格", c.short_text(200), "row"),
    Field("product_code", "商品编码", c.short_text(64), "row"),
    Field("product_name", "商品名称", c.short_text(200), "row"),
    Field("category", "类目", c.short_text(64), "row"),
    Field("barcode", "条码", c.identifier, "row"),
    Field("cost_price", "成本价", c.money, "row"),
    Field("sale_price", "售价", c.money, "row"),
    Field("weight_kg", "重量(kg)", c._decimal, "row"),
    Field("low_stock_threshold", "预警值", c.count, "row"),
    Field("active", "启用", c.yes_no, "row"),
)

STOCKTAKE_FIELDS = _fields(
    Field("warehouse", "仓库", c.short_text(100), "row"),
    Field("merchant_code", "商家编码", c.short_text(64), "row"),
    Field("counted", "实盘数量", c.count, "row"),
    Field("note", "备注", c.short_text(500), "row"),
)

TRACKING_FIELDS = _fields(
    Field("shop_name", "店铺", c.short_text(100), "row"),
    Field("platform_order_id", "订单号", c.identifier, "row"),
    Field("carrier_name", "快递公司", c.short_text(64), "row"),
    Field("tracking_number", "快递单号", c.identifier, "row"),
)

INBOUND_FIELDS = _fields(
    Field("warehouse", "仓库", c.short_text(100), "row"),
    Field("merchant_code", "商家编码", c.short_text(64), "row"),
    Field("quantity", "数量", c.quantity, "row"),
    Field("source_ref", "来源单号", c.short_text(100), "row"),
    Field("note", "备注", c.short_text(500), "row"),
)

# 快递账单 (services/carrier_scorecard.py): amounts that override the rate card per parcel.
CARRIER_BILL_FIELDS = _fields(
    Field("carrier_name", "快递公司", c.short_text(64), "row"),
    Field("tracking_number", "快递单号", c.identifier, "row"),
    Field("weight_kg", "重量(kg)", c._decimal, "row"),
    Field("amount", "金额", c.money, "row"),
)

FIELDS_BY_ENTITY = {
    "orders": ORDER_FIELDS,
    "order_items": ORDER_FIELDS,
    "skus": SKU_FIELDS,
    "stocktake": STOCKTAKE_FIELDS,
    "tracking": TRACKING_FIELDS,
    "inbound": INBOUND_FIELDS,
    "carrier_bill": CARRIER_BILL_FIELDS,
}

# Converter names a profile may set per column (``type = "money"``).
CONVERTERS = {
    "text": c.text, "id": c.identifier, "money": c.money, "int": c.integer, "quantity": c.quantity,
    "count": c.count, "datetime": c.datetime, "address": c.split_address, "phone": c.phone,
    "flag": c.flag, "yesno": c.yes_no,
}

IGNORE = ""  # the mapping value of a column that is not imported
