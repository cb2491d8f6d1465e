"""SQLAInterface with the OMS filters: exact phone search through the keyed hash,
and no text filters on encrypted columns (a LIKE on ciphertext finds nothing)."""
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


class OmsInterface(SQLAInterface):
    filter_converter_class = OmsFilterConverter

    def _col(self, col_name):
        return self.obj.__mapper__.columns.get(col_name)

    def is_phone_pii(self, col_name: str) -> bool:
        col = self._col(col_name)
        return bool(col is not None and col.info.get("mask") == "phone")

    def is_encrypted(self, col_name: str) -> bool:
        col = self._col(col_name)
        return bool(col is not None and isinstance(col.type, EncryptedText))
