"""In-memory state of the sandbox: shops, their orders that evolve over time,
per-shop fault injection, and the records of write-backs and stock pushes.

Everything is guarded by one re-entrant lock (``SandboxState.lock``); the HTTP
server holds it while it reads or changes state. Times are whole epoch seconds
(the gateways speak seconds), money is integer cents until it is rendered.

Orders are kept platform-neutral here (status ``unpaid`` / ``paid`` /
``shipped`` / ``completed`` / ``cancelled`` / ``closed`` plus a refund state)
and mapped to each platform's statuses by :func:`platform_status`.
"""
from __future__ import annotations

import contextlib
import bisect
import calendar
import datetime as dt
import hashlib
import heapq
import itertools
import json
import random
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable, Iterable, Optional, Union

import orjson

from . import data

CN_OFFSET = 8 * 3600  # the gateways speak Beijing time (UTC+8, no DST)

PROTOCOLS = {"taobao": "top", "tmall": "top", "pdd": "pdd", "jd": "jd"}
GATEWAY_PATHS = {"top": "/router/rest", "pdd": "/api/router", "jd": "/routerjson"}

ORDER_STATUSES = ("unpaid", "paid", "shipped", "completed", "cancelled", "closed")
EVENTS = ("pay", "cancel", "refund", "refund_done", "refund_close", "address", "ship", "complete")


# --- time helpers ---------------------------------------------------------------
def fmt_time(ts: Optional[float]) -> Optional[str]:
    """Epoch seconds → 'yyyy-MM-dd HH:mm:ss' in Beijing time."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(ts) + CN_OFFSET))


def parse_time(text: str) -> int:
    """'yyyy-MM-dd HH:mm:ss' Beijing time → epoch seconds (ValueError if malformed)."""
    return calendar.timegm(time.strptime(text.strip(), "%Y-%m-%d %H:%M:%S")) - CN_OFFSET


def to_epoch(value: Union[int, float, str, dt.datetime]) -> int:
    """Epoch seconds from an epoch number, an aware datetime or a Beijing time string."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime: give an aware one")
        return int(value.timestamp())
    if isinstance(value, str):
        return parse_time(value)
    return int(value)


def money(cents: int) -> str:
    """Integer cents → '12.30'."""
    sign = "-" if cents < 0 else ""
    cents = abs(int(cents))
    return f"{sign}{cents // 100}.{cents % 100:02d}"


class FastRandom(random.Random):
    """random.Random with cheaper randrange / randint / choice (built on random() and
    getrandbits); deterministic per seed, fast enough to seed 100,000 orders quickly."""

    def randrange(self, start, stop=None, step=1):
        if stop is None:
            start, stop = 0, start
        n = stop - start
        if n <= 0:
            raise ValueError("empty range for randrange")
        if n < (1 << 40):
            return start + int(self.random() * n)
        return start + self.getrandbits(n.bit_length() + 16) % n

    def randint(self, a, b):
        return self.randrange(a, b + 1)

    def choice(self, seq):
        return seq[int(self.random() * len(seq))]


# --- shops ------------------------------------------------------------------------
@dataclass(frozen=True)
class SandboxShop:
    """One seller account on the sandbox. ``app_key`` identifies the shop (Taobao
    ``app_key``, PDD ``client_id``, JD ``app_key``); ``access_token`` is the Taobao
    ``session`` / PDD and JD ``access_token``."""

    platform: str  # taobao | tmall | pdd | jd
    name: str
    app_key: str
    app_secret: str
    access_token: str
    seller_nick: str
    categories: tuple[str, ...] = ()  # catalogue categories sold (empty: all)

    @property
    def protocol(self) -> str:
        return PROTOCOLS[self.platform]

    @property
    def gateway_path(self) -> str:
        return GATEWAY_PATHS[self.protocol]


def _demo_shop(platform: str, abbr: str, n: int, name: str, cats: tuple[str, ...]) -> SandboxShop:
    return SandboxShop(platform=platform, name=name, app_key=f"demo-{abbr}-{n}",
                       app_secret=f"sandbox-secret-{abbr}-{n}", access_token=f"sandbox-token-{abbr}-{n}",
                       seller_nick=name, categories=cats)


#: The demo 店群, same names and platforms as ``flask oms demo`` (app/services/demo.py).
DEMO_SHOPS: list[SandboxShop] = [
    _demo_shop("tmall", "tm", 1, "杭州潮品旗舰店", ("FZ",)),
    _demo_shop("taobao", "tb", 1, "小满优选生活馆", ("JJ", "MZ", "SP")),
    _demo_shop("jd", "jd", 1, "潮品服饰京东旗舰店", ("FZ",)),
    _demo_shop("pdd", "pdd", 1, "好物直供百货", ("JJ", "SM", "MY")),
    _demo_shop("tmall", "tm", 2, "悦享家居旗舰店", ("JJ", "MY")),
    _demo_shop("taobao", "tb", 2, "山野食记", ("SP",)),
    _demo_shop("jd", "jd", 2, "悦享家居京东专营店", ("JJ", "SM")),
    _demo_shop("pdd", "pdd", 2, "山野农家特产店", ("SP",)),
    _demo_shop("taobao", "tb", 3, "美妆研习社", ("MZ",)),
    _demo_shop("pdd", "pdd", 3, "潮品工厂店", ("FZ", "SM")),
]


# --- faults -----------------------------------------------------------------------
@dataclass
class Faults:
    """Per-shop fault injection; all off by default. PUT as JSON to
    ``/_sandbox/shops/<app_key>/faults`` (``{}`` clears)."""

    # Every Nth gateway call of the shop triggers the platform's rate-limit error and
    # starts a ban of ``rate_limit_ban`` seconds during which every call gets it too.
    rate_limit_every: int = 0
    rate_limit_ban: float = 0.0
    # Every call answers the platform's invalid-session error.
    invalid_session: bool = False
    # The next K calls answer HTTP 502 (HTML body) / 500 (empty body), alternately.
    burst_5xx: int = 0
    # Every call sleeps this long before answering.
    slow_ms: int = 0
    # After page 1 of a multi-page listing is served, modify this many of the orders
    # that were not on it (the first ones of page 2 on), setting their modified
    # time to now, so they move in the modified-time order.
    change_between_pages: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "Faults":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        out = cls(**d)
        for f in fields(cls):
            value = getattr(out, f.name)
            if isinstance(f.default, bool):
                setattr(out, f.name, bool(value))
            elif isinstance(f.default, int):
                setattr(out, f.name, max(0, int(value)))
            else:
                setattr(out, f.name, max(0.0, float(value)))
        return out

    def to_dict(self) -> dict:
        return asdict(self)


