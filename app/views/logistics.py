from __future__ import annotations

from flask_babel import lazy_gettext as _l

from app.models import Carrier

from .base import OmsModelRestApi, OmsModelView
from .interface import OmsInterface


class CarrierView(OmsModelView):
    datamodel = OmsInterface(Carrier)
    class_permission_name = "Carrier"
    list_title = _l("Carriers")
    show_title = _l("Carrier")
    add_title = _l("Add carrier")
    edit_title = _l("Edit carrier")
    list_columns = ["code", "name", "kuaidi100_code", "taobao_code", "pdd_code", "jd_code", "active"]
    show_columns = add_columns = edit_columns = list_columns
    search_columns = ["code", "name", "active"]
    base_order = ("code", "asc")


class CarrierApi(OmsModelRestApi):
    resource_name = "carrier"
    datamodel = OmsInterface(Carrier)
    class_permission_name = "Carrier"
    list_columns = show_columns = ["id", "code", "name", "kuaidi100_code", "taobao_code", "pdd_code", "jd_code",
                                   "active"]
    add_columns = edit_columns = ["code", "name", "kuaidi100_code", "taobao_code", "pdd_code", "jd_code",
                                  "active"]
    search_columns = ["code", "name", "active"]
