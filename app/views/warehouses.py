"""覆盖范围: the provinces each warehouse ships to (services/warehouse_choice.py).

A page under 库存 to add or remove a warehouse's provinces, and a REST API whose
grid (``/grid/warehouse_coverage/``) edits and exports them like a spreadsheet.
Both need ``can_write`` on Warehouse to change anything; removing a province is an
edit of the warehouse, so it needs ``can_write`` too (not ``can_delete``).
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import StringField
from wtforms.validators import DataRequired

from app.models import WarehouseCoverage

from .base import API_METHOD_PERMISSIONS, VIEW_METHOD_PERMISSIONS, OmsModelRestApi, OmsModelView
from .grids import grid_page
from .interface import OmsInterface

_PROVINCE_HELP = _l("A province (e.g. Zhejiang, Guangdong) or Nationwide. A warehouse without any "
                    "province covers the whole country.")


def _validate(item):
    from app.services.warehouse_choice import validate_coverage

    validate_coverage(item)


class WarehouseCoverageView(OmsModelView):
    datamodel = OmsInterface(WarehouseCoverage)
    class_permission_name = "Warehouse"
    method_permission_name = dict(VIEW_METHOD_PERMISSIONS, delete="write")
    list_title = show_title = _l("Warehouse coverage")
    add_title = _l("Add covered province")
    edit_title = _l("Edit covered province")
    list_columns = ["warehouse", "province"]
    show_columns = add_columns = edit_columns = ["warehouse", "province"]
    search_columns = ["warehouse", "province"]
    order_columns = ["province"]
    add_form_extra_fields = edit_form_extra_fields = {
        "province": StringField(_l("Covered province"), validators=[DataRequired()], description=_PROVINCE_HELP),
    }
    base_order = ("warehouse_id", "asc")

    def pre_add(self, item):
        _validate(item)

    pre_update = pre_add


class WarehouseCoverageApi(OmsModelRestApi):
    grid_title = _l("Warehouse coverage")
    resource_name = "warehouse_coverage"
    datamodel = OmsInterface(WarehouseCoverage)
    class_permission_name = "Warehouse"
    method_permission_name = dict(API_METHOD_PERMISSIONS, delete="write")
    list_columns = show_columns = ["id", "warehouse.id", "warehouse.name", "province"]
    add_columns = edit_columns = ["warehouse", "province"]
    search_columns = ["warehouse", "province"]
    order_columns = ["id", "province"]
    grid_default_sort = ("id", "asc")

    def pre_add(self, item):
        _validate(item)

    pre_update = pre_add

    def grid_save_row(self, pk: int, changes: dict) -> None:
        """A pasted cell is normalised and checked (浙江省 → 浙江; duplicates refused) before it is written."""
        from marshmallow import ValidationError as SchemaError
        from sqlalchemy import select

        from app.extensions import db
        from app.services.errors import NotFound, ValidationError

        item = db.session.execute(select(WarehouseCoverage).where(WarehouseCoverage.id == pk)).scalar_one_or_none()
        if item is None:
            raise NotFound(f"记录不存在或无权访问：{pk}")
        with db.session.no_autoflush:
            try:
                self.edit_model_schema.load(changes, instance=item, partial=True, session=db.session)
            except SchemaError as exc:
                name, messages = next(iter(exc.messages.items()))
                raise ValidationError(f"「{self.label_columns.get(name, name)}」：{'；'.join(map(str, messages))}",
                                      name) from None
            _validate(item)
        db.session.flush()


WarehouseCoverageGridView = grid_page("warehouse_coverage", "Warehouse", "覆盖范围表格", "WarehouseCoverageGridView")
