"""Render a Report as an aligned text table, CSV or JSON (money as exact decimal strings)."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any

from cdr.reports import Report

FORMATS = ("table", "csv", "json")


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "" if v is None else str(v)


def _json(v: Any) -> Any:
    return str(v) if isinstance(v, Decimal) else v


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        doc = {
            "title": report.title,
            "rows": [{c: _json(v) for c, v in zip(report.columns, r, strict=True)} for r in report.rows],
            "totals": [{c: _json(v) for c, v in zip(report.columns, r, strict=True)} for r in report.totals],
            "notes": list(report.notes),
        }
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(report.columns)
        for r in [*report.rows, *report.totals]:
            w.writerow([_text(v) for v in r])
        return buf.getvalue()
    if fmt == "table":
        cells = [list(report.columns)] + [[_text(v) for v in r] for r in [*report.rows, *report.totals]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(report.columns))]
        right = [
            any(
                isinstance(r[i], (int, Decimal)) and not isinstance(r[i], bool)
                for r in report.rows + report.totals
            )
            for i in range(len(report.columns))
        ]

        def fmt_row(row: list[str]) -> str:
            return "  ".join(
                (c.rjust(w) if rj else c.ljust(w)) for c, w, rj in zip(row, widths, right, strict=True)
            ).rstrip()

        sep = "  ".join("-" * w for w in widths)
        out = [report.title, fmt_row(cells[0]), sep]
        out += [fmt_row(r) for r in cells[1 : 1 + len(report.rows)]]
        if report.totals:
            out.append(sep)
            out += [fmt_row(r) for r in cells[1 + len(report.rows) :]]
        out += list(report.notes)
        return "\n".join(out) + "\n"
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
