"""Scheduled job: recompute customer tiers (客户分层) from spend and frequency."""
from __future__ import annotations

from app.jobs.queue import set_progress
from app.services import customers


def recompute_tiers() -> dict:
    changed = customers.recompute_tiers(progress=set_progress)
    return {"changed": changed}
