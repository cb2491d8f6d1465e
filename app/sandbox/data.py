"""Reference data for the sandbox: Chinese buyer names, phones, addresses
(province / city / district with postcodes), and the product catalogue whose
merchant codes (商家编码) appear on sandbox orders.

Plain tables only, no database and no imports from the rest of the app, so the
sandbox can run on its own (``flask oms sandbox``) and in tests.

The catalogue mirrors the demo shop group (app/services/demo.py): the same
products, the same merchant-code scheme (``<category><nnn>-<vv>``, e.g.
``FZ001-01``), the same spec text ("颜色:黑色;尺码:M") and the same sale prices, so
a database built with ``flask oms demo`` already has a SKU for every code in
:data:`CATALOGUE`. :data:`UNKNOWN_CATALOGUE` holds codes that are deliberately
not in the catalogue (about 1% of sandbox order lines use one), to exercise
the 未匹配商品 hold.
"""
from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")

SURNAMES = (
    "王王王李李李张张张刘刘陈陈杨杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董"
    "袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷"
    "侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
COMPOUND_SURNAMES = ["欧阳", "上官", "司马", "诸葛"]
GIVEN_CHARS = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏飞斌浩宇轩子涵梓欣怡诗雨佳琪"
    "晨阳思睿博文嘉俊一诺雪婷晓东海燕春梅建国志强丹凯琳晶颖慧铭泽昊然可馨若曦书瑶天佑亦辰"
)
NICK_ADJ = ["快乐的", "爱吃鱼的", "安静的", "小小", "甜甜的", "会飞的", "迷糊的", "元气", "温柔的", "努力的"]
NICK_NOUN = ["猫", "小熊", "兔子", "橙子", "鱼", "星星", "云朵", "布丁", "柠檬", "大白", "团子", "饭团"]
NICK_PINYIN = ["xiaoyu", "lele", "tiantian", "mumu", "nana", "ahua", "dabao", "xiaomi", "kiki",
               "sunny", "momo", "jiajia", "yoyo", "lucky", "coco", "doudou"]
PHONE_PREFIXES = [
    "130", "131", "132", "133", "134", "135", "136", "137", "138", "139", "150", "151", "152",
    "153", "155", "156", "157", "158", "159", "166", "170", "173", "175", "176", "177", "178",
    "180", "181", "182", "183", "184", "185", "186", "187", "188", "189", "191", "193", "195",
    "198", "199",
]

