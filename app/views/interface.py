"""SQLAInterface with the OMS filters: exact phone search through the keyed hash,
and no text filters on encrypted columns (a LIKE on ciphertext finds nothing); and
list counts capped (FAB counts every matching row on each list page and REST list
call: at a million orders that COUNT is most of the request)."""
from __future__ import annotations

from flask_appbuilder.models.filters import BaseFilter
from flask_appbuilder.models.sqla.filters import SQLAFilterConverter
from flask_appbuilder.models.sqla.interface import SQLAInterface
from flask_babel import lazy_gettext as _l

from app.models.types import EncryptedText
from app.services import crypto


class FilterPhoneEquals(BaseFilter):
    name = _l("Phone equals")
    arg_name = "phone_eq"

    def apply(self, query, value):
        hash_col = getattr(self.model, self.column_name + "_hash", None)
        if hash_col is None:
            hash_col = getattr(self.model, "phone_hash")
        return query.filter(hash_col == crypto.phone_index(str(value)))


class OmsFilterConverter(SQLAFilterConverter):
    conversion_table = (("is_phone_pii", [FilterPhoneEquals]),) + SQLAFilterConverter.conversion_table


class CappedCount(int):
    """A list count that stopped at the cap: the value is cap + 1 (so pagination offers the
    page after the last counted one) and it shows as "cap+" (FAB's 记录数 on list pages)."""

    def __str__(self) -> str:
        return f"{int(self) - 1:,}+"


class OmsInterface(SQLAInterface):
    filter_converter_class = OmsFilterConverter

    def query_count(self, query, filters=None, select_columns=None) -> int:
        """The matching rows, counted up to ``OMS_LIST_COUNT_CAP`` (0: exact): a COUNT over
        the first cap + 1 matching rows, not over the whole table. Beyond the cap the
        result is a :class:`CappedCount`; REST lists say ``count_capped``."""
        from flask import current_app

        cap = int(current_app.config.get("OMS_LIST_COUNT_CAP", 10_000) or 0)
        inner = self._apply_inner_all(query, filters, select_columns=select_columns, aliases_mapping={})
        if cap <= 0:
            return inner.count()
        n = inner.limit(cap + 1).count()
        return CappedCount(n) if n > cap else n

    def _col(self, col_name):
        return self.obj.__mapper__.columns.get(col_name)

    def is_phone_pii(self, col_name: str) -> bool:
        col = self._col(col_name)
        return bool(col is not None and col.info.get("mask") == "phone")

    def is_encrypted(self, col_name: str) -> bool:
        col = self._col(col_name)
        return bool(col is not None and isinstance(col.type, EncryptedText))
