"""Our own blank templates (订单, 商品 SKU, 盘点, 快递单号) as xlsx, from their profiles:
the header row, one example row and a sheet of notes (required columns, statuses)."""
from __future__ import annotations

import io

from openpyxl import Workbook
from openpyxl.styles import Font, PatternFill

from . import profiles
from .errors import ImportFileError

REQUIRED_FILL = PatternFill("solid", start_color="FFF2CC", end_color="FFF2CC")


def template_profiles() -> list:
    return [p for p in profiles.all_profiles() if p.template]


def write_template(name: str) -> tuple[str, bytes]:
    """(file name, xlsx bytes) of our template ``name`` (oms_orders, oms_skus, …)."""
    profile = profiles.get(name)
    if not profile.template:
        raise ImportFileError(f"「{profile.title}」是平台导出格式，不是本系统的模板")
    wb = Workbook()
    ws = wb.active
    ws.title = profile.title[:31]
    headers = profile.template_headers
    ws.append(headers)
    required = {profiles.norm(h) for h in profile.required}
    for c, h in enumerate(headers, start=1):
        cell = ws.cell(row=1, column=c)
        cell.font = Font(bold=True)
        if profiles.norm(h) in required:
            cell.fill = REQUIRED_FILL
        ws.column_dimensions[cell.column_letter].width = max(10, len(h) * 2 + 4)
    if profile.example:
        ws.append([profile.example.get(h) for h in headers])
        for c in range(1, len(headers) + 1):
            ws.cell(row=2, column=c).number_format = "@"  # text: ids keep every digit
    notes = wb.create_sheet("说明")
    notes.append(["必填列（黄色）", "、".join(profile.required)])
    if profile.status_map:
        zh = [k for k in profile.status_map if not k.isascii()]
        notes.append(["状态可填", "、".join(zh)])
    notes.append(["说明", "第一行是表头，不要改名；示例行导入前请删除或改成真实数据。订单号、快递单号请用文本格式。"])
    buf = io.BytesIO()
    wb.save(buf)
    return f"{profile.title}.xlsx", buf.getvalue()
