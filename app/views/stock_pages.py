"""库存 pages: 入库, 调整, 盘点 (stock documents) and 库存预警 with the navbar notification area."""
from __future__ import annotations

# The ORM hooks of these services (re-match on mapping changes, alert evaluation after
# stock commits) must be registered in every process that builds the app.
from app.services import sku_mapping, stock_alerts  # noqa: F401
