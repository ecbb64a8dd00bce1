"""Rate tables from and to CSV and Excel (.xlsx), validated as a whole.

Why all-or-nothing: an operator's tariff with one bad line must not half-replace the live one,
so `read_rate_file` checks every row and raises one RateFileError listing every (file, row,
reason); callers write the result only when it returns. Row numbers are the file's own (the
header is row 1). This module does file I/O but is only used at the edge (CLI, config load).
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any

from rating.errors import RateFileError
from rating.model import PER_SECOND, Pulse, RateRow, RateTable
from rating.money import COST_DECIMALS, MAX_AMOUNT, MAX_PER_MINUTE, MoneyError, check_limit, parse_decimal

COLUMNS = (
    "prefix",
    "destination",
    "category",
    "cost_per_minute",
    "carrier_initial",
    "carrier_subsequent",
    "connect_fee",
)
REQUIRED = COLUMNS[:4]
_PREFIX = re.compile(r"^\+?[0-9]{1,15}$")
_CATEGORY = re.compile(r"^[a-z][a-z0-9_\-]*$")
_ZERO = Decimal(0)


def _money(text: str, what: str, decimals: int, limit: Decimal) -> Decimal:
    value = parse_decimal(text, what)
    if value < 0:
        raise MoneyError(f"{what} {value} is negative")
    check_limit(value, limit, what)  # before counting decimals: 1e40 must not reach the rater
    if value.as_tuple().exponent < -decimals and value != round(value, decimals):  # type: ignore[operator]
        raise MoneyError(f"{what} {value} has more than {decimals} decimals")
    return value


def _int(text: str, what: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{what} {text!r} must be a whole number of seconds >= 1")
    return int(text)


def _text(value: object) -> str:
    """A cell as text: Excel numbers by their shortest decimal repr (never via binary arithmetic)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value).strip()


def parse_row(cells: tuple[str, ...]) -> RateRow:
    """One row, its cells as text in COLUMNS order ("" when absent) -> RateRow, or ValueError."""
    prefix, destination, category, raw_cost, initial, subsequent, connect = map(str.strip, cells)
    if not _PREFIX.match(prefix):
        raise ValueError(f"prefix {prefix!r} must be digits, optionally after '+'")
    if prefix[0] != "+":
        prefix = "+" + prefix
    if not destination:
        raise ValueError("destination name is empty")
    category = category.lower()
    if not _CATEGORY.match(category):
        raise ValueError(f"category {category!r} must be a lowercase word (fixed, mobile, premium…)")
    if not raw_cost:
        raise ValueError("cost_per_minute is empty")
    cost = _money(raw_cost, "cost_per_minute", COST_DECIMALS, MAX_PER_MINUTE)
    pulse = PER_SECOND
    if initial or subsequent:
        if not (initial and subsequent):
            raise ValueError("carrier_initial and carrier_subsequent go together")
        pulse = Pulse(_int(initial, "carrier_initial"), _int(subsequent, "carrier_subsequent"))
    fee = _money(connect, "connect_fee", 6, MAX_AMOUNT) if connect else _ZERO
    return RateRow(prefix, destination, category, cost, pulse, fee)


def parse_rows(source: str, rows: Iterable[tuple[int, tuple[str, ...] | str]]) -> list[RateRow]:
    """Validate numbered rows; raise RateFileError with every problem, or return them all.

    A row given as a plain string is the reader's own complaint about it (e.g. too many cells).
    """
    problems: list[tuple[str, int, str]] = []
    out: list[RateRow] = []
    seen: dict[str, int] = {}
    for number, cells in rows:
        if isinstance(cells, str):
            problems.append((source, number, cells))
            continue
        if not any(cells):
            continue  # blank line
        try:
            row = parse_row(cells)
        except (ValueError, MoneyError) as exc:
            problems.append((source, number, str(exc)))
            continue
        if row.prefix in seen:
            why = f"duplicate prefix {row.prefix} (first on row {seen[row.prefix]})"
            problems.append((source, number, why))
            continue
        seen[row.prefix] = number
        out.append(row)
    if problems:
        raise RateFileError(problems)
    return out


