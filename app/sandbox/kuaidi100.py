"""The Kuaidi100 (快递100) real-time query, seen from the server side (沙箱).

``POST /poll/query.do`` with form fields ``customer``, ``param`` (JSON) and
``sign`` = UPPER(MD5(param + key + customer)), checked like the real service
(../shared/platform-apis.md §4), written from the spec and independent of the
client in app/platforms/kuaidi100.py.

Every tracking number has a journey: a script of events (揽收 → 在途 → 派件 →
签收, or one that goes 疑难, 退回, 退签, 拒签, 转投, stalls, or is never picked
up) laid out in simulated time from the journey's start. A query answers the
events whose time has come, newest first. Numbers nobody registered get a
journey on their first query (start = that moment), its scenario chosen from
the number (mostly normal), so the demo's shipped orders have tracking without
setup; tests create journeys through the admin API and move them along.

Admin (JSON, under ``/_sandbox/kuaidi100/``):
  GET  journeys                      all journeys with their current state
  POST journeys                      {num, com, scenario?, phone?, started_ago?, steps?} → 201
  GET  journeys/<num>                one journey, with every scripted step
  POST journeys/<num>/advance        {seconds} or {to_state: "3"}: move the journey on
  PUT  faults                        {http_5xx, error_code, error_count, slow_ms} ({} clears)
  PUT  customers                     {customer: key, ...}: accounts the gateway accepts
  GET  queries                       every query answered: num, com, time, returnCode
  POST reset                         forget journeys, faults and queries

Where the spec is silent the choice is marked UNCONFIRMED.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

from flask import Flask, Response, request

QUERY_PATH = "/poll/query.do"
DEMO_CUSTOMER = "OMSSANDBOXCUSTOMER01"
DEMO_KEY = "sandbox-kuaidi100-key"
MAX_NUM_LENGTH = 32

COMPANIES = {
    "shunfeng": "顺丰速运", "yuantong": "圆通速递", "zhongtong": "中通快递", "shentong": "申通快递",
    "yunda": "韵达快递", "jtexpress": "极兔速递", "ems": "EMS", "youzhengguonei": "邮政快递包裹",
    "jd": "京东物流", "debangkuaidi": "德邦快递", "debangwuliu": "德邦物流", "huitongkuaidi": "百世快递",
    "danniao": "丹鸟",
}
# 顺丰 and 中通 check the receiver's phone (last 4 digits).
PHONE_CHECKED = {"shunfeng", "zhongtong"}
STATE_TEXT = {"0": "在途", "1": "揽收", "2": "疑难", "3": "签收", "4": "退签", "5": "派件", "6": "退回", "7": "转投",
              "10": "待清关", "11": "清关中", "12": "已清关", "13": "清关异常", "14": "拒签"}
SCENARIOS = ("normal", "problem", "returned", "return_signed", "refused", "redirected", "stalled", "no_pickup")
ERROR_MESSAGES = {
    "400": "找不到对应公司或参数错误",
    "408": "验证码错误（手机号校验失败）",
    "500": "查询无结果，请隔段时间再查",
    "501": "服务器错误",
    "502": "服务器繁忙",
    "503": "验证签名失败",
    "601": "key已过期或查询次数已用完",
}
ORIGINS = [("浙江省", "杭州市", "余杭区"), ("广东省", "广州市", "白云区"), ("上海市", "上海市", "青浦区")]
DESTINATIONS = [("北京市", "北京市", "朝阳区"), ("江苏省", "南京市", "鼓楼区"), ("四川省", "成都市", "武侯区"),
                ("湖北省", "武汉市", "洪山区"), ("山东省", "青岛市", "市南区"), ("福建省", "厦门市", "思明区"),
                ("陕西省", "西安市", "雁塔区"), ("新疆维吾尔自治区", "乌鲁木齐市", "天山区")]
COURIERS = ["张师傅", "李师傅", "王师傅", "赵师傅", "陈师傅"]
CN_OFFSET = 8 * 3600
HOUR = 3600


def fmt_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(ts) + CN_OFFSET))


def expected_sign(param: str, key: str, customer: str) -> str:
    return hashlib.md5((param + key + customer).encode("utf-8")).hexdigest().upper()


@dataclass
class Step:
    after: int  # seconds after the journey's start
    state: str  # Kuaidi100 state code of this event
    context: str
    area: str = ""


@dataclass
class Journey:
    num: str
    com: str
    start: float
    scenario: str
    steps: list[Step]
    phone: str = ""  # last 4 digits the phone check expects ("" = no check)

    def visible(self, now: float) -> list[Step]:
        return [s for s in self.steps if self.start + s.after <= now]

    def view(self, now: float, *, with_steps: bool = False) -> dict:
        seen = self.visible(now)
        out = {"num": self.num, "com": self.com, "scenario": self.scenario, "start": fmt_time(self.start),
               "state": seen[-1].state if seen else None, "events": len(seen), "total_steps": len(self.steps)}
        if with_steps:
            out["steps"] = [dict(asdict(s), time=fmt_time(self.start + s.after)) for s in self.steps]
        return out


@dataclass
class TrackingFaults:
    # The next N queries answer HTTP 502 (HTML) / 500 (empty body), alternately.
    http_5xx: int = 0
    # Queries answer this returnCode (e.g. "500", "501", "502", "503", "601") ...
    error_code: str = ""
    # ... for the next N queries (0: until cleared).
    error_count: int = 0
    slow_ms: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> "TrackingFaults":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        out = cls(**d)
        out.http_5xx = max(0, int(out.http_5xx))
        out.error_count = max(0, int(out.error_count))
        out.slow_ms = max(0, int(out.slow_ms))
        out.error_code = str(out.error_code or "")
        if out.error_code and out.error_code not in ERROR_MESSAGES:
            raise ValueError(f"error_code must be one of {', '.join(ERROR_MESSAGES)}")
        return out


# --- journeys ----------------------------------------------------------------------------
def _rng(num: str):
    from .state import FastRandom

    return FastRandom(f"kuaidi100:{num}")


def auto_scenario(num: str) -> str:
    """The scenario of a number nobody registered: mostly normal, some trouble."""
    x = _rng(num).random()
    for share, name in ((0.80, "normal"), (0.85, "stalled"), (0.90, "problem"), (0.94, "returned"),
                        (0.96, "return_signed"), (0.97, "refused"), (0.98, "redirected")):
        if x < share:
            return name
    return "no_pickup"


def script(num: str, com: str, scenario: str) -> list[Step]:
    """The events of a journey, deterministic per number. Courier phones in the texts
    are fictional (a 1390000xxxx range) and exercise the public page's masking."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}")
    r = _rng(num)
    company = COMPANIES.get(com, "快递")
    oprov, ocity, odist = r.choice(ORIGINS)
    dprov, dcity, ddist = r.choice(DESTINATIONS)
    courier, dcourier = r.choice(COURIERS), r.choice(COURIERS)
    phone1 = f"1390000{r.randint(1000, 9999)}"
    phone2 = f"1380000{r.randint(1000, 9999)}"
    steps: list[Step] = []
    t = r.randint(HOUR // 2, 6 * HOUR)
    if scenario == "no_pickup":
        return steps

    def add(state, context, area, gap=(4 * HOUR, 14 * HOUR)):
        nonlocal t
        steps.append(Step(after=t, state=state, context=context, area=area))
        t += r.randint(*gap)

    add("1", f"【{ocity}】【{ocity}{odist}公司】的 {courier}（{phone1}）已揽收", f"{oprov},{ocity}")
    add("0", f"【{ocity}】快件离开【{ocity}{odist}公司】已发往【{ocity}转运中心】", f"{oprov},{ocity}")
    if scenario == "stalled":
        return steps
    add("0", f"【{ocity}】快件已到达【{ocity}转运中心】", f"{oprov},{ocity}")
    add("0", f"【{ocity}】快件离开【{ocity}转运中心】已发往【{dcity}转运中心】", f"{oprov},{ocity}",
        gap=(12 * HOUR, 30 * HOUR))
    add("0", f"【{dcity}】快件已到达【{dcity}转运中心】", f"{dprov},{dcity}", gap=(2 * HOUR, 8 * HOUR))
    if scenario == "redirected":
        add("7", f"【{dcity}】快件已转投至【{dcity}{ddist}新营业部】，原因：收件地址变更", f"{dprov},{dcity}")
    add("5", f"【{dcity}】【{dcity}{ddist}营业部】的 {dcourier}（{phone2}）正在派件，请保持电话畅通",
        f"{dprov},{dcity},{ddist}", gap=(HOUR, 5 * HOUR))
    if scenario == "problem":
        add("2", f"【{dcity}】快件派送不成功：收件人电话无人接听，待再次派送。派件员 {dcourier}（{phone2}）",
            f"{dprov},{dcity},{ddist}")
        return steps
    if scenario == "refused":
        add("14", f"【{dcity}】收件人拒收，快件待退回。派件员 {dcourier}（{phone2}）", f"{dprov},{dcity},{ddist}")
        return steps
    if scenario in ("returned", "return_signed"):
        add("6", f"【{dcity}】快件已被退回，退回原因：收件人拒收，退回地址【{ocity}{odist}公司】",
            f"{dprov},{dcity}", gap=(12 * HOUR, 24 * HOUR))
        add("6", f"【{ocity}】退回件已到达【{ocity}转运中心】", f"{oprov},{ocity}", gap=(6 * HOUR, 12 * HOUR))
        if scenario == "return_signed":
            add("4", f"【{ocity}】退回件已签收，签收人：寄件人。感谢使用{company}", f"{oprov},{ocity}")
        return steps
    add("3", f"【{dcity}】您的快件已签收，签收人：本人签收。如有疑问请联系派件员 {dcourier}（{phone2}），"
        f"感谢使用{company}", f"{dprov},{dcity},{ddist}")
    return steps


class TrackingBook:
    """All Kuaidi100 state of one sandbox; guarded by the sandbox's lock."""

    def __init__(self, state):
        self.state = state
        self.customers: dict[str, str] = {DEMO_CUSTOMER: DEMO_KEY}
        self.journeys: dict[str, Journey] = {}
        self.faults = TrackingFaults()
        self.queries: list[dict] = []
        self.auto_journeys = True  # unknown numbers get a journey on their first query
        self._burst_served = 0

    def now(self) -> float:
        return float(self.state.clock())

    def create(self, num: str, com: str, scenario: Optional[str] = None, *, phone: str = "",
               started_ago: float = 0, steps: Optional[list] = None) -> Journey:
        num, com = str(num).strip(), str(com).strip().lower()
        if not num or len(num) > MAX_NUM_LENGTH:
            raise ValueError("num must be 1-32 characters")
        if com not in COMPANIES:
            raise ValueError(f"unknown com {com!r}")
        if steps is not None:
            parsed = [Step(after=int(s["after"]), state=str(s["state"]), context=str(s["context"]),
                           area=str(s.get("area") or "")) for s in steps]
            parsed.sort(key=lambda s: s.after)
            scenario = scenario or "custom"
        else:
            scenario = scenario or auto_scenario(num)
            parsed = script(num, com, scenario)
        digits = "".join(ch for ch in str(phone or "") if ch.isdigit())
        j = Journey(num=num, com=com, start=int(self.now() - float(started_ago or 0)), scenario=scenario, steps=parsed,
                    phone=digits[-4:])
        self.journeys[num] = j
        return j

    def advance(self, num: str, seconds: Optional[float] = None, to_state: Optional[str] = None) -> Journey:
        """Move the journey on: its steps still to come happen ``seconds`` earlier (or,
        with ``to_state``, so that the first step of that state happens now). Events
        already visible keep their times, as a real carrier's would; steps stay in
        order, at least one second apart."""
        j = self.journeys[num]
        now = self.now()
        if to_state is not None:
            target = next((s for s in j.steps if s.state == str(to_state)), None)
            if target is None:
                raise ValueError(f"journey {num} has no step with state {to_state}")
            seconds = j.start + target.after - now
        seconds = float(seconds or 0)
        if seconds <= 0:
            return j
        prev = None
        for step in j.steps:
            at = j.start + step.after
            if at > now:
                at = at - seconds
                if prev is not None and at <= prev:
                    at = prev + 1
                step.after = math.floor(at - j.start)
            prev = j.start + step.after
        return j

    # -- the query --------------------------------------------------------------------
    def answer(self, form: dict) -> Response:
        f = self.faults
        if f.http_5xx > 0:
            f.http_5xx -= 1
            self._burst_served += 1
            if self._burst_served % 2 == 1:
                return Response("<html><head><title>502 Bad Gateway</title></head><body><center>"
                                "<h1>502 Bad Gateway</h1></center></body></html>", status=502, mimetype="text/html")
            return Response(b"", status=500)
        customer, param, given = form.get("customer") or "", form.get("param") or "", form.get("sign") or ""
        if not customer or not param:
            return self._error("400", "参数不完整：customer 与 param 必填", num=None, com=None)
        key = self.customers.get(customer)
        # UNCONFIRMED: an unknown customer is answered like a bad signature.
        if key is None or not given or not hmac.compare_digest(given.encode(), expected_sign(param, key, customer)
                                                               .encode()):
            return self._error("503", ERROR_MESSAGES["503"], num=None, com=None)
        if f.error_code:
            if f.error_count > 0:
                f.error_count -= 1
                code = f.error_code
                if f.error_count == 0:
                    f.error_code = ""
            else:
                code = f.error_code
            return self._error(code, ERROR_MESSAGES[code], num=None, com=None)
        try:
            p = json.loads(param)
            if not isinstance(p, dict):
                raise ValueError
        except ValueError:
            return self._error("400", "param 不是合法的 JSON 对象", num=None, com=None)
        com, num = str(p.get("com") or "").strip(), str(p.get("num") or "").strip()
        if com not in COMPANIES:  # codes are lowercase; anything else is unknown
            return self._error("400", "找不到对应公司，请检查快递公司编码（com）", num=num, com=com)
        if not num or len(num) > MAX_NUM_LENGTH:
            return self._error("400", "快递单号（num）为空或超过 32 个字符", num=num, com=com)
        j = self.journeys.get(num)
        if j is None and self.auto_journeys:
            j = self.create(num, com)
        if j is None or j.com != com:
            return self._error("500", ERROR_MESSAGES["500"], num=num, com=com)
        if j.phone and com in PHONE_CHECKED:
            phone = "".join(ch for ch in str(p.get("phone") or "") if ch.isdigit())
            if phone[-4:] != j.phone:
                return self._error("408", ERROR_MESSAGES["408"], num=num, com=com)
        seen = j.visible(self.now())
        if not seen:
            return self._error("500", ERROR_MESSAGES["500"], num=num, com=com)
        rows = [{"time": fmt_time(j.start + s.after), "ftime": fmt_time(j.start + s.after), "context": s.context,
                 "areaName": s.area, "status": STATE_TEXT.get(s.state, s.state)} for s in seen]
        if str(p.get("order") or "desc") == "desc":
            rows.reverse()
        state = seen[-1].state
        body = {"message": "ok", "nu": num, "ischeck": "1" if state in ("3", "4") else "0",
                "condition": "00", "com": com, "status": "200", "state": state, "data": rows}
        self._log(num, com, "200")
        return _json(body)

    def _error(self, code: str, message: str, *, num, com) -> Response:
        self._log(num, com, code)
        return _json({"result": False, "returnCode": code, "message": message})

    def _log(self, num, com, code) -> None:
        self.queries.append({"num": num, "com": com, "at": fmt_time(self.now()), "return_code": code})
        del self.queries[:-5000]


def _json(obj, status: int = 200) -> Response:
    return Response(json.dumps(obj, ensure_ascii=False, separators=(",", ":")), status=status,
                    content_type="application/json;charset=UTF-8")


def book_of(state) -> TrackingBook:
    book = getattr(state, "tracking", None)
    if book is None:
        book = state.tracking = TrackingBook(state)
    return book


def register(app: Flask, state) -> None:
    """Add the Kuaidi100 gateway and its admin endpoints to the sandbox app."""

    @app.route(QUERY_PATH, methods=["POST"])
    def kuaidi100_query():
        form = {k: request.form.get(k) for k in request.form.keys()}
        with state.lock:
            slow = book_of(state).faults.slow_ms
        if slow:
            time.sleep(slow / 1000.0)
        with state.lock:
            return book_of(state).answer(form)

    def body() -> dict:
        if not request.data:
            return {}
        try:
            data = json.loads(request.data)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise _Bad("body must be a JSON object")
        return data

    class _Bad(Exception):
        pass

    @app.errorhandler(_Bad)
    def _bad(exc):
        return _json({"error": str(exc)}, 400)

    @app.get("/_sandbox/kuaidi100/journeys")
    def k100_journeys():
        with state.lock:
            book = book_of(state)
            now = book.now()
            return _json({"journeys": [j.view(now) for j in book.journeys.values()]})

    @app.post("/_sandbox/kuaidi100/journeys")
    def k100_create():
        b = body()
        specs = b.get("journeys") if "journeys" in b else [b]
        if not isinstance(specs, list):
            return _json({"error": "journeys must be a list"}, 400)
        with state.lock:
            book = book_of(state)
            try:
                made = [book.create(s.get("num"), s.get("com") or "", s.get("scenario"), phone=s.get("phone") or "",
                                    started_ago=float(s.get("started_ago") or 0), steps=s.get("steps"))
                        for s in specs]
            except (ValueError, KeyError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)
            now = book.now()
            return _json({"journeys": [j.view(now, with_steps=True) for j in made]}, 201)

    @app.get("/_sandbox/kuaidi100/journeys/<num>")
    def k100_journey(num):
        with state.lock:
            book = book_of(state)
            j = book.journeys.get(num)
            if j is None:
                return _json({"error": f"no journey for {num}"}, 404)
            return _json(j.view(book.now(), with_steps=True))

    @app.post("/_sandbox/kuaidi100/journeys/<num>/advance")
    def k100_advance(num):
        b = body()
        with state.lock:
            book = book_of(state)
            if num not in book.journeys:
                return _json({"error": f"no journey for {num}"}, 404)
            try:
                j = book.advance(num, seconds=b.get("seconds"), to_state=b.get("to_state"))
            except (ValueError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)
            return _json(j.view(book.now(), with_steps=True))

    @app.put("/_sandbox/kuaidi100/faults")
    def k100_faults():
        b = body()
        try:
            faults = TrackingFaults.from_dict(b)
        except (TypeError, ValueError) as exc:
            return _json({"error": str(exc)}, 400)
        with state.lock:
            book = book_of(state)
            book.faults = faults
            book._burst_served = 0
        return _json({"faults": asdict(faults)})

    @app.put("/_sandbox/kuaidi100/customers")
    def k100_customers():
        b = body()
        with state.lock:
            book = book_of(state)
            book.customers.update({str(k): str(v) for k, v in b.items()})
            return _json({"customers": sorted(book.customers)})

    @app.get("/_sandbox/kuaidi100/queries")
    def k100_queries():
        num = request.args.get("num")
        with state.lock:
            rows = [q for q in book_of(state).queries if not num or q["num"] == num]
        return _json({"queries": rows})

    @app.post("/_sandbox/kuaidi100/reset")
    def k100_reset():
        b = body()
        with state.lock:
            book = state.tracking = TrackingBook(state)
            if "auto_journeys" in b:
                book.auto_journeys = bool(b["auto_journeys"])
        return _json({"ok": True, "auto_journeys": book.auto_journeys})