# province: (order weight, {city: (postcode, [districts])})
REGIONS: dict[str, tuple[int, dict[str, tuple[str, list[str]]]]] = {
    "浙江省": (10, {"杭州市": ("310000", ["西湖区", "余杭区", "拱墅区", "滨江区"]),
                   "宁波市": ("315000", ["海曙区", "鄞州区", "江北区"]),
                   "温州市": ("325000", ["鹿城区", "瓯海区", "龙湾区"])}),
    "江苏省": (10, {"南京市": ("210000", ["玄武区", "鼓楼区", "江宁区", "建邺区"]),
                   "苏州市": ("215000", ["姑苏区", "吴中区", "相城区", "虎丘区"]),
                   "无锡市": ("214000", ["梁溪区", "滨湖区", "新吴区"])}),
    "广东省": (13, {"广州市": ("510000", ["天河区", "越秀区", "海珠区", "番禺区"]),
                   "深圳市": ("518000", ["南山区", "福田区", "宝安区", "龙岗区"]),
                   "佛山市": ("528000", ["禅城区", "南海区", "顺德区"])}),
    "上海市": (8, {"上海市": ("200000", ["浦东新区", "徐汇区", "静安区", "闵行区"])}),
    "北京市": (7, {"北京市": ("100000", ["朝阳区", "海淀区", "东城区", "丰台区"])}),
    "天津市": (2, {"天津市": ("300000", ["和平区", "南开区", "河西区"])}),
    "重庆市": (3, {"重庆市": ("400000", ["渝中区", "江北区", "南岸区", "渝北区"])}),
    "四川省": (5, {"成都市": ("610000", ["武侯区", "锦江区", "青羊区", "金牛区"]),
                   "绵阳市": ("621000", ["涪城区", "游仙区"])}),
    "山东省": (6, {"济南市": ("250000", ["历下区", "市中区", "槐荫区"]),
                   "青岛市": ("266000", ["市南区", "市北区", "黄岛区", "崂山区"])}),
    "河南省": (4, {"郑州市": ("450000", ["金水区", "二七区", "中原区"]),
                   "洛阳市": ("471000", ["西工区", "涧西区", "洛龙区"])}),
    "湖北省": (4, {"武汉市": ("430000", ["武昌区", "江汉区", "洪山区", "江岸区"])}),
    "湖南省": (4, {"长沙市": ("410000", ["岳麓区", "芙蓉区", "天心区", "雨花区"])}),
    "福建省": (4, {"福州市": ("350000", ["鼓楼区", "台江区", "仓山区"]),
                   "厦门市": ("361000", ["思明区", "湖里区", "集美区"])}),
    "安徽省": (3, {"合肥市": ("230000", ["蜀山区", "包河区", "庐阳区"])}),
    "江西省": (2, {"南昌市": ("330000", ["东湖区", "西湖区", "红谷滩区"])}),
    "河北省": (3, {"石家庄市": ("050000", ["长安区", "桥西区", "裕华区"]),
                   "保定市": ("071000", ["竞秀区", "莲池区"])}),
    "陕西省": (3, {"西安市": ("710000", ["雁塔区", "碑林区", "未央区", "长安区"])}),
    "辽宁省": (3, {"沈阳市": ("110000", ["和平区", "沈河区", "浑南区"]),
                   "大连市": ("116000", ["中山区", "沙河口区", "甘井子区"])}),
    "黑龙江省": (2, {"哈尔滨市": ("150000", ["南岗区", "道里区", "香坊区"])}),
    "广西壮族自治区": (2, {"南宁市": ("530000", ["青秀区", "兴宁区", "西乡塘区"])}),
    "云南省": (2, {"昆明市": ("650000", ["五华区", "盘龙区", "官渡区"])}),
    "新疆维吾尔自治区": (1, {"乌鲁木齐市": ("830000", ["天山区", "沙依巴克区", "新市区"])}),
}
# Flattened (province, city, district, postcode) with weights, for fast sampling.
PLACES: list[tuple[str, str, str, str]] = []
PLACE_WEIGHTS: list[float] = []
for _prov, (_w, _cities) in REGIONS.items():
    _n = sum(len(d) for _z, d in _cities.values())
    for _city, (_zip, _districts) in _cities.items():
        for _d in _districts:
            PLACES.append((_prov, _city, _d, _zip))
            PLACE_WEIGHTS.append(_w / _n)

PLACE_CUM_WEIGHTS: list[float] = list(__import__("itertools").accumulate(PLACE_WEIGHTS))

ROADS = ["人民路", "解放路", "中山路", "建设路", "和平路", "新华路", "文化路", "幸福路", "长江路",
         "黄河路", "朝阳路", "胜利路", "光明路", "学府路", "滨江路", "科技路", "东风路", "青年路",
         "工业大道", "世纪大道", "环城北路", "南京东路", "文一西路", "天目山路", "育才街", "府前街"]
COMMUNITIES = ["阳光花园", "锦绣华庭", "翠苑小区", "金色家园", "碧桂园", "万科城", "绿城桂花园",
               "滨江花园", "明珠苑", "书香名邸", "幸福里", "和平新村", "枫林湾", "香樟园", "紫金苑",
               "世纪新城", "龙湖春江郦城", "保利香槟国际", "恒大名都", "融创玖玺台"]
OFFICES = ["国际大厦", "科技园", "创业大厦", "金融中心", "软件园", "商务中心"]

BUYER_MESSAGES = ["请尽快发货，谢谢", "不要放快递柜，送货上门", "送人的，不要放价格单", "能发顺丰吗？运费可以补",
                  "工作日白天家里没人，请放门卫", "麻烦检查一下再发，上次有破损", "颜色别发错哦",
                  "包装好一点，谢谢", "生日礼物，周五前能到吗", "请附赠小样，谢谢老板"]
