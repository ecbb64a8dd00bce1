"""Rate files: CSV and Excel round-trips, every bad row reported with file/row/reason, all or nothing."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest
from openpyxl import Workbook

from rating.errors import RateFileError
from rating.model import PER_SECOND, Pulse, RateRow, RateTable
from rating.rate_files import read_rate_file, write_rate_file

GOOD = """prefix,destination,category,cost_per_minute,carrier_initial,carrier_subsequent,connect_fee
+33,France,fixed,0.005,,,
336,France mobile,Mobile,"0,009",,,
+3389,France premium,premium,0.35,60,60,0.05
"""


def test_csv_reads_rows_normalised(tmp_path: Path) -> None:
    path = tmp_path / "carrier.csv"
    path.write_text(GOOD)
    table = read_rate_file(path)
    assert table.name == "carrier"
    assert table.rows == (
        RateRow("+33", "France", "fixed", D("0.005")),
        RateRow("+336", "France mobile", "mobile", D("0.009")),
        RateRow("+3389", "France premium", "premium", D("0.35"), Pulse(60, 60), D("0.05")),
    )


def test_semicolon_csv_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("\ufeffprefix;destination;category;cost_per_minute\n+44;UK;international;0,0065\n")
    assert read_rate_file(path).rows == (RateRow("+44", "UK", "international", D("0.0065")),)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_round_trip_is_exact(tmp_path: Path, suffix: str) -> None:
    rows = (
        RateRow("+1", "USA", "international", D("0.000123456")),
        RateRow("+33", "France", "fixed", D("0.005")),
        RateRow("+3389", "Premium, with comma", "premium", D("1.5"), Pulse(30, 6), D("0.123456")),
    )
    path = tmp_path / f"t{suffix}"
    assert write_rate_file(RateTable("t", rows), path) == 3
    again = read_rate_file(path, "t")
    assert again.rows == rows
    assert again.rows[0].carrier_pulse == PER_SECOND


def test_excel_numeric_cells_are_read_as_their_decimal_text(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    ws.append(["prefix", "destination", "category", "cost_per_minute", "carrier_initial"])
    ws.cell(row=1, column=6, value="carrier_subsequent")
    ws.append([33, "France", "fixed", 0.005, None, None])
    ws.append(["+44", "UK", "international", 0.0065, 60, 6])
    path = tmp_path / "typed.xlsx"
    wb.save(path)
    rows = read_rate_file(path).rows
    assert rows[0] == RateRow("+33", "France", "fixed", D("0.005"))
    assert rows[1].cost_per_minute == D("0.0065")
    assert rows[1].carrier_pulse == Pulse(60, 6)


def test_every_bad_row_is_reported_and_nothing_returned(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "prefix,destination,category,cost_per_minute,carrier_initial,carrier_subsequent,connect_fee\n"
        "+33,France,fixed,0.005,,,\n"  # row 2 fine
        "+33x,Bad,fixed,0.005,,,\n"  # row 3
        "+34,,fixed,0.005,,,\n"  # row 4
        "+35,X,fixed,abc,,,\n"  # row 5
        "+36,X,fixed,-0.1,,,\n"  # row 6
        "+37,X,fixed,0.0000000001,,,\n"  # row 7
        "+38,X,fixed,0.01,60,,\n"  # row 8
        "+33,Again,fixed,0.005,,,\n"  # row 9: duplicate
        "\n"  # blank line ignored
        "+39,X,Fixed Line,0.01,,,\n"  # row 11
        "+40,X,fixed,0.01,0,1,\n"  # row 12
        "+41,X,fixed,0.01,,,,extra\n"  # row 13
    )
    with pytest.raises(RateFileError) as info:
        read_rate_file(path)
    problems = info.value.problems
    assert [row for _, row, _ in problems] == [3, 4, 5, 6, 7, 8, 9, 11, 12, 13]
    assert all(file == str(path) for file, _, _ in problems)
    reasons = dict((row, why) for _, row, why in problems)
    assert "prefix" in reasons[3]
    assert "destination" in reasons[4]
    assert "not a decimal" in reasons[5]
    assert "negative" in reasons[6]
    assert "decimals" in reasons[7]
    assert "go together" in reasons[8]
    assert "duplicate prefix +33 (first on row 2)" in reasons[9]
    assert "category" in reasons[11]
    assert ">= 1" in reasons[12]
    assert "8 cells for 7 columns" in reasons[13]


def test_bad_header_and_file_type(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("prefix,name,cost\n+33,France,0.1\n")
    with pytest.raises(RateFileError, match="missing column"):
        read_rate_file(path)
    other = tmp_path / "t.txt"
    other.write_text("x")
    with pytest.raises(RateFileError, match="unsupported"):
        read_rate_file(other)
    with pytest.raises(RateFileError, match="not found"):
        read_rate_file(tmp_path / "missing.csv")


def test_example_rate_file_is_valid() -> None:
    table = read_rate_file(Path(__file__).parents[2] / "config" / "rates" / "example.csv")
    assert {r.category for r in table.rows} >= {"fixed", "mobile", "premium", "international"}
