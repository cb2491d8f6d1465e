"""Excel/CSV import (issue #4 item 5): platform exports and our own templates.

Domain logic only (no Flask request code): :mod:`.readers` (xlsx/xls via
python-calamine, CSV in GBK/GB18030/UTF-8, limits, zip-bomb check),
:mod:`.profiles` (the TOML layouts in ``imports/`` and header detection),
:mod:`.convert` (cell quirks), :mod:`.parse` (rows → values + zh issues),
:mod:`.order_import` / :mod:`.bulk` / :mod:`.other_import` (apply),
:mod:`.report` (the error xlsx), :mod:`.templates` (our blank templates) and
:mod:`.service` (the whole run).
"""
from .errors import CellIssue, ImportFileError
from .service import ImportResult, detect_only, load, run_import

__all__ = ["CellIssue", "ImportFileError", "ImportResult", "detect_only", "load", "run_import"]