# --- orders -----------------------------------------------------------------------
class Line:
    __slots__ = ("line_id", "code", "title", "spec", "price", "num", "discount", "listing", "sent")

    def __init__(self, line_id, code, title, spec, price, num, discount, listing):
        self.sent = None  # Taobao 拆单发货: (carrier, tracking, time) once this sub-order shipped alone
        self.line_id = line_id  # Taobao oid (int); PDD/JD: not used on the wire
        self.code = code        # merchant code
        self.title = title
        self.spec = spec        # "颜色:黑色;尺码:M"
        self.price = price      # cents
        self.num = num
        self.discount = discount  # cents, this line's share of the order discount
        self.listing = listing

    @property
    def total(self) -> int:
        return self.price * self.num

    @property
    def payment(self) -> int:
        return self.price * self.num - self.discount


class Order:
    __slots__ = ("key", "tid", "app_key", "status", "refund", "created", "paid", "shipped", "ended",
                 "modified", "buyer_nick", "name", "phone", "province", "city", "district", "address",
                 "zip", "message", "memo", "flag", "post_fee", "discount", "lines", "carrier",
                 "tracking", "auto", "version")

    def __init__(self):
        self.tid = None  # Taobao tid as int (> 2^53)
        self.refund = ""  # "" | requested | success | closed
        self.paid = self.shipped = self.ended = None
        self.message = self.memo = ""
        self.flag = 0
        self.carrier = self.tracking = None
        self.auto = False
        self.version = 1

    @property
    def goods(self) -> int:
        return sum(line.price * line.num for line in self.lines)

    @property
    def payment(self) -> int:
        return self.goods - self.discount + self.post_fee


class Listing:
    """One listing SKU of one shop: the platform's item / SKU ids and its quantity."""

    __slots__ = ("code", "title", "spec", "price", "product_code", "item_id", "sku_id", "quantity", "modified")

    def __init__(self, code, title, spec, price, product_code, item_id, sku_id, quantity):
        self.code, self.title, self.spec, self.price = code, title, spec, price
        self.product_code, self.item_id, self.sku_id = product_code, item_id, sku_id
        self.quantity, self.modified = quantity, None

    def to_dict(self) -> dict:
        return {"merchant_code": self.code, "title": self.title, "spec": self.spec,
                "price": money(self.price), "product_code": self.product_code,
                "item_id": str(self.item_id), "sku_id": str(self.sku_id), "quantity": self.quantity,
                "modified": fmt_time(self.modified)}


class EventError(ValueError):
    """The event does not apply to the order in its current state."""


# --- platform statuses ----------------------------------------------------------------
def visible(protocol: str, order: Order) -> bool:
    """PDD and JD open APIs never show orders that were not paid."""
    return protocol == "top" or order.paid is not None


def platform_status(protocol: str, order: Order) -> str:
    s, r = order.status, order.refund
    if protocol == "top":
        if s == "paid" and any(ln.sent for ln in order.lines):
            return "SELLER_CONSIGNED_PART"  # some sub-orders shipped alone (is_split), not all
        return {"unpaid": "WAIT_BUYER_PAY", "paid": "WAIT_SELLER_SEND_GOODS",
                "shipped": "WAIT_BUYER_CONFIRM_GOODS", "completed": "TRADE_FINISHED",
                "cancelled": "TRADE_CLOSED_BY_TAOBAO", "closed": "TRADE_CLOSED"}[s]
    if protocol == "pdd":
        # order_status 1 待发货, 2 已发货待签收, 3 已签收. A refunded order keeps the
        # stage it reached (refund_status 4 says it was refunded).
        if s in ("unpaid", "cancelled"):
            return "0"  # never served: PDD lists paid orders only
        if s == "completed":
            return "3"
        return "2" if order.shipped is not None else "1"
    # jd
    if s in ("unpaid", "cancelled"):
        return "WAIT_PAY"  # never served: paid orders only
    if s == "closed":
        return "TRADE_CANCELED"
    if s == "completed":
        return "FINISHED_L"
    if r == "requested" and order.shipped is None:
        return "LOCKED"  # the buyer asked to cancel: JD locks the order
    return "WAIT_GOODS_RECEIVE_CONFIRM" if s == "shipped" else "WAIT_SELLER_STOCK_OUT"


def refund_status(protocol: str, order: Order):
    """Taobao order-line refund_status / PDD refund_status (int) / JD: None."""
    r = order.refund
    if protocol == "top":
        return {"": "NO_REFUND", "requested": "WAIT_SELLER_AGREE", "success": "SUCCESS",
                "closed": "CLOSED"}[r]
    if protocol == "pdd":
        # 1 无售后或售后关闭, 2 售后处理中, 3 退款中, 4 退款成功. Sandbox choice: a refund
        # asked before shipping is 3 (退款中), after shipping 2 (售后处理中).
        if r == "requested":
            return 2 if order.shipped is not None else 3
        return 4 if r == "success" else 1
    return None