SELLER_MEMOS = ["已备注赠品：小样×2", "客户要求顺丰，已补运费差价", "老客户，发货前电话确认",
                "换色：改发黑色", "已联系买家确认地址", "加急，优先发货", "开电子发票，抬头见聊天记录",
                "买家要求分开包装"]

# Carrier codes each protocol uses on write-back, keyed by our carrier code. Used only
# when the sandbox itself ships an order (admin "ship" event, seeded shipped orders);
# write-back calls accept any code. Taobao codes follow taobao.logistics.companies.get
# naming; the PDD logistics_id numbers and JD logiCoprId values are UNCONFIRMED
# stand-ins (the real lists come from pdd.logistics.companies.get / JD 承运商 API).
CARRIERS = {
    "top": {"ZTO": "ZTO", "YTO": "YTO", "YUNDA": "YUNDA", "STO": "STO", "SF": "SF", "EMS": "EMS",
            "JT": "JTSD"},
    "pdd": {"ZTO": "115", "YTO": "85", "YUNDA": "121", "STO": "1", "SF": "44", "EMS": "118",
            "JT": "384"},
    "jd": {"JD": "2087", "SF": "467", "ZTO": "463", "YTO": "463", "YUNDA": "1327", "STO": "470",
           "EMS": "465", "JT": "1499"},
}
TRACKING_PREFIX = {"ZTO": "7", "YTO": "YT", "YUNDA": "4", "STO": "77", "SF": "SF", "EMS": "1",
                   "JT": "JT", "JD": "JDVA"}

