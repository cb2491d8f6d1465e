"""The bulk write path for new orders of an import: one batch of drafts → a handful of
statements (the writer itself is shared with the platform sync: services/bulk_orders.py).

Produces the same rows as the per-order path (``order_import.create_one`` →
``orders.create_order`` + ``orders.link_customer`` + ``order_status.hold``), checked
by tests/test_imports_bulk.py on SQLite and PostgreSQL:

* every draft is validated first exactly as ``create_order`` validates it (same zh
  messages, same order of checks); a refused draft is reported and left out (valid
  rows only) or stops the import (all or nothing: the caller rolls back);
* orders, their lines, the 创建 event, the 未匹配商品 hold (unknown merchant codes) and a
  platform hold (锁定 / 退款中) with their events; cost amounts from the SKUs' cost
  prices; buyer PII encrypted once per value (services/crypto.py; the customer row
  reuses the order's ciphertext) and the phone's blind index computed once;
* customers, one per receiver-phone hash across shops: the batch's existing customers
  are read in one query (not row-scoped: a customer is shared by all shops), new ones
  inserted in bulk, order count / spend / first and last order times of existing ones
  updated in one statement, ``is_returning_customer`` decided in sheet order exactly as
  ``link_customer`` decides it, and the CustomerShop links inserted when missing;
* the status-tab counters follow by themselves (the triggers of migration 0005 fire
  for COPY and multi-row INSERT alike).

How each database is written: services/bulk_orders.py. The caller owns the transaction.
"""
from __future__ import annotations

from typing import Callable, Optional

from app.services.bulk_orders import BulkWriter, Prepared, prepare  # noqa: F401  (Prepared: re-exported)
from app.services.errors import ValidationError
from app.services.orders import phone_hash


class Creator(BulkWriter):
    """The import's writer: validates each draft (:func:`prepare`) and writes batches of
    them; a refused draft is reported through ``issue`` and left out (``valid_only``) or
    stops the batch before it is written (all or nothing)."""

    def __init__(self, *, user_id: Optional[int], valid_only: bool, issue: Callable):
        super().__init__(user_id=user_id, source="import")
        self.valid_only, self.issue = valid_only, issue
        self.looked_up: set = set()  # customer keys already looked up (found or not)
        self._keys: dict = {}  # receiver phone → customer key (one HMAC per phone)

    def load_customers(self, drafts: list) -> None:
        """Every customer the new orders name, in one query per 5,000 phones, before the first batch."""
        key_of = self.key_of
        self.load_customers_by_hash([key_of(d, d.data.get("receiver_phone")) for d in drafts])

    def phone_key(self, phone) -> Optional[str]:
        """``orders.phone_hash`` of a receiver phone, remembered."""
        try:
            return self._keys[phone]
        except KeyError:
            key = self._keys[phone] = phone_hash(phone)
            return key

    def key_of(self, draft, phone) -> Optional[str]:
        key = self._hash[id(draft)] = self.phone_key(phone)
        return key

    def load_customers_by_hash(self, hashes, conn=None) -> None:
        hashes = set(hashes) - self.looked_up
        self.looked_up |= hashes
        super().load_customers_by_hash(hashes, conn)

    def create(self, drafts: list, shops: dict, skus, carriers: dict) -> tuple[int, int]:
        """Validate and queue one batch; returns (created, failed). All or nothing (not
        ``valid_only``): the first refused draft stops before its batch is written.
        ``skus``: the import's ``sku_mapping.SkuCatalogue`` (each draft gets its shop's lookup)."""
        prepared, failed = [], 0
        for d in drafts:
            try:
                prepared.append(prepare(d, shops[d.shop_id], skus.for_shop(d.shop_id),
                                        carriers.get(d.carrier_name), self.max_text))
            except ValidationError as exc:
                self.issue(d, exc.message)
                failed += 1
                if not self.valid_only:
                    return 0, failed
        self.submit(prepared)
        return len(prepared), failed
