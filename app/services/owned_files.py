"""Files a job writes for one user (exports, print PDFs): each ``<id>.<ext>`` beside an
``<id>.json`` holding its owner. Only the owner or an admin may fetch one; anyone else
gets NotFound, so another user cannot even learn the file exists."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from .errors import NotFound

FILE_ID = re.compile(r"^[0-9a-f]{32}$")


def owned_meta(folder: Path, file_id, *, user_id: Optional[int], is_admin: bool, missing: str) -> dict:
    """The metadata of file ``file_id`` in ``folder`` if this user may fetch it."""
    if not isinstance(file_id, str) or not FILE_ID.match(file_id):
        raise NotFound(missing)
    try:
        meta = json.loads((folder / f"{file_id}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise NotFound(missing) from None
    if not is_admin and (user_id is None or meta.get("user_id") != user_id):
        raise NotFound(missing)
    return meta