def order_checksum(order_id: str, platform_status_text: str, paid_amount: str, receiver_name: str,
                   receiver_phone: str, receiver_province: str, receiver_city: str,
                   receiver_district: str, receiver_address: str,
                   lines: Iterable[tuple[Optional[str], int]]) -> str:
    """The per-order checksum of ``GET /_sandbox/shops/<app_key>/orders``, computable
    from the OMS side too: MD5 hex of the fields joined by '|', lines as sorted
    'merchant_code*quantity' joined by ','. ``paid_amount`` as '12.30'."""
    line_text = ",".join(sorted(f"{code or ''}*{int(qty)}" for code, qty in lines))
    text = "|".join([str(order_id), str(platform_status_text), str(paid_amount), receiver_name or "",
                     receiver_phone or "", receiver_province or "", receiver_city or "",
                     receiver_district or "", receiver_address or "", line_text])
    return hashlib.md5(text.encode("utf-8")).hexdigest()


# --- per-shop book -------------------------------------------------------------------
class _Book:
    def __init__(self, shop: SandboxShop):
        self.shop = shop
        self.orders: dict[str, Order] = {}
        self.index: list[tuple[int, str]] = []  # (modified, key), ascending
        self.listings: dict[str, Listing] = {}
        self.listings_by_sku: dict[int, Listing] = {}
        self.listings_by_item: dict[int, list[Listing]] = {}
        self.faults = Faults()
        self.calls = 0
        self.ban_until = 0.0
        self.burst_served = 0
        self.version = 0
        self.cache: dict = {}
        # (order key, variant) -> (order, order version, JSON bytes): see SandboxState.fragment
        self.fragments: dict = {}
        self.is_top = shop.protocol == "top"


Clock = Callable[[], float]
_JD_CARRIERS = ("JD", "JD", "JD", "SF")
_OTHER_CARRIERS = ("ZTO", "YTO", "YUNDA", "STO", "SF", "JT")


