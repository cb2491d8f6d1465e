from __future__ import annotations

from flask_babel import lazy_gettext as _l
from sqlalchemy import Boolean, Column, ForeignKey, Integer, String, Text, UniqueConstraint

from .base import Model, col_info
from .types import UTCDateTime, utcnow


class SavedView(Model):
    """视图: one user's saved layout of one grid — filters, tab, sort, columns, widths
    and order (``state``, JSON). At most one per user and grid is the default."""

    __tablename__ = "oms_saved_view"
    __table_args__ = (UniqueConstraint("user_id", "resource", "name", name="uq_saved_view_user_resource_name"),)
    id = Column(Integer, primary_key=True)
    user_id = Column(Integer, ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False, index=True)
    resource = Column(String(64), nullable=False, info=col_info(_l("Grid")))
    name = Column(String(64), nullable=False, info=col_info(_l("View name")))
    state = Column(Text, nullable=False, info=col_info(_l("Layout")))
    is_default = Column(Boolean, nullable=False, default=False, info=col_info(_l("Default view")))
    created_at = Column(UTCDateTime, nullable=False, default=utcnow, info=col_info(_l("Created at")))
    updated_at = Column(UTCDateTime, nullable=False, default=utcnow, onupdate=utcnow,
                        info=col_info(_l("Updated at")))
