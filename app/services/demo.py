"""``flask oms demo``: a realistic, deterministic demo shop group (店群).

Builds shops on four platforms, products and SKUs (with bundles), three
warehouses with opening stock (each stock row backed by an inbound movement),
carriers, ``order_count`` orders over the last 90 days that went through the
real state machine (so every order has a true audit trail), and one user per
role. Everything comes from ``random.Random(seed)`` and small embedded tables:
no Faker, no network.

Orders are created through ``orders.create_order`` and moved on with
``order_status.apply`` / ``order_status.hold``; only the time stamps are then
set back to realistic historical times (the services stamp "now").
Batches of orders are committed as they go; on an error the current batch is
rolled back and the error re-raised.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import secrets
import time
from decimal import ROUND_HALF_UP, Decimal
from random import Random
from typing import Optional
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import func, select

from app.extensions import appbuilder, db
from app.models import (
    BundleComponent, Carrier, Customer, CustomerShop, Order, Product, Shop, Sku,
    Stock, StockMovement, Warehouse,
)
from app.sandbox.data import (  # one source of demo reference data for the demo and the sandbox
    BUYER_MESSAGES, CATEGORIES, COMMUNITIES, COMPOUND_SURNAMES, GIVEN_CHARS, NICK_ADJ, NICK_NOUN, NICK_PINYIN,
    OFFICES, PHONE_PREFIXES, PRICE_STEP, ROADS, SELLER_MEMOS, SURNAMES,
)
from app.sandbox.state import DEMO_SHOPS as SANDBOX_SHOPS

from . import catalog, customers, order_status, orders, setup, shops as shop_rules

SH = ZoneInfo("Asia/Shanghai")
UTC = dt.timezone.utc
CENT = Decimal("0.01")
BATCH = 500   # orders per commit
FLUSH = 50    # orders per flush
INIT_REF = "DEMO-INIT"

# Share of orders per final status (GLOSSARY.md "Order status").
STATUS_SHARE = [
    ("pending_payment", 0.05),
    ("to_audit", 0.15),
    ("to_ship", 0.15),
    ("shipped", 0.25),
    ("completed", 0.35),
    ("closed", 0.05),
]
HOLD_SHARE = 0.03       # of to_audit / to_ship orders, besides the unmatched ones
UNMATCHED_SHARE = 0.01  # of all orders: a line with an unknown merchant code
RETURNING_SHARE = 0.25  # of customers: more than one order
FLAG_SHARE = 0.10
MEMO_SHARE = 0.08
MESSAGE_SHARE = 0.15


class DemoExists(Exception):
    """The database already has orders and ``force`` was not given."""


# province: (order weight, nearest warehouse code, {city: [districts]})
REGIONS: dict[str, tuple[int, str, dict[str, list[str]]]] = {
    "浙江省": (10, "HZ01", {"杭州市": ["西湖区", "余杭区", "拱墅区", "滨江区"],
                           "宁波市": ["海曙区", "鄞州区", "江北区"],
                           "温州市": ["鹿城区", "瓯海区", "龙湾区"]}),
    "江苏省": (10, "HZ01", {"南京市": ["玄武区", "鼓楼区", "江宁区", "建邺区"],
                           "苏州市": ["姑苏区", "吴中区", "相城区", "虎丘区"],
                           "无锡市": ["梁溪区", "滨湖区", "新吴区"]}),
    "广东省": (13, "GZ01", {"广州市": ["天河区", "越秀区", "海珠区", "番禺区"],
                           "深圳市": ["南山区", "福田区", "宝安区", "龙岗区"],
                           "佛山市": ["禅城区", "南海区", "顺德区"]}),
    "上海市": (8, "HZ01", {"上海市": ["浦东新区", "徐汇区", "静安区", "闵行区"]}),
    "北京市": (7, "HZ01", {"北京市": ["朝阳区", "海淀区", "东城区", "丰台区"]}),
    "天津市": (2, "HZ01", {"天津市": ["和平区", "南开区", "河西区"]}),
    "重庆市": (3, "CD01", {"重庆市": ["渝中区", "江北区", "南岸区", "渝北区"]}),
    "四川省": (5, "CD01", {"成都市": ["武侯区", "锦江区", "青羊区", "金牛区"],
                           "绵阳市": ["涪城区", "游仙区"],
                           "德阳市": ["旌阳区", "罗江区"]}),
    "山东省": (6, "HZ01", {"济南市": ["历下区", "市中区", "槐荫区"],
                           "青岛市": ["市南区", "市北区", "黄岛区", "崂山区"],
                           "烟台市": ["芝罘区", "莱山区"]}),
    "河南省": (4, "HZ01", {"郑州市": ["金水区", "二七区", "中原区"],
                           "洛阳市": ["西工区", "涧西区", "洛龙区"]}),
    "湖北省": (4, "GZ01", {"武汉市": ["武昌区", "江汉区", "洪山区", "江岸区"],
                           "宜昌市": ["西陵区", "伍家岗区"]}),
    "湖南省": (4, "GZ01", {"长沙市": ["岳麓区", "芙蓉区", "天心区", "雨花区"],
                           "株洲市": ["天元区", "芦淞区"]}),
    "福建省": (4, "GZ01", {"福州市": ["鼓楼区", "台江区", "仓山区"],
                           "厦门市": ["思明区", "湖里区", "集美区"]}),
    "安徽省": (3, "HZ01", {"合肥市": ["蜀山区", "包河区", "庐阳区"],
                           "芜湖市": ["镜湖区", "鸠江区"]}),
    "江西省": (2, "GZ01", {"南昌市": ["东湖区", "西湖区", "红谷滩区"],
                           "赣州市": ["章贡区", "南康区"]}),
    "河北省": (3, "HZ01", {"石家庄市": ["长安区", "桥西区", "裕华区"],
                           "保定市": ["竞秀区", "莲池区"],
                           "唐山市": ["路北区", "路南区"]}),
    "山西省": (2, "HZ01", {"太原市": ["小店区", "迎泽区", "杏花岭区"],
                           "大同市": ["平城区", "云冈区"]}),
    "陕西省": (3, "CD01", {"西安市": ["雁塔区", "碑林区", "未央区", "长安区"],
                           "咸阳市": ["秦都区", "渭城区"]}),
    "辽宁省": (3, "HZ01", {"沈阳市": ["和平区", "沈河区", "浑南区"],
                           "大连市": ["中山区", "沙河口区", "甘井子区"]}),
    "吉林省": (1, "HZ01", {"长春市": ["朝阳区", "南关区", "绿园区"],
                           "吉林市": ["船营区", "丰满区"]}),
    "黑龙江省": (2, "HZ01", {"哈尔滨市": ["南岗区", "道里区", "香坊区"],
                             "大庆市": ["萨尔图区", "让胡路区"]}),
    "广西壮族自治区": (2, "GZ01", {"南宁市": ["青秀区", "兴宁区", "西乡塘区"],
                                   "桂林市": ["秀峰区", "七星区", "象山区"]}),
    "云南省": (2, "CD01", {"昆明市": ["五华区", "盘龙区", "官渡区"],
                           "大理白族自治州": ["大理市", "祥云县"]}),
    "贵州省": (2, "CD01", {"贵阳市": ["南明区", "云岩区", "观山湖区"],
                           "遵义市": ["红花岗区", "汇川区"]}),
    "海南省": (1, "GZ01", {"海口市": ["龙华区", "美兰区"],
                           "三亚市": ["吉阳区", "天涯区"]}),
    "内蒙古自治区": (1, "HZ01", {"呼和浩特市": ["新城区", "赛罕区", "回民区"],
                                 "包头市": ["昆都仑区", "青山区"]}),
    "新疆维吾尔自治区": (1, "CD01", {"乌鲁木齐市": ["天山区", "沙依巴克区", "新市区"],
                                     "克拉玛依市": ["克拉玛依区", "独山子区"],
                                     "喀什地区": ["喀什市", "疏附县"]}),
    "西藏自治区": (1, "CD01", {"拉萨市": ["城关区", "堆龙德庆区", "达孜区"],
                               "日喀则市": ["桑珠孜区", "江孜县"]}),
}

WAREHOUSES = [
    # code, name, province, city, address, contact, phone, priority
    ("HZ01", "杭州仓", "浙江省", "杭州市", "余杭区仓前街道良睦路 1399 号 菜鸟产业园 3 号库",
     "王建国", "13857100001", 1),
    ("GZ01", "广州仓", "广东省", "广州市", "白云区太和镇广从七路 88 号 物流园 B 区 2 栋",
     "陈志强", "13922200002", 2),
    ("CD01", "成都仓", "四川省", "成都市", "双流区西航港街道物联大道 66 号 西部物流园 5 栋",
     "李晓梅", "13880800003", 3),
]

# name, platform, categories sold, order weight. The first half is the 客服 demo user's scope.
SHOPS = [
    ("杭州潮品旗舰店", "tmall", ["FZ"], 14),
    ("小满优选生活馆", "taobao", ["JJ", "MZ", "SP"], 10),
    ("潮品服饰京东旗舰店", "jd", ["FZ"], 9),
    ("好物直供百货", "pdd", ["JJ", "SM", "MY"], 12),
    ("悦享家居旗舰店", "tmall", ["JJ", "MY"], 10),
    ("山野食记", "taobao", ["SP"], 11),
    ("悦享家居京东专营店", "jd", ["JJ", "SM"], 7),
    ("山野农家特产店", "pdd", ["SP"], 12),
    ("美妆研习社", "taobao", ["MZ"], 9),
    ("潮品工厂店", "pdd", ["FZ", "SM"], 10),
]

# category, product name, base sale price, cost ratio, weight kg, spec axes
PRODUCTS = [
    ("FZ", "纯棉圆领短袖T恤", 59, 0.40, 0.25, [("颜色", ["黑色", "白色", "灰色"]), ("尺码", ["M", "L", "XL"])]),
    ("FZ", "重磅纯棉宽松卫衣", 129, 0.42, 0.60, [("颜色", ["黑色", "燕麦色", "雾蓝"]), ("尺码", ["M", "L", "XL"])]),
    ("FZ", "高腰直筒牛仔裤", 139, 0.40, 0.55, [("颜色", ["浅蓝", "深蓝"]), ("尺码", ["26", "27", "28"])]),
    ("FZ", "冰丝防晒衣", 89, 0.35, 0.20, [("颜色", ["白色", "浅粉", "天蓝"]), ("尺码", ["均码"])]),
    ("FZ", "加厚连帽羽绒服", 399, 0.45, 1.10, [("颜色", ["黑色", "军绿"]), ("尺码", ["L", "XL", "XXL"])]),
    ("FZ", "软糯针织开衫", 119, 0.40, 0.35, [("颜色", ["米白", "雾霾蓝"]), ("尺码", ["S", "M", "L"])]),
    ("FZ", "休闲工装裤", 109, 0.40, 0.50, [("颜色", ["卡其", "黑色"]), ("尺码", ["L", "XL"])]),
    ("FZ", "法式碎花连衣裙", 159, 0.38, 0.30, [("颜色", ["蓝色碎花", "黄色碎花"]), ("尺码", ["S", "M", "L"])]),
    ("FZ", "莫代尔家居服套装", 99, 0.40, 0.45, [("颜色", ["灰粉", "藏青"]), ("尺码", ["M", "L", "XL"])]),
    ("FZ", "纯棉中筒袜5双装", 29.9, 0.35, 0.20, [("颜色", ["混色", "黑色", "白色"]), ("尺码", ["均码"])]),
    ("FZ", "百搭帆布鞋", 79, 0.42, 0.80, [("颜色", ["白色", "黑色"]), ("尺码", ["38", "39", "40", "41"])]),
    ("FZ", "轻便透气运动跑鞋", 199, 0.45, 0.70, [("颜色", ["黑白", "灰蓝"]), ("尺码", ["40", "41", "42", "43"])]),
    ("FZ", "大容量双肩电脑背包", 139, 0.40, 0.90, [("颜色", ["黑色", "灰色", "藏青"])]),
    ("SP", "每日坚果混合装", 69, 0.55, 0.45, [("规格", ["25g×15包", "25g×30包"])]),
    ("SP", "内蒙古手撕风干牛肉干", 69, 0.50, 0.30, [("口味", ["原味", "香辣", "孜然"]), ("规格", ["250g"])]),
    ("SP", "云南小粒咖啡挂耳", 39.9, 0.45, 0.30, [("规格", ["10g×20片", "10g×50片"])]),
    ("SP", "五常稻花香大米", 59, 0.60, 2.60, [("规格", ["2.5kg", "5kg"])]),
    ("SP", "新疆和田大枣特级", 49.9, 0.50, 0.55, [("规格", ["500g", "1000g"])]),
    ("SP", "明前西湖龙井茶叶", 268, 0.45, 0.30, [("规格", ["100g罐装", "250g礼盒"])]),
    ("SP", "柳州螺蛳粉", 39.9, 0.50, 1.40, [("口味", ["原味", "加辣"]), ("规格", ["5袋装"])]),
    ("SP", "低脂全麦吐司面包", 29.9, 0.50, 1.00, [("口味", ["原味", "黑麦"]), ("规格", ["1000g整箱"])]),
    ("SP", "手工即食阿胶糕", 98, 0.45, 0.50, [("口味", ["原味", "玫瑰"]), ("规格", ["500g"])]),
    ("SP", "东北长白山黑木耳", 39.9, 0.55, 0.30, [("规格", ["250g", "500g"])]),
    ("SP", "农家纯正土蜂蜜", 59, 0.50, 1.00, [("规格", ["500g", "1000g"])]),
    ("MZ", "玻尿酸补水面膜", 49, 0.30, 0.35, [("规格", ["10片装", "20片装"])]),
    ("MZ", "氨基酸洁面乳", 59, 0.30, 0.15, [("规格", ["100g", "150g"])]),
    ("MZ", "烟酰胺亮肤精华液", 159, 0.25, 0.15, [("规格", ["30ml", "50ml"])]),
    ("MZ", "哑光丝绒口红", 99, 0.25, 0.05, [("色号", ["#01 正红", "#02 豆沙", "#03 枫叶红", "#05 奶茶"])]),
    ("MZ", "清爽防晒乳SPF50+", 69, 0.30, 0.10, [("规格", ["30ml", "50ml"])]),
    ("MZ", "修护保湿面霜", 159, 0.28, 0.12, [("规格", ["30g", "50g"])]),
    ("MZ", "温和卸妆水", 49, 0.30, 0.55, [("规格", ["300ml", "500ml"])]),
    ("MZ", "控油蓬松洗发水", 59, 0.35, 0.80, [("规格", ["500ml", "750ml"])]),
    ("MZ", "烟酰胺美白身体乳", 79, 0.30, 0.45, [("规格", ["250ml", "400ml"])]),
    ("JJ", "全棉磨毛四件套", 299, 0.45, 2.50, [("颜色", ["灰白格", "浅蓝", "豆沙粉"]), ("尺寸", ["1.5m床", "1.8m床"])]),
    ("JJ", "慢回弹记忆棉枕头", 129, 0.40, 1.20, [("规格", ["标准款", "加高款"])]),
    ("JJ", "加厚纯棉浴巾", 59, 0.40, 0.50, [("颜色", ["白色", "灰色", "浅蓝"])]),
    ("JJ", "可折叠收纳箱", 39.9, 0.45, 1.20, [("尺寸", ["小号25L", "中号45L", "大号66L"])]),
    ("JJ", "316不锈钢保温杯", 89, 0.35, 0.40, [("颜色", ["白色", "黑色", "雾霾蓝"]), ("容量", ["500ml"])]),
    ("JJ", "竹纤维洗碗抹布", 19.9, 0.40, 0.30, [("规格", ["10条装", "20条装"])]),
    ("JJ", "香薰蜡烛礼盒", 69, 0.30, 0.50, [("香型", ["白茶", "无花果", "雪松"])]),
    ("JJ", "陶瓷餐具套装", 159, 0.40, 4.50, [("规格", ["4人份", "6人份"])]),
    ("JJ", "硅藻泥浴室地垫", 39.9, 0.40, 0.80, [("尺寸", ["40×60cm", "50×80cm"])]),
    ("SM", "65W氮化镓快充充电器", 99, 0.45, 0.15, [("颜色", ["白色", "黑色"])]),
    ("SM", "降噪真无线蓝牙耳机", 199, 0.45, 0.12, [("颜色", ["白色", "黑色"])]),
    ("SM", "磁吸防摔手机壳", 49, 0.20, 0.05,
     [("颜色", ["透明", "黑色"]), ("型号", ["iPhone 15", "iPhone 15 Pro", "iPhone 16"])]),
    ("SM", "Type-C编织快充数据线", 29.9, 0.30, 0.06, [("长度", ["1m", "2m"])]),
    ("SM", "20000mAh大容量充电宝", 129, 0.50, 0.45, [("颜色", ["白色", "黑色"])]),
    ("SM", "高清钢化膜2片装", 19.9, 0.20, 0.03,
     [("型号", ["iPhone 15", "iPhone 15 Pro", "iPhone 16", "iPhone 16 Pro"])]),
    ("MY", "婴儿纯棉连体衣", 79, 0.40, 0.20, [("颜色", ["米白", "浅黄"]), ("尺码", ["59cm", "66cm", "73cm"])]),
    ("MY", "超薄透气拉拉裤", 99, 0.55, 1.30, [("尺码", ["L", "XL", "XXL"])]),
    ("MY", "婴儿手口湿巾80抽", 29.9, 0.50, 1.00, [("规格", ["3包装", "6包装"])]),
    ("MY", "儿童316保温水杯", 89, 0.40, 0.40, [("颜色", ["粉色", "蓝色"])]),
]
# category, bundle product name, how many bundle SKUs (15 in all)
BUNDLES = [
    ("SP", "零食礼包组合装", 3),
    ("SP", "早餐下午茶组合装", 2),
    ("MZ", "护肤套装组合", 3),
    ("FZ", "服饰搭配组合装", 2),
    ("JJ", "家居好物组合装", 2),
    ("SM", "数码配件组合装", 2),
    ("MY", "母婴囤货组合装", 1),
]

CLOSE_REASONS = ["买家取消", "买家取消", "超时未付款，交易自动关闭", "买家不想买了",
                 "信息填写错误，重新拍", "拍错了/多拍了"]
HOLD_NOTES = {
    "out_of_stock": "仓库实物缺货，等待补货",
    "address_incomplete": "收货地址缺少门牌号，已联系买家补充",
    "manual": "买家要求延迟发货",
}
PLATFORM_STATUS = {
    "taobao": {"pending_payment": "WAIT_BUYER_PAY", "to_audit": "WAIT_SELLER_SEND_GOODS",
               "to_ship": "WAIT_SELLER_SEND_GOODS", "shipped": "WAIT_BUYER_CONFIRM_GOODS",
               "completed": "TRADE_FINISHED", "closed": "TRADE_CLOSED_BY_TAOBAO"},
    "jd": {"to_audit": "WAIT_SELLER_STOCK_OUT", "to_ship": "WAIT_SELLER_STOCK_OUT",
           "shipped": "WAIT_GOODS_RECEIVE_CONFIRM", "completed": "FINISHED_L", "closed": "TRADE_CANCELED"},
    "pdd": {"to_audit": "1", "to_ship": "1", "shipped": "2", "completed": "3"},
}
PLATFORM_STATUS["tmall"] = PLATFORM_STATUS["taobao"]
# Platforms whose open API exposes unpaid / cancelled-unpaid orders.
UNPAID_PLATFORMS = {
    "pending_payment": {"taobao", "tmall"},
    "closed": {"taobao", "tmall", "jd"},
}
# carrier code: weight, per platform
CARRIER_WEIGHTS = {
    "default": {"ZTO": 25, "YTO": 22, "YUNDA": 18, "JT": 14, "STO": 10, "SF": 8, "EMS": 2, "POSTB": 1},
    "jd": {"JD": 80, "SF": 15, "ZTO": 5},
}
# Hours of day (Asia/Shanghai) weighted like real shopping traffic.
HOUR_WEIGHT = [4, 2, 1, 1, 1, 1, 2, 4, 6, 8, 10, 10, 9, 8, 8, 8, 8, 8, 9, 10, 12, 13, 12, 8]

STATUS_ZH = order_status.STATUS_ZH
PLATFORM_ZH = {"taobao": "淘宝", "tmall": "天猫", "jd": "京东", "pdd": "拼多多",
               "douyin": "抖音", "manual": "手工"}


# --- helpers -------------------------------------------------------------------
def _money(x) -> Decimal:
    return Decimal(str(x)).quantize(CENT, rounding=ROUND_HALF_UP)


def _retail(x: float) -> Decimal:
    """A shop price ending in .9 (or .90): 100.3 → 100.90."""
    if x < 1:
        return _money(x)
    return _money(math.floor(x) + 0.9)


def _weighted(rng: Random, weights: dict):
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _ean13(rng: Random) -> str:
    body = "69" + "".join(str(rng.randint(0, 9)) for _ in range(10))
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def _digits(rng: Random, n: int, first: str = "123456789") -> str:
    return rng.choice(first) + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))


class _Gen:
    """Deterministic generators of names, phones, addresses, ids."""

    def __init__(self, rng: Random):
        self.rng = rng
        self.phones: set[str] = set()
        self.barcodes: set[str] = set()
        self.tracking: set[str] = set()
        self.provinces = list(REGIONS)
        self.province_weights = [REGIONS[p][0] for p in self.provinces]

    def name(self) -> str:
        r = self.rng
        surname = r.choice(COMPOUND_SURNAMES) if r.random() < 0.01 else r.choice(SURNAMES)
        given = "".join(r.choice(GIVEN_CHARS) for _ in range(2 if r.random() < 0.7 else 1))
        return surname + given

    def phone(self) -> str:
        while True:
            p = self.rng.choice(PHONE_PREFIXES) + "".join(str(self.rng.randint(0, 9)) for _ in range(8))
            if p not in self.phones:
                self.phones.add(p)
                return p

    def address(self) -> tuple[str, str, str, str]:
        r = self.rng
        province = r.choices(self.provinces, weights=self.province_weights)[0]
        city = r.choice(list(REGIONS[province][2]))
        district = r.choice(REGIONS[province][2][city])
        road = r.choice(ROADS)
        if r.random() < 0.8:
            detail = (f"{road}{r.randint(1, 999)}号{r.choice(COMMUNITIES)}{r.randint(1, 32)}栋"
                      f"{r.randint(1, 4)}单元{r.randint(1, 28)}{r.randint(1, 4):02d}室")
        else:
            detail = (f"{road}{r.randint(1, 999)}号{r.choice(OFFICES)}{r.choice('ABCD')}座"
                      f"{r.randint(2, 30)}{r.randint(1, 20):02d}室")
        return province, city, district, detail

    def nicks(self) -> tuple[str, str]:
        r = self.rng
        roll = r.random()
        if roll < 0.35:
            suffix = str(r.randint(1, 2024)) if r.random() < 0.5 else ""
            tb = r.choice(NICK_ADJ) + r.choice(NICK_NOUN) + suffix
        elif roll < 0.75:
            tb = r.choice(NICK_PINYIN) + r.choice(["", "_", "0"]) + str(r.randint(1, 9999))
        else:
            tb = "tb" + _digits(r, 10)
        jd = "jd_" + "".join(r.choice("0123456789abcdef") for _ in range(13))
        return tb, jd

    def barcode(self) -> str:
        while True:
            b = _ean13(self.rng)
            if b not in self.barcodes:
                self.barcodes.add(b)
                return b

    def platform_order_id(self, platform: str, created: dt.datetime) -> str:
        r = self.rng
        if platform in ("taobao", "tmall"):
            return _digits(r, r.choice([18, 19, 19]), "1234")
        if platform == "pdd":
            return created.astimezone(SH).strftime("%y%m%d") + "-" + _digits(r, 15)
        if platform == "jd":
            return _digits(r, 12, "23")
        return "M" + _digits(r, 14)

    def tracking_number(self, carrier: str, r: Random) -> str:
        formats = {
            "SF": lambda: "SF" + _digits(r, 13),
            "YTO": lambda: "YT" + _digits(r, 13, "6789"),
            "ZTO": lambda: "7" + _digits(r, 13, "35"),
            "STO": lambda: "77" + _digits(r, 13),
            "YUNDA": lambda: "4" + _digits(r, 12, "3"),
            "JT": lambda: "JT" + _digits(r, 13, "35"),
            "EMS": lambda: "1" + _digits(r, 12, "01"),
            "POSTB": lambda: "9" + _digits(r, 12, "78"),
            "JD": lambda: "JDVA" + _digits(r, 11, "2"),
            "DBKD": lambda: "DPK" + _digits(r, 12, "3"),
        }
        while True:
            t = formats.get(carrier, lambda: _digits(r, 14))()
            if t not in self.tracking:
                self.tracking.add(t)
                return t


# --- master data ---------------------------------------------------------------
def _shops(rng: Random, now: dt.datetime) -> list[Shop]:
    names = [s[0] for s in SHOPS]
    existing = {s.name: s for s in db.session.scalars(select(Shop).where(Shop.name.in_(names)))}
    out = []
    sandbox_url = (current_app.config.get("OMS_SANDBOX_URL") or "").rstrip("/")
    sandbox_shops = {s.name: s for s in SANDBOX_SHOPS}
    for name, platform, _cats, _w in SHOPS:
        shop = existing.get(name)
        if shop is None:
            shop = Shop(name=name, platform=platform, platform_shop_id=_digits(rng, 9),
                        sync_interval_seconds=60, backfill_days=1, active=True, gateway_url=None,
                        created_at=now - dt.timedelta(days=rng.randint(200, 700)))
            db.session.add(shop)
        twin = sandbox_shops.get(name)
        if twin is not None and sandbox_url and not shop.app_key:
            # The demo shop syncs from its twin on the local sandbox (``flask oms sandbox``).
            shop.app_key, shop.app_secret, shop.access_token = twin.app_key, twin.app_secret, twin.access_token
            shop.platform_shop_id = twin.seller_nick
            shop.gateway_url = sandbox_url + twin.gateway_path
            shop.sync_enabled = True
        else:
            shop.sync_enabled = shop.sync_enabled if shop.app_key else False
        shop_rules.validate_shop(shop)
        out.append(shop)
    return out


def _listings(shops) -> list[str]:
    """Each demo shop's listings as its sandbox twin has them (the sandbox builds them
    deterministically from its seed), matched to our SKUs, with stock push on."""
    from app.sandbox.state import SandboxState

    from . import stock_push

    twins = {s.name: s for s in SANDBOX_SHOPS}
    if not any(shop.app_key and shop.name in twins for shop in shops):
        return []
    state = SandboxState(seed=current_app.config["OMS_SANDBOX_SEED"], rate_per_minute=0)
    total = matched = 0
    for shop in shops:
        twin = twins.get(shop.name)
        if twin is None or shop.app_key != twin.app_key:
            continue
        rows = [lst.to_dict() for lst in state.book(twin.app_key).listings.values()]
        counts = stock_push.upsert_listings(shop.id, rows)
        total += len(rows)
        matched += counts["matched"]
        if not shop.stock_push_enabled:
            shop.stock_push_enabled = True
            shop.stock_ratio, shop.stock_floor = Decimal("0.80"), 2
    db.session.commit()
    return [f"店铺商品：{total} 个（已匹配 SKU {matched} 个），库存同步已开启（比例 0.8，保底 2）"]


def _catalog(rng: Random, gen: _Gen, now: dt.datetime) -> tuple[int, int, int]:
    """Products, SKUs and bundles (get-or-create by code). Returns (products, skus, bundles) added."""
    have_products = {p.code: p for p in db.session.scalars(select(Product))}
    have_skus = {s.merchant_code: s for s in db.session.scalars(select(Sku))}
    gen.barcodes.update(s.barcode for s in have_skus.values() if s.barcode)
    created = now - dt.timedelta(days=120)
    added = [0, 0, 0]
    by_cat: dict[str, list[tuple[int, Sku]]] = {}
    counters: dict[str, int] = {}

    def product(code: str, name: str, category: str) -> Product:
        p = have_products.get(code)
        if p is None:
            p = Product(code=code, name=name, category=category, active=True, created_at=created)
            db.session.add(p)
            have_products[code] = p
            added[0] += 1
        return p

    for cat, pname, base, ratio, weight, axes in PRODUCTS:
        counters[cat] = counters.get(cat, 0) + 1
        pcode = f"{cat}{counters[cat]:03d}"
        prod = product("P-" + pcode, pname, CATEGORIES[cat][0])
        combos: list[list[tuple[str, str, int]]] = [[]]
        for axis, values in axes:
            combos = [c + [(axis, v, i)] for c in combos for i, v in enumerate(values)]
        for vno, combo in enumerate(combos, start=1):
            code = f"{pcode}-{vno:02d}"
            mult = 1.0
            for axis, _v, i in combo:
                mult *= 1 + PRICE_STEP.get(axis, 0) * i
            sku = have_skus.get(code)
            if sku is None:
                sale = _money(base) if mult == 1 else _retail(base * mult)
                cost = min(_money(float(sale) * ratio * rng.uniform(0.9, 1.1)), sale - CENT)
                wmult = 1 + (mult - 1) * 1.1
                sku = Sku(product=prod, merchant_code=code, name=pname,
                          spec=";".join(f"{a}:{v}" for a, v, _i in combo), barcode=gen.barcode(),
                          cost_price=cost, sale_price=sale,
                          weight_kg=Decimal(str(round(weight * wmult, 3))), is_bundle=False,
                          low_stock_threshold=rng.choice([10, 20, 30, 50]) if rng.random() < 0.35 else None,
                          active=True, created_at=created)
                catalog.validate_sku(sku)
                db.session.add(sku)
                have_skus[code] = sku
                added[1] += 1
            by_cat.setdefault(cat, []).append((counters[cat], sku))

    bundle_no = 0
    for cat, bname, count in BUNDLES:
        bundle_no += 1
        prod = product(f"P-ZH{bundle_no:02d}", bname, CATEGORIES[cat][0])
        for k in range(count):
            code = f"ZH{bundle_no:02d}-{k + 1:02d}"
            if code in have_skus:
                continue
            pool = by_cat[cat]
            want = 3 if rng.random() < 0.4 else 2
            picks: list[Sku] = []
            used_products = set()
            for pno, sku in rng.sample(pool, len(pool)):
                if pno not in used_products:
                    picks.append(sku)
                    used_products.add(pno)
                if len(picks) == want:
                    break
            qtys = [2 if (rng.random() < 0.25 and s.sale_price < 60) else 1 for s in picks]
            total = sum((s.sale_price * q for s, q in zip(picks, qtys)), Decimal("0"))
            sale = _retail(float(total) * rng.uniform(0.82, 0.92))
            cost = sum((s.cost_price * q for s, q in zip(picks, qtys)), Decimal("0"))
            spec = "组合:" + "+".join(f"{s.name}({s.spec})×{q}" for s, q in zip(picks, qtys))
            sku = Sku(product=prod, merchant_code=code, name=f"{bname} {chr(ord('A') + k)}款",
                      spec=spec[:200], barcode=gen.barcode(), cost_price=cost, sale_price=sale,
                      weight_kg=sum((Decimal(s.weight_kg) * q for s, q in zip(picks, qtys)), Decimal("0")),
                      is_bundle=True, active=True, created_at=created)
            catalog.validate_sku(sku)
            db.session.add(sku)
            for s, q in zip(picks, qtys):
                comp = BundleComponent(bundle=sku, component=s, quantity=q)
                catalog.validate_component(comp)
                db.session.add(comp)
            have_skus[code] = sku
            added[2] += 1
    db.session.flush()
    return added[0], added[1], added[2]


def _warehouses() -> dict[str, Warehouse]:
    out = {}
    for code, name, province, city, address, contact, phone, priority in WAREHOUSES:
        wh = db.session.scalars(select(Warehouse).where(Warehouse.code == code)).first()
        if wh is None:
            wh = Warehouse(code=code, name=name, province=province, city=city, address=address,
                           contact=contact, phone=phone, priority=priority, active=True)
            db.session.add(wh)
        out[code] = wh
    db.session.flush()
    return out


def _stock(rng: Random, warehouses: dict[str, Warehouse], now: dt.datetime) -> tuple[int, int]:
    """Opening stock: one Stock row per warehouse × non-bundle SKU, each non-zero one backed by
    an inbound movement, so the ledger sums equal the stock rows."""
    when = now - dt.timedelta(days=91)
    have = {tuple(r) for r in db.session.execute(select(Stock.warehouse_id, Stock.sku_id))}
    skus = db.session.scalars(select(Sku).where(Sku.is_bundle.is_(False)).order_by(Sku.merchant_code)).all()
    rows = movements = 0
    for wh in warehouses.values():
        top = 300 if wh.priority == 1 else (200 if wh.priority == 2 else 150)
        for sku in skus:
            if (wh.id, sku.id) in have:
                continue
            on_hand = 0 if rng.random() < 0.1 else rng.randint(5, top)
            db.session.add(Stock(warehouse_id=wh.id, sku_id=sku.id, on_hand=on_hand, reserved=0,
                                 updated_at=when))
            rows += 1
            if on_hand:
                db.session.add(StockMovement(warehouse_id=wh.id, sku_id=sku.id, movement_type="inbound",
                                             on_hand_delta=on_hand, reserved_delta=0, source_ref=INIT_REF,
                                             note="期初库存（演示数据）", created_at=when))
                movements += 1
    db.session.flush()
    return rows, movements


# --- orders --------------------------------------------------------------------
def _quota(n: int, shares) -> list[str]:
    counts = {k: int(round(n * s)) for k, s in shares}
    counts["completed"] += n - sum(counts.values())
    if counts["completed"] < 0:  # tiny n: take the excess from the largest others
        for k in sorted(counts, key=counts.get, reverse=True):
            while counts["completed"] < 0 and counts[k] > 0 and k != "completed":
                counts[k] -= 1
                counts["completed"] += 1
    out = [k for k, _s in shares for _ in range(counts[k])]
    return out


class _Timeline:
    """Past times relative to ``now``. Every call draws the same number of random values
    whatever ``now`` is, so a seed gives the same orders on any day (only the times move)."""

    def __init__(self, rng: Random, now: dt.datetime):
        self.rng = rng
        self.now = now
        self.latest = now - dt.timedelta(minutes=5)

    def created(self, min_hours: float, max_hours: float, scale_hours: float = 0) -> dt.datetime:
        """A time between ``max_hours`` and ``min_hours`` ago, at a shopping hour (HOUR_WEIGHT).

        With ``scale_hours`` the age is exponential (truncated to the window): recent
        orders are more frequent, so the daily volume decays smoothly into the past.
        """
        r = self.rng
        u = r.random()
        span = max_hours - min_hours
        if scale_hours:
            age = min_hours - scale_hours * math.log(1 - u * (1 - math.exp(-span / scale_hours)))
        else:
            age = min_hours + span * u
        drawn = self.now - dt.timedelta(hours=age)
        hour = r.choices(range(24), weights=HOUR_WEIGHT)[0]
        second = r.randrange(3600)
        local = drawn.astimezone(SH)
        t = local.replace(hour=hour, minute=second // 60, second=second % 60, microsecond=0)
        if t - local > dt.timedelta(hours=12):
            t -= dt.timedelta(days=1)
        elif local - t > dt.timedelta(hours=12):
            t += dt.timedelta(days=1)
        t = t.astimezone(UTC)
        if not self.now - dt.timedelta(hours=max_hours) <= t <= self.now - dt.timedelta(hours=min_hours):
            t = drawn
        return t.replace(microsecond=0)

    def after(self, t: dt.datetime, min_minutes: float, max_minutes: float) -> dt.datetime:
        """A time ``min_minutes``–``max_minutes`` after ``t``; the window shrinks to stay in the past."""
        u = self.rng.random()
        room = (self.latest - t).total_seconds() / 60
        if room <= 0:
            return (t + dt.timedelta(seconds=20)).replace(microsecond=0)
        hi = min(max_minutes, room)
        lo = min(min_minutes, hi / 2)
        return (t + dt.timedelta(minutes=lo + (hi - lo) * u)).replace(microsecond=0)


DAY = 24
# When an order in this final status was created: hours ago (min, max, exponential scale).
CREATED_WINDOW = {
    "pending_payment": (0.1, 1 * DAY, 0),
    "to_audit": (0.2, 5 * DAY, 1.5 * DAY),
    "to_ship": (2, 7 * DAY, 2.5 * DAY),
    "shipped": (1 * DAY, 14 * DAY, 5 * DAY),
    "completed": (5 * DAY, 90 * DAY, 40 * DAY),
    "closed": (2, 90 * DAY, 0),
}


def _persons(rng: Random, gen: _Gen, n: int) -> list[dict]:
    """Buyers with how many orders each; about RETURNING_SHARE of them order more than once."""
    people: list[dict] = []
    slots = 0
    while slots < n:
        k = 1
        if rng.random() < RETURNING_SHARE:
            k = rng.choices([2, 3, 4, 5], weights=[60, 25, 10, 5])[0]
        k = min(k, n - slots)
        province, city, district, detail = gen.address()
        tb, jd = gen.nicks()
        people.append({"name": gen.name(), "phone": gen.phone(), "province": province, "city": city,
                       "district": district, "address": detail, "tb": tb, "jd": jd, "k": k,
                       "shops": []})
        slots += k
    return people


def _plan_orders(rng: Random, gen: _Gen, tl: _Timeline, n: int, shops: list[Shop],
                 taken: set[tuple[str, str]]) -> list[dict]:
    statuses = _quota(n, STATUS_SHARE)
    rng.shuffle(statuses)
    people = _persons(rng, gen, n)
    slots = [p for p in people for _ in range(p["k"])]
    rng.shuffle(slots)

    open_idx = [i for i, s in enumerate(statuses) if s in ("to_audit", "to_ship")]
    to_audit_idx = [i for i in open_idx if statuses[i] == "to_audit"]
    unmatched = set(rng.sample(to_audit_idx, min(len(to_audit_idx), max(1, round(n * UNMATCHED_SHARE)))))
    holdable = [i for i in open_idx if i not in unmatched]
    held = set(rng.sample(holdable, min(len(holdable), max(1, round(len(open_idx) * HOLD_SHARE)))))

    shop_info = {name: (cats, w) for name, _p, cats, w in SHOPS}
    plans = []
    for i, status in enumerate(statuses):
        person = slots[i]
        eligible = [s for s in shops
                    if status not in UNPAID_PLATFORMS or s.platform in UNPAID_PLATFORMS[status]]
        fresh = [s for s in eligible if s.name not in person["shops"]]
        pool = fresh if (fresh and person["shops"] and rng.random() < 0.8) else eligible
        shop = rng.choices(pool, weights=[shop_info[s.name][1] for s in pool])[0]
        person["shops"].append(shop.name)
        created = tl.created(*CREATED_WINDOW[status])
        while True:
            pid = gen.platform_order_id(shop.platform, created)
            if (shop.name, pid) not in taken:
                taken.add((shop.name, pid))
                break
        # Its own generator: the rest of the order does not depend on the order in which
        # orders are created (by time, which moves with "now").
        plans.append({"status": status, "person": person, "shop": shop, "created": created,
                      "pid": pid, "cats": shop_info[shop.name][0], "unmatched": i in unmatched,
                      "held": i in held, "rng": Random(rng.getrandbits(64))})
    plans.sort(key=lambda p: p["created"])
    return plans


def _lines(rng: Random, plan: dict, sku_data: dict, codes: set[str]) -> tuple[list[dict], Decimal, Decimal]:
    """Order lines as the platform sends them, plus goods amount and discount."""
    shop = plan["shop"]
    factor = {"pdd": 0.88, "taobao": 0.97}.get(shop.platform, 1.0)
    count = rng.choices([1, 2, 3], weights=[70, 22, 8])[0]
    chosen: list[str] = []
    for _ in range(count * 3):
        if len(chosen) == count:
            break
        cat = rng.choice(plan["cats"])
        pool = sku_data["bundles"].get(cat) if rng.random() < 0.06 else None
        pool = pool or sku_data["by_cat"][cat]
        code = rng.choice(pool)
        if code not in chosen:
            chosen.append(code)
    raw = []
    for code in chosen:
        title, spec, sale = sku_data["info"][code]
        price = sale if factor == 1.0 else _retail(float(sale) * factor)
        qty = rng.choices([1, 2, 3], weights=[82, 14, 4])[0]
        raw.append([code, title, spec, qty, price])
    if plan["unmatched"]:
        line = raw[rng.randrange(len(raw))]
        while True:  # an old or mistyped merchant code that is not in the catalogue
            bad = rng.choice([line[0] + "A", line[0].replace("-", "-9"), "TMP-" + _digits(rng, 4)])
            if bad not in codes:
                break
        line[0] = bad
    goods = sum((p * q for _c, _t, _s, q, p in raw), Decimal("0.00"))
    discount = Decimal("0.00")
    if rng.random() < 0.4:
        for threshold, off in ((299, 30), (199, 20), (99, 10)):
            if goods >= threshold:
                discount = Decimal(off)
                break
    if rng.random() < 0.2 and goods > 30:
        discount += Decimal(rng.choice([3, 5]))
    discount = _money(discount)
    lines = []
    left = discount
    for idx, (code, title, spec, qty, price) in enumerate(raw, start=1):
        total = price * qty
        share = left if idx == len(raw) else _money(discount * total / goods)
        share = min(share, left, total)
        left -= share
        if shop.platform in ("taobao", "tmall"):
            line_id = _digits(rng, 19, "1234")
        else:
            line_id = str(idx)
        lines.append({"platform_line_id": line_id, "merchant_code": code, "title": title, "spec": spec,
                      "quantity": qty, "price": price, "paid_amount": total - share})
    return lines, goods, discount - left


def _create_orders(gen: _Gen, now: dt.datetime, plans: list[dict], sku_data: dict,
                   skus_by_code: dict, carriers: dict[str, int], warehouses: dict[str, Warehouse]) -> int:
    """Create, move on and back-date every planned order; returns how many were held.

    Autoflush is off (it would flush several times per order); we flush every FLUSH
    orders instead, and early when a buyer comes back to the same shop, because
    ``link_customer`` looks the customer × shop link up with ``Session.get``, which
    does not see a link that is still pending. New customers are flushed by
    ``link_customer`` itself, so the phone lookup always sees them.
    """
    holds = 0
    wh_ids = {code: wh.id for code, wh in warehouses.items()}
    pending_links: set[tuple[str, str]] = set()
    with db.session.no_autoflush:
        for n, plan in enumerate(plans, start=1):
            link = (plan["person"]["phone"], plan["shop"].name)
            if link in pending_links:
                db.session.flush()
                pending_links.clear()
            pending_links.add(link)
            holds += _create_one(gen, now, plan, sku_data, skus_by_code, carriers, wh_ids)
            if n % BATCH == 0:
                db.session.commit()
                pending_links.clear()
                # Reload the expired catalogue in one query, not one per SKU.
                db.session.scalars(select(Sku)).all()
            elif n % FLUSH == 0:
                db.session.flush()
                pending_links.clear()
        db.session.commit()
    return holds


def _create_one(gen: _Gen, now: dt.datetime, plan: dict, sku_data: dict,
                skus_by_code: dict, carriers: dict[str, int], wh_ids: dict[str, int]) -> int:
    rng = plan["rng"]
    tl = _Timeline(rng, now)
    holds = 0
    status = plan["status"]
    shop = plan["shop"]
    platform = shop.platform
    person = plan["person"]
    lines, goods, discount = _lines(rng, plan, sku_data, sku_data["codes"])
    post_fee = Decimal("0.00") if (goods >= 49 or platform == "pdd") else Decimal(rng.choice([6, 8, 10]))
    created = plan["created"]
    paid = None if status in ("pending_payment", "closed") else tl.after(created, 0.3, 25)
    create_status = "pending_payment" if paid is None else "to_audit"
    nick = {"taobao": person["tb"], "tmall": person["tb"], "jd": person["jd"]}.get(platform)
    flag = rng.randint(1, 5) if rng.random() < FLAG_SHARE else 0
    memo = rng.choice(SELLER_MEMOS) if rng.random() < (0.5 if flag else MEMO_SHARE * 0.6) else None
    data = {
        "platform_order_id": plan["pid"],
        "status": create_status,
        "platform_status": PLATFORM_STATUS.get(platform, {}).get(status),
        "goods_amount": goods,
        "discount_amount": discount,
        "post_fee": post_fee,
        "paid_amount": goods - discount + post_fee,
        "buyer_nick": nick,
        "receiver_name": person["name"],
        "receiver_phone": person["phone"],
        "receiver_province": person["province"],
        "receiver_city": person["city"],
        "receiver_district": person["district"],
        "receiver_address": person["address"],
        "buyer_message": rng.choice(BUYER_MESSAGES) if rng.random() < MESSAGE_SHARE else None,
        "seller_memo": memo,
        "flag": flag,
        "platform_created_at": created,
        "paid_at": paid,
        "platform_modified_at": paid or created,
        "lines": lines,
    }
    order = orders.create_order(shop, data, source="import", skus_by_code=skus_by_code)
    imported = tl.after(paid or created, 0.5, 3)
    order.created_at = imported
    if order.customer is not None and order.customer.order_count == 1:
        order.customer.created_at = imported
    times = {"create": imported}
    hold_at = None
    last = paid or created

    # History: the opening stock (_stock) is what is left after these orders, so their
    # transitions move no stock (stock=False).
    if status in ("to_ship", "shipped", "completed"):
        order.warehouse_id = wh_ids[REGIONS[person["province"]][1]]
        order.audited_at = times["audit"] = tl.after(imported, 5, 360)
        order_status.apply(order, "audit", source="sync", stock=False)
    if status in ("shipped", "completed"):
        carrier = _weighted(rng, CARRIER_WEIGHTS.get(platform, CARRIER_WEIGHTS["default"]))
        order.carrier_id = carriers[carrier]
        order.tracking_number = gen.tracking_number(carrier, rng)
        order.shipped_at = times["ship"] = last = tl.after(order.audited_at, 30, 40 * 60)
        order_status.apply(order, "ship", source="sync", stock=False)
        if status == "shipped" and order.shipped_at >= tl.now - dt.timedelta(days=3):
            # Parcels of the last days are on their way: track them (older history is not).
            from . import tracking

            tracking.start_tracking(order)
        # History: these tracking numbers reached the platform long ago.
        order.writeback_status, order.writeback_at = "done", order.shipped_at
    if status == "completed":
        order.completed_at = times["complete"] = last = tl.after(order.shipped_at, 2 * 1440, 10 * 1440)
        order_status.apply(order, "complete", source="sync", stock=False)
    if status == "closed":
        order.closed_at = times["cancel"] = last = tl.after(imported, 15, 24 * 60)
        order_status.apply(order, "cancel", source="sync", reason=rng.choice(CLOSE_REASONS), stock=False)
    if plan["held"]:
        reason = rng.choice(list(HOLD_NOTES))
        hold_at = tl.after(order.audited_at or imported, 5, 600)
        order_status.hold(order, reason, note=HOLD_NOTES[reason], source="sync")
        holds += 1
    if plan["unmatched"]:
        hold_at = hold_at or tl.after(imported, 0, 0.1)
        holds += 1
    order.platform_modified_at = last

    # The services stamp "now": move the trail to when it happened.
    for ev in order.events:
        ev.created_at = times.get(ev.action) or hold_at or imported
    if hold_at is not None:
        for h in order.holds:
            h.created_at = hold_at
    order.updated_at = max(t for t in [imported, hold_at, *times.values()] if t is not None)
    return holds


# --- users ---------------------------------------------------------------------
DEMO_USERS = [
    # username, role, all shops
    ("ops", setup.ROLE_OPS, True),
    ("cs", setup.ROLE_CS, False),
    ("warehouse", setup.ROLE_WAREHOUSE, True),
    ("finance", setup.ROLE_FINANCE, True),
]


def _users(shops: list[Shop]) -> list[str]:
    sm = appbuilder.sm
    fixed = os.environ.get("OMS_DEMO_PASSWORD") or None
    report = []
    for username, role_name, all_shops in DEMO_USERS:
        if sm.find_user(username=username) is not None:
            report.append(f"演示用户 {username}（{role_name}）已存在，跳过（密码未修改）")
            continue
        role = sm.find_role(role_name)
        if role is None:
            raise RuntimeError(f"角色「{role_name}」不存在，请先运行 flask oms init")
        password = fixed or secrets.token_urlsafe(9)
        user = sm.add_user(username, "演示", role_name, f"{username}@demo.example.com", role, password)
        if not user:
            raise RuntimeError(f"创建演示用户 {username} 失败")
        user.all_shops = all_shops
        user.shops = [] if all_shops else shops[: len(shops) // 2]
        db.session.commit()
        scope = "全部店铺" if all_shops else "、".join(s.name for s in user.shops)
        shown = "来自 OMS_DEMO_PASSWORD" if fixed else password
        report.append(f"演示用户 {username}（{role_name}）密码：{shown}；可见店铺：{scope}")
    return report


# --- entry point ---------------------------------------------------------------
def create_demo(order_count: int = 5000, force: bool = False, seed: int = 20261125, *,
                now: Optional[dt.datetime] = None) -> list[str]:
    """Create the demo shop group; returns zh report lines. Raises DemoExists if orders exist.

    The same seed gives the same shops, catalogue, buyers and orders; only the times
    follow ``now`` (default: the current time; tests pin it).
    """
    started = time.perf_counter()
    if not force and db.session.execute(select(Order.id).limit(1)).first() is not None:
        raise DemoExists("数据库中已有订单，跳过演示数据（使用 --force 强制生成）")
    if order_count < 0:
        raise ValueError("order_count must be >= 0")
    for _u, role_name, _a in DEMO_USERS:
        if appbuilder.sm.find_role(role_name) is None:
            raise RuntimeError(f"角色「{role_name}」不存在，请先运行 flask oms init")

    rng = Random(seed)
    gen = _Gen(rng)
    now = (now or dt.datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    tl = _Timeline(rng, now)
    report = [f"演示数据（随机种子 {seed}）："]
    try:
        shops = _shops(rng, now)
        n_products, n_skus, n_bundles = _catalog(rng, gen, now)
        warehouses = _warehouses()
        stock_rows, stock_moves = _stock(rng, warehouses, now)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    report += setup.seed_carriers()
    report += _listings(shops)

    # Preload the catalogue once: plain values for planning, Sku objects for create_order.
    skus = db.session.scalars(select(Sku).where(Sku.active.is_(True))).all()
    skus_by_code = {s.merchant_code: s for s in skus}
    cat_of = {p.id: code for code, (zh, _t) in CATEGORIES.items()
              for p in db.session.scalars(select(Product).where(Product.category == zh))}
    sku_data: dict = {"info": {}, "by_cat": {}, "bundles": {}, "codes": set(skus_by_code)}
    for s in sorted(skus, key=lambda s: s.merchant_code):
        cat = cat_of.get(s.product_id)
        if cat is None:
            continue
        sku_data["info"][s.merchant_code] = (f"{s.name} {CATEGORIES[cat][1]}", s.spec, s.sale_price)
        sku_data["bundles" if s.is_bundle else "by_cat"].setdefault(cat, []).append(s.merchant_code)
    carriers = {c.code: c.id for c in db.session.scalars(select(Carrier))}
    gen.tracking.update(t for (t,) in db.session.execute(
        select(Order.tracking_number).where(Order.tracking_number.is_not(None))))
    shop_ids = {s.id: s for s in shops}
    taken = {(shop_ids[sid].name, pid) for sid, pid in db.session.execute(
        select(Order.shop_id, Order.platform_order_id).where(Order.shop_id.in_(list(shop_ids))))}

    plans = _plan_orders(rng, gen, tl, order_count, shops, taken)
    try:
        holds = _create_orders(gen, now, plans, sku_data, skus_by_code, carriers, warehouses)
    except Exception:
        db.session.rollback()
        raise
    user_lines = _users(shops)
    tiers_changed = customers.recompute_tiers()

    # --- report ---------------------------------------------------------------
    by_platform: dict[str, int] = {}
    for s in shops:
        by_platform[s.platform] = by_platform.get(s.platform, 0) + 1
    report.append(f"店铺：{len(shops)} 家（" + "、".join(
        f"{PLATFORM_ZH[p]} {c}" for p, c in by_platform.items()) + "）")
    total_skus = db.session.scalar(select(func.count(Sku.id)))
    total_bundles = db.session.scalar(select(func.count(Sku.id)).where(Sku.is_bundle.is_(True)))
    report.append(f"商品：新增 {n_products} 个；SKU：新增 {n_skus + n_bundles} 个（其中组合装 {n_bundles} 个），"
                  f"共 {total_skus} 个（组合装 {total_bundles} 个）")
    report.append(f"仓库：{len(warehouses)} 个（" + "、".join(w.name for w in warehouses.values())
                  + f"）；新增库存记录 {stock_rows} 条、期初入库流水 {stock_moves} 条")
    counts = dict(db.session.execute(
        select(Order.status, func.count(Order.id)).where(Order.shop_id.in_(list(shop_ids)))
        .group_by(Order.status)).all())
    report.append(f"订单：新增 {len(plans)} 笔，演示店铺共 {sum(counts.values())} 笔 — " + "、".join(
        f"{STATUS_ZH[s]} {counts.get(s, 0)}" for s, _x in STATUS_SHARE))
    held_now = db.session.scalar(select(func.count(Order.id)).where(Order.is_held.is_(True)))
    report.append(f"挂起：本次 {holds} 笔，当前共 {held_now} 笔")
    n_customers = db.session.scalar(select(func.count(Customer.id)))
    returning = db.session.scalar(select(func.count(Customer.id)).where(Customer.order_count >= 2))
    multi_shop = db.session.scalar(select(func.count()).select_from(
        select(CustomerShop.customer_id).group_by(CustomerShop.customer_id)
        .having(func.count(CustomerShop.shop_id) >= 2).subquery()))
    report.append(f"客户：{n_customers} 位，其中回头客 {returning} 位（跨店铺购买 {multi_shop} 位）；"
                  f"客户分层更新 {tiers_changed} 位")
    report += user_lines
    report.append(f"用时 {time.perf_counter() - started:.1f} 秒")
    return report


__all__ = ["DemoExists", "create_demo"]
