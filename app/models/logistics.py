from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import Boolean, Column, Integer, String

from .base import Model, col_info


class Carrier(Model):
    """快递公司, with its code on each platform and at Kuaidi100."""

    __tablename__ = "oms_carrier"
    id = Column(Integer, primary_key=True)
    code = Column(String(32), unique=True, nullable=False, info=col_info(_l("Carrier code")))
    name = Column(String(64), unique=True, nullable=False, info=col_info(_l("Carrier name")))
    kuaidi100_code = Column(String(32), info=col_info(_l("Kuaidi100 code")))
    taobao_code = Column(String(32), info=col_info(_l("Taobao code")))
    pdd_code = Column(String(32), info=col_info(_l("Pinduoduo code")))
    jd_code = Column(String(32), info=col_info(_l("JD code")))
    active = Column(Boolean, nullable=False, default=True, info=col_info(_l("Active")))

    def __repr__(self) -> str:
        return self.name or ""