def _picker(names: list[str]) -> Callable[[list[Any]], tuple[Any, ...]]:
    """Cells in COLUMNS order from a row padded with one trailing "" (absent columns point there)."""
    return itemgetter(*[names.index(c) if c in names else len(names) for c in COLUMNS])


def _check_header(source: str, header: list[str]) -> list[str]:
    names = [h.strip().lower() if h else "" for h in header]
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise RateFileError([(source, 1, f"missing column(s): {', '.join(missing)}")])
    unknown = [h for h in names if h and h not in COLUMNS]
    if unknown:
        raise RateFileError([(source, 1, f"unknown column(s): {', '.join(unknown)}")])
    return names


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        delimiter = ";" if sample.count(";") > sample.count(",") else ","
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise RateFileError([(str(path), 1, "empty file (no header row)")])
        names = _check_header(str(path), header)
        width = len(names)
        pick = _picker(names)
        for number, values in enumerate(reader, start=2):
            if len(values) > width:
                yield number, f"{len(values)} cells for {width} columns"
                continue
            values.extend([""] * (width + 1 - len(values)))
            yield number, pick(values)


def _xlsx_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True, data_only=True)
    try:
        ws = wb.worksheets[0]
        rows = ws.iter_rows(values_only=True)
        header = next(rows, None)
        if header is None:
            raise RateFileError([(str(path), 1, "empty sheet (no header row)")])
        names = _check_header(str(path), [str(h) if h is not None else "" for h in header])
        width = len(names)
        pick = _picker(names)
        for number, values in enumerate(rows, start=2):
            cells = [_text(v) for v in values[:width]]
            cells.extend([""] * (width + 1 - len(cells)))
            yield number, pick(cells)
    finally:
        wb.close()


def read_rate_file(path: str | Path, name: str | None = None) -> RateTable:
    """Read a .csv (',' or ';') or .xlsx rate file into a RateTable named after the file stem."""
    p = Path(path)
    if not p.exists():
        raise RateFileError([(str(p), 0, "file not found")])
    suffix = p.suffix.lower()
    if suffix == ".csv":
        rows = parse_rows(str(p), _csv_rows(p))
    elif suffix in (".xlsx", ".xlsm"):
        rows = parse_rows(str(p), _xlsx_rows(p))
    else:
        raise RateFileError([(str(p), 0, f"unsupported file type {suffix!r} (use .csv or .xlsx)")])
    return RateTable(name or p.stem, tuple(rows))


def _cells(row: RateRow) -> list[str]:
    custom = row.carrier_pulse != PER_SECOND
    return [
        row.prefix,
        row.destination,
        row.category,
        str(row.cost_per_minute),
        str(row.carrier_pulse.initial) if custom else "",
        str(row.carrier_pulse.subsequent) if custom else "",
        str(row.connect_fee) if row.connect_fee else "",
    ]


def _atomic_target(path: Path) -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    # mkstemp creates 0600; a rate table is read by the service's own user, so give it the mode any
    # new file gets (0666 less the umask: 0644 with the usual 022), as open() would.
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def _umask() -> int:
    """The process umask, read without changing it where Linux says it (/proc), else set back at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_rate_file(table: RateTable, path: str | Path) -> int:
    """Write a table as .csv or .xlsx (prefix order), atomically (temp file + rename)."""
    p = Path(path)
    rows = sorted(table.rows, key=lambda r: r.prefix)
    fd, tmp = _atomic_target(p)
    try:
        if p.suffix.lower() == ".csv":
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(COLUMNS)
                writer.writerows(_cells(r) for r in rows)
        elif p.suffix.lower() == ".xlsx":
            os.close(fd)
            _write_xlsx(rows, table.name, tmp)
        else:
            os.close(fd)
            raise RateFileError([(str(p), 0, f"unsupported file type {p.suffix!r} (use .csv or .xlsx)")])
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(rows)


def _write_xlsx(rows: list[RateRow], title: str, path: str) -> None:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(title=(title or "rates")[:31])
    ws.append(list(COLUMNS))
    for r in rows:  # money as text so the sheet holds the exact decimal, never a binary float
        ws.append(_cells(r))
    wb.save(path)