CATEGORIES = {
    "FZ": ("服装鞋包", "新款 宽松百搭 舒适透气"),
    "SP": ("食品", "休闲零食 办公室囤货 新鲜直发"),
    "MZ": ("美妆个护", "官方正品 温和不刺激"),
    "JJ": ("家居日用", "家用 简约现代 耐用"),
    "SM": ("数码配件", "适用苹果华为小米"),
    "MY": ("母婴", "宝宝用品 安全无添加"),
}
# category, product name, base sale price, spec axes (same table as app/services/demo.py)
PRODUCTS = [
    ("FZ", "纯棉圆领短袖T恤", 59, [("颜色", ["黑色", "白色", "灰色"]), ("尺码", ["M", "L", "XL"])]),
    ("FZ", "重磅纯棉宽松卫衣", 129, [("颜色", ["黑色", "燕麦色", "雾蓝"]), ("尺码", ["M", "L", "XL"])]),
    ("FZ", "高腰直筒牛仔裤", 139, [("颜色", ["浅蓝", "深蓝"]), ("尺码", ["26", "27", "28"])]),
    ("FZ", "冰丝防晒衣", 89, [("颜色", ["白色", "浅粉", "天蓝"]), ("尺码", ["均码"])]),
    ("FZ", "加厚连帽羽绒服", 399, [("颜色", ["黑色", "军绿"]), ("尺码", ["L", "XL", "XXL"])]),
    ("FZ", "软糯针织开衫", 119, [("颜色", ["米白", "雾霾蓝"]), ("尺码", ["S", "M", "L"])]),
    ("FZ", "休闲工装裤", 109, [("颜色", ["卡其", "黑色"]), ("尺码", ["L", "XL"])]),
    ("FZ", "法式碎花连衣裙", 159, [("颜色", ["蓝色碎花", "黄色碎花"]), ("尺码", ["S", "M", "L"])]),
    ("FZ", "莫代尔家居服套装", 99, [("颜色", ["灰粉", "藏青"]), ("尺码", ["M", "L", "XL"])]),
    ("FZ", "纯棉中筒袜5双装", 29.9, [("颜色", ["混色", "黑色", "白色"]), ("尺码", ["均码"])]),
    ("FZ", "百搭帆布鞋", 79, [("颜色", ["白色", "黑色"]), ("尺码", ["38", "39", "40", "41"])]),
    ("FZ", "轻便透气运动跑鞋", 199, [("颜色", ["黑白", "灰蓝"]), ("尺码", ["40", "41", "42", "43"])]),
    ("FZ", "大容量双肩电脑背包", 139, [("颜色", ["黑色", "灰色", "藏青"])]),
    ("SP", "每日坚果混合装", 69, [("规格", ["25g×15包", "25g×30包"])]),
    ("SP", "内蒙古手撕风干牛肉干", 69, [("口味", ["原味", "香辣", "孜然"]), ("规格", ["250g"])]),
    ("SP", "云南小粒咖啡挂耳", 39.9, [("规格", ["10g×20片", "10g×50片"])]),
    ("SP", "五常稻花香大米", 59, [("规格", ["2.5kg", "5kg"])]),
    ("SP", "新疆和田大枣特级", 49.9, [("规格", ["500g", "1000g"])]),
    ("SP", "明前西湖龙井茶叶", 268, [("规格", ["100g罐装", "250g礼盒"])]),
    ("SP", "柳州螺蛳粉", 39.9, [("口味", ["原味", "加辣"]), ("规格", ["5袋装"])]),
    ("SP", "低脂全麦吐司面包", 29.9, [("口味", ["原味", "黑麦"]), ("规格", ["1000g整箱"])]),
    ("SP", "手工即食阿胶糕", 98, [("口味", ["原味", "玫瑰"]), ("规格", ["500g"])]),
    ("SP", "东北长白山黑木耳", 39.9, [("规格", ["250g", "500g"])]),
    ("SP", "农家纯正土蜂蜜", 59, [("规格", ["500g", "1000g"])]),
    ("MZ", "玻尿酸补水面膜", 49, [("规格", ["10片装", "20片装"])]),
    ("MZ", "氨基酸洁面乳", 59, [("规格", ["100g", "150g"])]),
    ("MZ", "烟酰胺亮肤精华液", 159, [("规格", ["30ml", "50ml"])]),
    ("MZ", "哑光丝绒口红", 99, [("色号", ["#01 正红", "#02 豆沙", "#03 枫叶红", "#05 奶茶"])]),
    ("MZ", "清爽防晒乳SPF50+", 69, [("规格", ["30ml", "50ml"])]),
    ("MZ", "修护保湿面霜", 159, [("规格", ["30g", "50g"])]),
    ("MZ", "温和卸妆水", 49, [("规格", ["300ml", "500ml"])]),
    ("MZ", "控油蓬松洗发水", 59, [("规格", ["500ml", "750ml"])]),
    ("MZ", "烟酰胺美白身体乳", 79, [("规格", ["250ml", "400ml"])]),
    ("JJ", "全棉磨毛四件套", 299, [("颜色", ["灰白格", "浅蓝", "豆沙粉"]), ("尺寸", ["1.5m床", "1.8m床"])]),
    ("JJ", "慢回弹记忆棉枕头", 129, [("规格", ["标准款", "加高款"])]),
    ("JJ", "加厚纯棉浴巾", 59, [("颜色", ["白色", "灰色", "浅蓝"])]),
    ("JJ", "可折叠收纳箱", 39.9, [("尺寸", ["小号25L", "中号45L", "大号66L"])]),
    ("JJ", "316不锈钢保温杯", 89, [("颜色", ["白色", "黑色", "雾霾蓝"]), ("容量", ["500ml"])]),
    ("JJ", "竹纤维洗碗抹布", 19.9, [("规格", ["10条装", "20条装"])]),
    ("JJ", "香薰蜡烛礼盒", 69, [("香型", ["白茶", "无花果", "雪松"])]),
    ("JJ", "陶瓷餐具套装", 159, [("规格", ["4人份", "6人份"])]),
    ("JJ", "硅藻泥浴室地垫", 39.9, [("尺寸", ["40×60cm", "50×80cm"])]),
    ("SM", "65W氮化镓快充充电器", 99, [("颜色", ["白色", "黑色"])]),
    ("SM", "降噪真无线蓝牙耳机", 199, [("颜色", ["白色", "黑色"])]),
    ("SM", "磁吸防摔手机壳", 49, [("颜色", ["透明", "黑色"]), ("型号", ["iPhone 15", "iPhone 15 Pro", "iPhone 16"])]),
    ("SM", "Type-C编织快充数据线", 29.9, [("长度", ["1m", "2m"])]),
    ("SM", "20000mAh大容量充电宝", 129, [("颜色", ["白色", "黑色"])]),
    ("SM", "高清钢化膜2片装", 19.9, [("型号", ["iPhone 15", "iPhone 15 Pro", "iPhone 16", "iPhone 16 Pro"])]),
    ("MY", "婴儿纯棉连体衣", 79, [("颜色", ["米白", "浅黄"]), ("尺码", ["59cm", "66cm", "73cm"])]),
    ("MY", "超薄透气拉拉裤", 99, [("尺码", ["L", "XL", "XXL"])]),
    ("MY", "婴儿手口湿巾80抽", 29.9, [("规格", ["3包装", "6包装"])]),
    ("MY", "儿童316保温水杯", 89, [("颜色", ["粉色", "蓝色"])]),
]
# Axes whose later options cost more: factor per step (as in the demo).
PRICE_STEP = {"规格": 0.7, "尺寸": 0.15, "容量": 0.3, "长度": 0.2}


