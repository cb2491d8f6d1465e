"""The user model extended with row scope: the shops a user may see."""
from __future__ import annotations

from flask_appbuilder.security.sqla.models import User
from sqlalchemy import Boolean, Column, ForeignKey, Integer, Table
from sqlalchemy.orm import relationship

from .base import Model

user_shop = Table(
    "oms_user_shop",
    Model.metadata,
    Column("user_id", Integer, ForeignKey("ab_user.id", ondelete="CASCADE"), primary_key=True),
    Column("shop_id", Integer, ForeignKey("oms_shop.id", ondelete="CASCADE"), primary_key=True),
)


class OmsUser(User):
    """FAB's user with ``all_shops`` and ``shops``: the row scope of everything they see."""

    __tablename__ = "ab_user"
    all_shops = Column(Boolean, nullable=False, default=False, server_default="0")
    shops = relationship("Shop", secondary=user_shop, lazy="selectin")
