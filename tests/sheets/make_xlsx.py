"""Writes the .xlsx fixtures of tests/spreadsheets.rs with openpyxl, as a zone
office's Excel would hold them: shared strings, a number typed into the
industry-code column, a TRUE/FALSE cell, a date cell. Run from this folder:
    python3 -m venv /tmp/v && /tmp/v/bin/pip install openpyxl && /tmp/v/bin/python make_xlsx.py
The files are committed; the tests do not run this script.
"""
import datetime
import openpyxl

# tests/support/dataset.rs E[0..5]
E = ["91410000MA1000001Y", "91410000MA10000022", "91410000MA10000035",
     "91410000MA10000048", "91410000MA1000005B"]

def save(name, rows, title):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = title
    for r in rows:
        ws.append(r)
    for row in ws.iter_rows():
        for c in row:
            if isinstance(c.value, datetime.date):
                c.number_format = "yyyy-mm-dd"
    wb.save(name)

# The registry's enterprise list: E1's industry typed as a number, E3's
# above_scale a TRUE cell, E1's leading_industry left empty (not stated).
save("enterprises.xlsx", [
    ["统一社会信用代码", "企业名称", "规上", "工业企业", "行业代码", "主导产业", "网关"],
    [E[0], "甲钢铁", "是", "是", 3110, None, None],
    [E[1], "乙钢铁", "是", None, "C3120", "否", None],
    [E[2], "丙化工", True, None, "2614", "是", None],
    [E[3], "丁电子", "是", None, None, None, None],
    [E[4], "戊服务", "否", None, None, None, None],
], "企业名录")

# A profile of declarations: E1's establishment date a date cell, its
# maturity a number; E2's scenarios as code:level; E3 a TRUE cell.
save("profile.xlsx", [
    ["统一社会信用代码 id", "企业名称 name", "成立日期 established", "已完成智能化改造 smart_retrofit",
     "智能制造能力成熟度等级 dt_maturity", "智能制造场景 scenarios", "国民经济行业代码 industry_code"],
    [E[0], "甲钢铁", datetime.date(2010, 1, 1), "否", 4, "无", 3110],
    [E[1], "乙钢铁", None, None, 3, "能源智能管控:高级;设备运行监控:中级", None],
    [E[2], "丙化工", None, True, None, None, None],
    [E[3], "丁电子", None, None, None, None, "3210"],
], "企业画像")