def _money(x) -> Decimal:
    return Decimal(str(x)).quantize(CENT, rounding=ROUND_HALF_UP)


def _retail(x: float) -> Decimal:
    """A shop price ending in .9 (as the demo prices its variants): 100.3 → 100.90."""
    return _money(math.floor(x) + 0.9) if x >= 1 else _money(x)


def _build_catalogue():
    rows, info, counters = [], {}, {}
    for cat, pname, base, axes in PRODUCTS:
        counters[cat] = counters.get(cat, 0) + 1
        pcode = f"{cat}{counters[cat]:03d}"
        combos: list[list[tuple[str, str, int]]] = [[]]
        for axis, values in axes:
            combos = [c + [(axis, v, i)] for c in combos for i, v in enumerate(values)]
        for vno, combo in enumerate(combos, start=1):
            mult = 1.0
            for axis, _v, i in combo:
                mult *= 1 + PRICE_STEP.get(axis, 0) * i
            price = _money(base) if mult == 1 else _retail(base * mult)
            code = f"{pcode}-{vno:02d}"
            spec = ";".join(f"{a}:{v}" for a, v, _i in combo)
            rows.append((code, pname, spec, price))
            info[code] = (cat, pcode)
    return rows, info


#: (merchant_code, title, spec, price) for every SKU the sandbox shops sell.
#: ``spec`` is "轴:值;轴:值" as in the demo's Sku.spec; price is a Decimal in 元.
CATALOGUE: list[tuple[str, str, str, Decimal]]
#: merchant_code -> (category, product code) for CATALOGUE and UNKNOWN_CATALOGUE entries.
CODE_INFO: dict[str, tuple[str, str]]
CATALOGUE, CODE_INFO = _build_catalogue()

#: Listings whose merchant code is not in CATALOGUE (old or mistyped codes): about
#: 1% of sandbox order lines use one of these.
UNKNOWN_CATALOGUE: list[tuple[str, str, str, Decimal]] = [
    ("FZ901-01", "旧款纯棉T恤 清仓", "颜色:白色;尺码:L", Decimal("39.00")),
    ("SP901-01", "坚果礼盒 年货款", "规格:1.2kg", Decimal("99.00")),
    ("MZ901-02", "补水喷雾 旅行装", "规格:50ml", Decimal("29.90")),
    ("JJ901-01", "纯棉毛巾 3条装", "颜色:混色", Decimal("35.90")),
    ("SM901-03", "手机支架 桌面款", "颜色:银色", Decimal("25.90")),
    ("MY901-01", "婴儿口水巾 5条装", "颜色:混色", Decimal("32.90")),
]
for _code, _t, _s, _p in UNKNOWN_CATALOGUE:
    CODE_INFO[_code] = (_code[:2], _code.split("-")[0])