class SandboxState:
    """The whole sandbox. ``evolve(now)`` moves simulated time forward; the server
    calls it at the start of every gateway request (and on ``POST /_sandbox/tick``).

    rate_per_minute: new orders per minute per shop (a number, or a dict app_key →
    number); 0 turns creation off. Orders created by evolution are born unpaid, get
    paid 20 s–5 min later (10% are cancelled unpaid after 15–30 min instead), and
    afterwards may start a refund, change the address, or (once shipped) complete.
    Orders from ``seed_orders`` and the admin API do not evolve on their own.
    """

    # Evolution timings (seconds) and shares; override on the instance if needed.
    PAY_DELAY = (20, 300)
    UNPAID_CANCEL_SHARE = 0.10
    CANCEL_DELAY = (900, 1800)
    REFUND_SHARE = 0.04
    REFUND_DELAY = (60, 1800)
    REFUND_DONE_SHARE = 0.7
    REFUND_DONE_DELAY = (300, 1800)
    ADDRESS_SHARE = 0.04
    ADDRESS_DELAY = (60, 900)
    COMPLETE_DELAY = (1800, 3 * 3600)
    UNKNOWN_CODE_SHARE = 0.01
    BUYER_POOL = 20000
    MAX_CATCHUP = 2 * 86400  # evolve() never simulates more than this in one go

    def __init__(self, shops: Optional[Iterable[SandboxShop]] = None, seed: int = 1,
                 clock: Clock = time.time, rate_per_minute: Union[float, dict] = 1.0):
        self.lock = threading.RLock()
        self.clock = clock
        self.shops: list[SandboxShop] = list(DEMO_SHOPS if shops is None else shops)
        keys = [s.app_key for s in self.shops]
        if len(set(keys)) != len(keys):
            raise ValueError("shop app_keys must be unique")
        self.seed = seed
        self.rate_per_minute = rate_per_minute
        self._init(seed)

    # -- setup ----------------------------------------------------------------------
    def _init(self, seed: int) -> None:
        self.rng = FastRandom(seed)
        self.books: dict[str, _Book] = {}
        self.writebacks: list[dict] = []
        self.stock_pushes: list[dict] = []
        self._heap: list = []
        self._seq = itertools.count()
        self._pool: list[tuple] = []
        self._day_prefix: dict[int, str] = {}
        self._request_no = itertools.count(1)
        self.tracking = None  # Kuaidi100 journeys (app/sandbox/kuaidi100.py), made on first use
        now = int(self.clock())
        self.last_evolve = now
        for shop in self.shops:
            book = _Book(shop)
            self._make_listings(book)
            self.books[shop.app_key] = book
            gap = self._gap(shop.app_key)
            if gap:
                self._push(now + gap, "create", shop.app_key, None)

    def reset(self, seed: Optional[int] = None, rate_per_minute=None) -> None:
        """Forget all orders, records and faults; start again from ``seed``."""
        with self.lock:
            if seed is not None:
                self.seed = seed
            if rate_per_minute is not None:
                self.rate_per_minute = rate_per_minute
            self._init(self.seed)

    def _rate(self, app_key: str) -> float:
        r = self.rate_per_minute
        if isinstance(r, dict):
            return float(r.get(app_key, 0.0))
        return float(r)

    def _gap(self, app_key: str) -> int:
        rate = self._rate(app_key)
        if rate <= 0:
            return 0
        return max(1, int(round(60.0 / rate * self.rng.uniform(0.5, 1.5))))

    def _make_listings(self, book: _Book) -> None:
        shop = book.shop
        r = FastRandom(f"listings:{shop.app_key}")
        cats = set(shop.categories) or set(data.CATEGORIES)
        rows = [row for row in data.CATALOGUE if data.CODE_INFO[row[0]][0] in cats]
        unknown = [row for row in data.UNKNOWN_CATALOGUE if row[0][:2] in cats] or data.UNKNOWN_CATALOGUE[:1]
        item_ids: dict[str, int] = {}
        proto = shop.protocol
        for code, title, spec, price in rows + unknown:
            pcode = data.CODE_INFO[code][1]
            if pcode not in item_ids:
                if proto == "top":
                    item_ids[pcode] = r.randrange(600000000000, 799999999999)  # num_iid, 12 digits
                elif proto == "pdd":
                    item_ids[pcode] = r.randrange(300000000000, 699999999999)  # goods_id
                else:
                    item_ids[pcode] = r.randrange(10020000000, 10099999999)    # wareId
            if proto == "top":
                sku_id = r.randrange(4000000000000, 5999999999999)
            elif proto == "pdd":
                sku_id = r.randrange(1000000000000, 1999999999999)
            else:
                sku_id = r.randrange(100010000000, 100099999999)  # JD skuId
            cat = data.CODE_INFO[code][0]
            listing_title = f"{title} {data.CATEGORIES[cat][1]}" if cat in data.CATEGORIES else title
            price_cents = int(price * 100)
            lst = Listing(code, listing_title, spec, price_cents, pcode, item_ids[pcode], sku_id,
                          r.randrange(50, 1000))
            book.listings[code] = lst
            book.listings_by_sku[sku_id] = lst
            book.listings_by_item.setdefault(item_ids[pcode], []).append(lst)
        book.known = [book.listings[row[0]] for row in rows]
        book.unknown = [book.listings[row[0]] for row in unknown]

    # -- lookups ------------------------------------------------------------------------
    def book(self, shop_or_key: Union[SandboxShop, str]) -> _Book:
        key = shop_or_key.app_key if isinstance(shop_or_key, SandboxShop) else shop_or_key
        try:
            return self.books[key]
        except KeyError:
            raise KeyError(f"no sandbox shop with app_key {key!r}") from None

    def shop(self, app_key: str) -> Optional[SandboxShop]:
        book = self.books.get(app_key)
        return book.shop if book else None

    def order(self, app_key: str, order_id: str) -> Optional[Order]:
        return self.book(app_key).orders.get(str(order_id))

    def now(self) -> int:
        return int(self.clock())

    def request_id(self) -> str:
        return f"{int(self.clock() * 1000)}{next(self._request_no) % 100000:05d}"

    # -- buyers -----------------------------------------------------------------------
    def _buyer(self) -> tuple:
        """(buyer_nick, jd_pin, name, phone, province, city, district, zip, address) from
        a pool, so buyers come back (as real ones do)."""
        r = self.rng
        if len(self._pool) < self.BUYER_POOL and (not self._pool or r.random() < 0.75):
            self._pool.append(self._new_buyer())
            return self._pool[-1]
        return self._pool[r.randrange(len(self._pool))]

    def _new_buyer(self) -> tuple:
        r = self.rng
        surname = r.choice(data.COMPOUND_SURNAMES) if r.random() < 0.01 else r.choice(data.SURNAMES)
        name = surname + "".join(r.choice(data.GIVEN_CHARS) for _ in range(2 if r.random() < 0.7 else 1))
        phone = r.choice(data.PHONE_PREFIXES) + f"{r.randrange(10 ** 8):08d}"
        province, city, district, zipcode = r.choices(data.PLACES, cum_weights=data.PLACE_CUM_WEIGHTS)[0]
        address = self._street(r)
        roll = r.random()
        if roll < 0.35:
            nick = r.choice(data.NICK_ADJ) + r.choice(data.NICK_NOUN) + (str(r.randint(1, 2024)) if roll < 0.18 else "")
        elif roll < 0.75:
            nick = r.choice(data.NICK_PINYIN) + r.choice(["", "_", "0"]) + str(r.randint(1, 9999))
        else:
            nick = f"tb{r.randrange(10 ** 9, 10 ** 10)}"
        pin = "jd_" + f"{r.getrandbits(52):013x}"
        return (nick, pin, name, phone, province, city, district, zipcode, address)

    @staticmethod
    def _street(r: random.Random) -> str:
        road = r.choice(data.ROADS)
        if r.random() < 0.8:
            return (f"{road}{r.randint(1, 999)}号{r.choice(data.COMMUNITIES)}{r.randint(1, 32)}栋"
                    f"{r.randint(1, 4)}单元{r.randint(1, 28)}{r.randint(1, 4):02d}室")
        return f"{road}{r.randint(1, 999)}号{r.choice(data.OFFICES)}{r.choice('ABCD')}座{r.randint(2, 30)}{r.randint(1, 20):02d}室"

    # -- order creation -------------------------------------------------------------------
    def _new_key(self, book: _Book, created: int) -> tuple[str, Optional[int]]:
        r = self.rng
        proto = book.shop.protocol
        while True:
            if proto == "top":
                tid = r.randrange(1000000000000000000, 4999999999999999999)  # 19 digits, > 2^53
                key = str(tid)
            elif proto == "pdd":
                tid = None
                day = (created + CN_OFFSET) // 86400
                prefix = self._day_prefix.get(day)
                if prefix is None:
                    prefix = self._day_prefix[day] = time.strftime("%y%m%d-", time.gmtime(day * 86400))
                key = prefix + str(r.randrange(100000000000000, 999999999999999))
            else:
                tid = None
                key = str(r.randrange(300000000000, 349999999999))
            if key not in book.orders:
                return key, tid

    def _build(self, book: _Book, created: int, *, lines: Optional[list] = None,
               buyer: Optional[tuple] = None, key: Optional[str] = None) -> Order:
        """A new unpaid order (not yet indexed). ``lines``: [(Listing, num)]."""
        r = self.rng
        rnd = r.random
        top = book.is_top
        o = Order()
        if key is None:
            o.key, o.tid = self._new_key(book, created)
        else:
            o.key = str(key)
            o.tid = int(key) if top else None
        o.app_key = book.shop.app_key
        o.status = "unpaid"
        o.created = o.modified = created
        nick, pin, o.name, o.phone, o.province, o.city, o.district, o.zip, o.address = buyer or self._buyer()
        o.buyer_nick = pin if book.shop.protocol == "jd" else nick
        if lines is None:
            lines = []
            x = rnd()
            n_lines = 1 if x < 0.75 else (2 if x < 0.94 else 3)
            known, unknown = book.known, book.unknown
            share = self.UNKNOWN_CODE_SHARE
            for _ in range(n_lines):
                x = rnd()
                if x < share:
                    lst = unknown[int(x / share * len(unknown))]
                else:
                    lst = known[int((x - share) / (1 - share) * len(known))]
                if any(lst is have for have, _n in lines):
                    continue
                x = rnd()
                lines.append((lst, 1 if x < 0.8 else (2 if x < 0.93 else 3)))
        o.lines = [Line(None, lst.code, lst.title, lst.spec, lst.price, int(num), 0, lst) for lst, num in lines]
        goods = 0
        for line in o.lines:
            goods += line.price * line.num
        x = rnd()
        o.discount = 0
        if x >= 0.55:  # a shop coupon (满减) of at most a fifth of the goods
            coupon = (300, 500, 1000, 2000)[int((x - 0.55) / 0.45 * 4)]
            while coupon > goods // 5 and coupon > 300:
                coupon //= 2
            if coupon <= goods // 5:
                o.discount = coupon
                self._spread_discount(o)
        x = rnd()
        o.post_fee = 0 if x < 0.85 else (500, 800, 1000)[int((x - 0.85) / 0.15 * 3)]
        if top:
            if len(o.lines) == 1:
                o.lines[0].line_id = o.tid  # single-line trades: oid == tid, as on Taobao
            else:
                for line in o.lines:
                    line.line_id = r.randrange(1000000000000000000, 4999999999999999999)
        x = rnd()
        if x < 0.15:
            o.message = data.BUYER_MESSAGES[int(x / 0.15 * len(data.BUYER_MESSAGES))]
        return o

    @staticmethod
    def _spread_discount(o: Order) -> None:
        goods = o.goods
        left = o.discount
        for i, line in enumerate(o.lines):
            if i == len(o.lines) - 1:
                share = left
            else:
                share = (o.discount * line.total) // goods if goods else 0
            line.discount = share
            left -= share

    def _index_add(self, book: _Book, o: Order) -> None:
        bisect.insort(book.index, (o.modified, o.key))

    def _touch(self, book: _Book, o: Order, t: int) -> None:
        """Set the order's modified time (never backwards) and re-index it. Every change to an
        order ends here: its new ``version`` retires the order's cached JSON (``fragment``)."""
        t = max(int(t), o.modified)
        old = (o.modified, o.key)
        i = bisect.bisect_left(book.index, old)
        if i < len(book.index) and book.index[i] == old:
            book.index.pop(i)
        o.modified = t
        o.version += 1
        bisect.insort(book.index, (t, o.key))
        book.version += 1

    def _store(self, book: _Book, o: Order) -> None:
        book.orders[o.key] = o
        self._index_add(book, o)
        book.version += 1

    def _ship_fields(self, book: _Book, o: Order) -> None:
        r = self.rng
        proto = book.shop.protocol
        ours = r.choice(_JD_CARRIERS if proto == "jd" else _OTHER_CARRIERS)
        o.carrier = data.CARRIERS[proto][ours]
        o.tracking = data.TRACKING_PREFIX[ours] + str(100000000000 + int(r.random() * 900000000000))

    # -- public: create / seed ------------------------------------------------------------
    def create_order(self, app_key: str, spec: Optional[dict] = None, *, now: Optional[int] = None) -> Order:
        """One order from an explicit spec (admin API). Spec keys, all optional:
        order_id, status (unpaid|paid|shipped|completed|cancelled|closed, default paid),
        created (epoch or 'yyyy-MM-dd HH:mm:ss'), lines [{merchant_code, num, price?}],
        buyer_nick, receiver {name, phone, province, city, district, address, zip},
        buyer_message, seller_memo, flag, post_fee, discount (元 strings or numbers),
        carrier_code, tracking_number (shipped/completed)."""
        spec = dict(spec or {})
        with self.lock:
            book = self.book(app_key)
            now = self.now() if now is None else int(now)
            created = to_epoch(spec["created"]) if spec.get("created") is not None else now
            lines = None
            if spec.get("lines"):
                lines = []
                for ln in spec["lines"]:
                    code = str(ln["merchant_code"])
                    lst = book.listings.get(code)
                    if lst is None:  # an ad-hoc listing for a code the shop does not sell
                        lst = self._adhoc_listing(book, code, ln)
                    lines.append((lst, int(ln.get("num", 1))))
            key = spec.get("order_id")
            if key is not None and str(key) in book.orders:
                raise ValueError(f"order {key} exists")
            o = self._build(book, created, lines=lines, key=key)
            for ln, given in zip(o.lines, spec.get("lines") or []):
                if given.get("price") is not None:
                    ln.price = _cents(given["price"])
            rec = spec.get("receiver") or {}
            for attr, name in (("name", "name"), ("phone", "phone"), ("province", "province"),
                               ("city", "city"), ("district", "district"), ("address", "address"),
                               ("zip", "zip")):
                if rec.get(name) is not None:
                    setattr(o, attr, str(rec[name]))
            if spec.get("buyer_nick") is not None:
                o.buyer_nick = str(spec["buyer_nick"])
            if spec.get("buyer_message") is not None:
                o.message = str(spec["buyer_message"])
            if spec.get("seller_memo") is not None:
                o.memo = str(spec["seller_memo"])
            if spec.get("flag") is not None:
                o.flag = int(spec["flag"])
            if spec.get("post_fee") is not None:
                o.post_fee = _cents(spec["post_fee"])
            if spec.get("discount") is not None:
                o.discount = _cents(spec["discount"])
            self._spread_discount(o)
            status = spec.get("status", "paid")
            if status not in ORDER_STATUSES:
                raise ValueError(f"unknown status {status!r}")
            t = max(created, now) if spec.get("created") is None else created
            self._settle(book, o, status, t)
            if spec.get("carrier_code"):
                o.carrier = str(spec["carrier_code"])
            if spec.get("tracking_number"):
                o.tracking = str(spec["tracking_number"])
            self._store(book, o)
            return o

    def _adhoc_listing(self, book: _Book, code: str, ln: dict) -> Listing:
        r = FastRandom(f"adhoc:{book.shop.app_key}:{code}")
        price = _cents(ln.get("price", "10.00"))
        lst = Listing(code, str(ln.get("title") or f"商品 {code}"), str(ln.get("spec") or ""), price,
                      code.split("-")[0], r.randrange(800000000000, 899999999999),
                      r.randrange(6000000000000, 6999999999999), 100)
        book.listings[code] = lst
        book.listings_by_sku[lst.sku_id] = lst
        book.listings_by_item.setdefault(lst.item_id, []).append(lst)
        return lst

    def _settle(self, book: _Book, o: Order, status: str, last: int) -> None:
        """Put a freshly built order into ``status`` with consistent times ending at
        ``last`` (its modified time): created < paid <= shipped <= ended."""
        rnd = self.rng.random
        o.modified = last
        if status == "unpaid":
            o.created = min(o.created, last)
            return
        if status == "cancelled":
            o.status = "cancelled"
            o.ended = last
            o.created = min(o.created, last - 900 - int(rnd() * 900))
            return
        t = last
        if status == "completed":
            o.ended = t
            t -= 86400 + int(rnd() * 4 * 86400)  # signed for 1–5 days after shipping
        if status in ("shipped", "completed"):
            o.shipped = t
            self._ship_fields(book, o)
            t -= 300 + int(rnd() * 86400)  # shipped 5 min – 1 day after payment
        if status == "closed":
            o.ended = t
            o.refund = "success"
            t -= 600 + int(rnd() * 86400)
        o.paid = t
        o.created = min(o.created, t - 10 - int(rnd() * 290))
        o.status = status

    def seed_orders(self, shop: Union[SandboxShop, str], n: int, start, end, *,
                    statuses: Optional[dict] = None) -> list[str]:
        """Create ``n`` orders whose modified times are spread uniformly over
        [start, end) (epoch seconds, aware datetimes or Beijing time strings).
        ``statuses``: {status: weight}; by default mostly paid / shipped / completed
        with a few unpaid, cancelled, closed and refunding ones. Returns the ids."""
        if statuses is None:
            statuses = {"unpaid": 3, "paid": 25, "shipped": 30, "completed": 35, "cancelled": 3,
                        "closed": 2, "refunding": 2}
        for s in statuses:
            if s not in ORDER_STATUSES and s != "refunding":
                raise ValueError(f"unknown status {s!r}")
        lo, hi = to_epoch(start), to_epoch(end)
        if hi <= lo:
            raise ValueError("end must be after start")
        names = list(statuses)
        cum = list(itertools.accumulate(statuses[s] for s in names))
        total = cum[-1]
        with self.lock:
            book = self.book(shop)
            r = self.rng
            out = []
            for _ in range(int(n)):
                last = r.randrange(lo, hi)
                status = names[bisect.bisect_right(cum, r.random() * total)]
                o = self._build(book, last)
                if status == "refunding":
                    self._settle(book, o, "paid" if r.random() < 0.7 else "shipped", last)
                    o.refund = "requested"
                else:
                    self._settle(book, o, status, last)
                    if status == "paid" and r.random() < 0.08:
                        o.memo = r.choice(data.SELLER_MEMOS)
                        o.flag = r.randint(1, 5)
                book.orders[o.key] = o
                out.append(o.key)
            book.index = sorted((o.modified, o.key) for o in book.orders.values())
            book.version += 1
            return out

    # -- evolution --------------------------------------------------------------------------
    def _push(self, t: int, kind: str, app_key: str, key: Optional[str]) -> None:
        heapq.heappush(self._heap, (int(t), next(self._seq), kind, app_key, key))

    def _after(self, span: tuple[int, int]) -> int:
        return self.rng.randint(span[0], span[1])

    def evolve(self, now: Optional[float] = None) -> dict:
        """Apply every scheduled change up to ``now`` (default: the clock). Each change
        stamps the order's modified time with the moment it happened (≤ now).
        Returns counts {created, changed}."""
        with self.lock:
            now = self.now() if now is None else int(now)
            created = changed = 0
            floor = now - self.MAX_CATCHUP
            while self._heap and self._heap[0][0] <= now:
                t, _seq, kind, app_key, key = heapq.heappop(self._heap)
                book = self.books.get(app_key)
                if book is None:
                    continue
                if kind == "create":
                    if t >= floor:
                        o = self._build(book, t)
                        o.auto = True
                        self._store(book, o)
                        self._schedule_new(o, t)
                        created += 1
                    gap = self._gap(app_key)
                    if gap:
                        self._push(max(t, floor) + gap, "create", app_key, None)
                    continue
                o = book.orders.get(key)
                if o is None:
                    continue
                with contextlib.suppress(EventError):  # no longer applies to this order: skip it
                    self._event(book, o, kind, t)
                    changed += 1
            self.last_evolve = max(self.last_evolve, now)
            return {"created": created, "changed": changed, "now": now}

    def _schedule_new(self, o: Order, t: int) -> None:
        r = self.rng
        if r.random() < self.UNPAID_CANCEL_SHARE:
            self._push(t + self._after(self.CANCEL_DELAY), "cancel", o.app_key, o.key)
        else:
            self._push(t + self._after(self.PAY_DELAY), "pay", o.app_key, o.key)

    def _schedule_after(self, o: Order, kind: str, t: int) -> None:
        """Follow-up changes of evolving orders."""
        if not o.auto:
            return
        r = self.rng
        if kind == "pay":
            if r.random() < self.REFUND_SHARE:
                self._push(t + self._after(self.REFUND_DELAY), "refund", o.app_key, o.key)
            elif r.random() < self.ADDRESS_SHARE:
                self._push(t + self._after(self.ADDRESS_DELAY), "address", o.app_key, o.key)
        elif kind == "refund":
            follow = "refund_done" if r.random() < self.REFUND_DONE_SHARE else "refund_close"
            self._push(t + self._after(self.REFUND_DONE_DELAY), follow, o.app_key, o.key)
        elif kind == "ship":
            self._push(t + self._after(self.COMPLETE_DELAY), "complete", o.app_key, o.key)

    def _event(self, book: _Book, o: Order, kind: str, t: int, **kw) -> None:
        """Apply one change at time t, or raise EventError."""
        s = o.status
        if kind == "pay":
            if s != "unpaid":
                raise EventError(f"cannot pay an order that is {s}")
            o.status, o.paid = "paid", max(t, o.created)
        elif kind == "cancel":
            if s != "unpaid":
                raise EventError(f"only unpaid orders can be cancelled (order is {s}); use refund_done")
            o.status, o.ended = "cancelled", t
        elif kind == "refund":
            if s not in ("paid", "shipped") or o.refund == "requested":
                raise EventError(f"cannot start a refund on an order that is {s} (refund: {o.refund or 'none'})")
            o.refund = "requested"
        elif kind == "refund_done":
            if s not in ("paid", "shipped"):
                raise EventError(f"cannot refund an order that is {s}")
            o.refund, o.status, o.ended = "success", "closed", t
        elif kind == "refund_close":
            if o.refund != "requested":
                raise EventError("no refund in progress")
            o.refund = "closed"
        elif kind == "address":
            if s != "paid":
                raise EventError(f"the address can change only before shipping (order is {s})")
            r = self.rng
            if kw.get("receiver"):
                rec = kw["receiver"]
                for attr in ("name", "phone", "province", "city", "district", "address", "zip"):
                    if rec.get(attr) is not None:
                        setattr(o, attr, str(rec[attr]))
            else:
                if r.random() < 0.5:  # moved within the city, or to a new place
                    o.address = self._street(r)
                else:
                    o.province, o.city, o.district, o.zip = r.choices(data.PLACES, cum_weights=data.PLACE_CUM_WEIGHTS)[0]
                    o.address = self._street(r)
        elif kind == "ship":
            if s != "paid":
                raise EventError(f"cannot ship an order that is {s}")
            if o.refund == "requested":
                raise EventError("a refund is in progress")
            o.status, o.shipped = "shipped", t
            if kw.get("carrier") and kw.get("tracking"):
                o.carrier, o.tracking = str(kw["carrier"]), str(kw["tracking"])
            else:
                self._ship_fields(book, o)
        elif kind == "complete":
            if s != "shipped":
                raise EventError(f"cannot complete an order that is {s}")
            if o.refund == "requested":
                raise EventError("a refund is in progress")
            o.status, o.ended = "completed", t
        else:
            raise EventError(f"unknown event {kind!r}")
        self._touch(book, o, t)
        self._schedule_after(o, kind, t)

    def apply_event(self, app_key: str, order_id: str, event: str, **kw) -> Order:
        """Admin: apply ``event`` now (EventError if it does not apply, KeyError if unknown)."""
        with self.lock:
            book = self.book(app_key)
            o = book.orders.get(str(order_id))
            if o is None:
                raise KeyError(f"no order {order_id} in shop {app_key}")
            if event not in EVENTS:
                raise EventError(f"unknown event {event!r}; one of {', '.join(EVENTS)}")
            self._event(book, o, event, self.now(), **kw)
            return o

    # -- gateway helpers --------------------------------------------------------------------
    def listing_window(self, app_key: str, start: int, end: int, *, filter_key, predicate,
                       descending: bool = True) -> list[Order]:
        """The orders with start <= modified < end that match ``predicate``, newest first
        (or oldest first), cached per shop version so paging a big window is cheap."""
        book = self.book(app_key)
        ck = (start, end, filter_key, descending)
        hit = book.cache.get(ck)
        if hit is not None and hit[0] == book.version:
            return hit[1]
        lo = bisect.bisect_left(book.index, (start,))
        hi = bisect.bisect_left(book.index, (end,))
        keys = book.index[lo:hi]
        if descending:
            keys.reverse()
        orders = book.orders
        result = [o for o in (orders[k] for _t, k in keys) if predicate(o)]
        if len(book.cache) > 32:
            book.cache.clear()
        book.cache[ck] = (book.version, result)
        return result

    MAX_FRAGMENTS = 250_000  # per shop; beyond it the cache starts again

    def fragment(self, book: _Book, o: Order, variant: tuple, render: Callable[[Order], dict]) -> bytes:
        """``render(o)`` as JSON bytes, kept while the order is unchanged: every change to an
        order goes through ``_touch``, which bumps ``o.version``. ``variant`` names what
        ``render`` makes (protocol, TOP fields), so a cached text is only reused for the same."""
        key = (o.key, variant)
        hit = book.fragments.get(key)
        if hit is not None and hit[0] is o and hit[1] == o.version:
            return hit[2]
        try:
            data = orjson.dumps(render(o))
        except TypeError:  # an integer beyond 64 bits: the standard library writes it exactly
            data = json.dumps(render(o), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if len(book.fragments) >= self.MAX_FRAGMENTS:
            book.fragments.clear()
        book.fragments[key] = (o, o.version, data)
        return data

    def clear_fragments(self) -> None:
        """Forget every cached order text (benchmarks measure serialization from cold)."""
        with self.lock:
            for book in self.books.values():
                book.fragments.clear()

    def disturb(self, app_key: str, orders: list[Order]) -> None:
        """The change-between-pages fault: the seller edits these orders now."""
        book = self.book(app_key)
        now = self.now()
        r = self.rng
        for o in orders:
            o.memo = r.choice(data.SELLER_MEMOS)
            o.flag = o.flag % 5 + 1
            self._touch(book, o, now)

    def ship(self, app_key: str, order_id: str, carrier: str, tracking: str,
             line_ids: Optional[list] = None) -> tuple[bool, str]:
        """Write-back. Returns (ok, message); ok for the first ship and for a repeat
        with the same tracking number (recorded with ``repeat: true``).

        ``line_ids`` (Taobao ``is_split=1`` with ``sub_tid``): ship only these sub-orders
        (拆单发货). The trade shows SELLER_CONSIGNED_PART until its last sub-order ships,
        then the usual shipped state; each sub-order keeps its own carrier and tracking
        number. Refused (message ``sub_tid:<id>``) for an id that is not a sub-order of this
        trade, ``sent:<id>`` for one already shipped with another number, and ``not_split``
        when the ids name every sub-order of a trade none of which has shipped (UNCONFIRMED:
        TOP documents that the sub-orders must be a proper subset of the trade's)."""
        with self.lock:
            book = self.book(app_key)
            o = book.orders.get(str(order_id))
            if o is None or not visible(book.shop.protocol, o):
                return False, "not_found"
            now = self.now()
            repeat = False
            if line_ids is not None:
                by_id = {str(ln.line_id): ln for ln in o.lines}
                wanted = []
                for lid in line_ids:
                    ln = by_id.get(str(lid))
                    if ln is None:
                        return False, f"sub_tid:{lid}"
                    if ln not in wanted:
                        wanted.append(ln)
                whole = o.tracking if o.status in ("shipped", "completed") else None
                shipped_as = [ln.sent[1] if ln.sent else whole for ln in wanted]
                if all(t == tracking for t in shipped_as):
                    repeat = True
                else:
                    for ln, t in zip(wanted, shipped_as):
                        if t is not None:
                            return False, f"sent:{ln.line_id}"
                    if o.status != "paid":
                        return False, f"status:{o.status}"
                    if o.refund == "requested":
                        return False, "refunding"
                    if len(wanted) == len(o.lines) and not any(ln.sent for ln in o.lines):
                        return False, "not_split"
                    for ln in wanted:
                        ln.sent = (str(carrier), str(tracking), now)
                    if all(ln.sent for ln in o.lines):
                        self._event(book, o, "ship", now, carrier=carrier, tracking=tracking)
                    else:
                        self._touch(book, o, now)
                self.writebacks.append({
                    "platform": book.shop.platform, "shop": book.shop.name, "app_key": app_key,
                    "order_id": o.key, "carrier_code": carrier, "tracking_number": tracking,
                    "line_ids": [str(ln.line_id) for ln in wanted], "is_split": True,
                    "time": fmt_time(now), "ts": now, "repeat": repeat,
                })
                return True, "repeat" if repeat else "ok"
            if o.status in ("shipped", "completed") and o.tracking == tracking:
                repeat = True
            else:
                if o.status != "paid":
                    return False, f"status:{o.status}"
                if o.refund == "requested":
                    return False, "refunding"
                self._event(book, o, "ship", now, carrier=carrier, tracking=tracking)
            self.writebacks.append({
                "platform": book.shop.platform, "shop": book.shop.name, "app_key": app_key,
                "order_id": o.key, "carrier_code": carrier, "tracking_number": tracking,
                "time": fmt_time(now), "ts": now, "repeat": repeat,
            })
            return True, "repeat" if repeat else "ok"

    def push_stock(self, app_key: str, listing: Listing, quantity: int, mode: str = "full") -> Listing:
        with self.lock:
            book = self.book(app_key)
            now = self.now()
            if mode == "increment":
                listing.quantity = max(0, listing.quantity + int(quantity))
            else:
                listing.quantity = int(quantity)
            listing.modified = now
            self.stock_pushes.append({
                "platform": book.shop.platform, "shop": book.shop.name, "app_key": app_key,
                "item_id": str(listing.item_id), "sku_id": str(listing.sku_id),
                "outer_id": listing.code, "quantity": int(quantity), "mode": mode,
                "result_quantity": listing.quantity, "time": fmt_time(now), "ts": now,
            })
            return listing

    # -- views --------------------------------------------------------------------------------
    def order_view(self, app_key: str, o: Order) -> dict:
        proto = self.book(app_key).shop.protocol
        status = platform_status(proto, o)
        paid = money(o.payment)
        lines = [(ln.code, ln.num) for ln in o.lines]
        return {
            "order_id": o.key,
            "state": o.status,
            "refund": o.refund or "none",
            "platform_status": status,
            "platform_refund_status": refund_status(proto, o),
            "visible": visible(proto, o),
            "created": fmt_time(o.created), "paid": fmt_time(o.paid), "shipped": fmt_time(o.shipped),
            "ended": fmt_time(o.ended), "modified": fmt_time(o.modified), "modified_ts": o.modified,
            "goods_amount": money(o.goods), "discount_amount": money(o.discount),
            "post_fee": money(o.post_fee), "paid_amount": paid,
            "buyer_nick": o.buyer_nick, "receiver_name": o.name, "receiver_phone": o.phone,
            "receiver_province": o.province, "receiver_city": o.city, "receiver_district": o.district,
            "receiver_address": o.address, "receiver_zip": o.zip,
            "buyer_message": o.message, "seller_memo": o.memo, "flag": o.flag,
            "carrier_code": o.carrier, "tracking_number": o.tracking,
            "lines": [{"line_id": str(ln.line_id) if ln.line_id is not None else None,
                       "merchant_code": ln.code, "title": ln.title, "spec": ln.spec, "num": ln.num,
                       "price": money(ln.price), "payment": money(ln.payment),
                       "item_id": str(ln.listing.item_id), "sku_id": str(ln.listing.sku_id),
                       # shipped alone (拆单发货): this sub-order's own parcel
                       "carrier_code": ln.sent[0] if ln.sent else None,
                       "tracking_number": ln.sent[1] if ln.sent else None}
                      for ln in o.lines],
            "version": o.version,
            "checksum": order_checksum(o.key, status, paid, o.name, o.phone, o.province, o.city,
                                       o.district, o.address, lines),
        }

    def shops_view(self) -> list[dict]:
        with self.lock:
            return [{"platform": s.platform, "protocol": s.protocol, "name": s.name,
                     "app_key": s.app_key, "app_secret": s.app_secret,
                     "access_token": s.access_token, "seller_nick": s.seller_nick,
                     "categories": list(s.categories), "gateway_path": s.gateway_path,
                     "order_count": len(self.books[s.app_key].orders),
                     "faults": self.books[s.app_key].faults.to_dict()}
                    for s in self.shops]

    def set_faults(self, app_key: str, faults: Faults) -> None:
        with self.lock:
            book = self.book(app_key)
            book.faults = faults
            book.calls = 0
            book.ban_until = 0.0
            book.burst_served = 0


def _cents(value) -> int:
    from decimal import Decimal

    return int((Decimal(str(value)) * 100).to_integral_value())
