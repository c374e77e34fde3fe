"""Lab reference results (HPLC, ELISA, ...) from CSV: `sample_id, vomitoxin_ppb` and optionally `method`,
`measured_at`.

Without a `method` column a result's method is "unspecified"; without `measured_at` it was measured
on the day of the import (UTC midnight), so importing the same file twice in a day stores it once.

Every row is checked; errors name the row (1 = the first data row, as a spreadsheet shows it
after the header: the header is line 1, so row N is line N+1) and the column. By default nothing
is stored when any row is bad; `partial` keeps the good rows and reports the bad ones.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field

from ops.recorder.db import LAB_TEXT_LIMITS, utcnow
from ops.recorder.events import parse_time

COLUMNS = ("sample_id", "vomitoxin_ppb", "method", "measured_at")
REQUIRED = ("sample_id", "vomitoxin_ppb")
DEFAULT_METHOD = "unspecified"
MAX_ROWS = 100_000


class LabResultsError(ValueError):
    """The file as a whole cannot be read (header, encoding, size)."""


@dataclass
class Parsed:
    rows: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse_csv(data: bytes | str) -> Parsed:
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise LabResultsError(f"the file is not UTF-8 text: {exc}") from None
    data = data.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(data, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise LabResultsError(f"header: {exc}") from None
    if not header:
        raise LabResultsError(f"the file is empty; expected the header {','.join(COLUMNS)}")
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED if c not in header]
    extra = [h for h in header if h not in COLUMNS]
    if missing or extra or len(set(header)) != len(header):
        raise LabResultsError(f"header must be {','.join(REQUIRED)}[,method][,measured_at] (any order); "
                              f"missing: {missing or 'none'}, unexpected or repeated: "
                              f"{extra or [h for h in header if header.count(h) > 1] or 'none'}")
    index = {c: header.index(c) for c in COLUMNS if c in header}
    parsed, now = Parsed(), utcnow()
    defaults = {"method": DEFAULT_METHOD, "measured_at": now.replace(hour=0, minute=0, second=0, microsecond=0)}
    try:
        for number, cells in enumerate(reader, start=1):
            if not any(c.strip() for c in cells):
                continue  # blank lines (a trailing newline, a spreadsheet's empty rows)
            if number > MAX_ROWS:
                raise LabResultsError(f"more than {MAX_ROWS} rows; split the file")
            row = _row(number, cells, index, len(header), parsed.errors)
            if row is not None:
                parsed.rows.append({**defaults, **row, "imported_at": now})
    except csv.Error as exc:
        raise LabResultsError(f"row {reader.line_num - 1}: {exc}") from None
    if not parsed.rows and not parsed.errors:
        raise LabResultsError("the file has a header but no rows")
    return parsed


def _row(number: int, cells: list[str], index: dict, width: int, errors: list[str]) -> dict | None:
    if len(cells) != width:
        errors.append(f"row {number}: {len(cells)} cells, the header has {width}")
        return None
    values = {c: cells[i].strip() for c, i in index.items()}
    row, bad = {}, False
    for column in ("sample_id", "method"):
        if column not in values:
            continue
        text = values[column]
        problem = ("is empty" if not text else f"is longer than {LAB_TEXT_LIMITS[column]} characters"
                   if len(text) > LAB_TEXT_LIMITS[column] else "contains a NUL character" if "\x00" in text else "")
        if problem:
            errors.append(f"row {number}, column {column}: {problem}")
            bad = True
        row[column] = text
    try:
        ppb = float(values["vomitoxin_ppb"])
        if not math.isfinite(ppb) or ppb < 0:
            raise ValueError
        row["vomitoxin_ppb"] = ppb
    except ValueError:
        errors.append(f"row {number}, column vomitoxin_ppb: {values['vomitoxin_ppb'][:40]!r} is not a "
                      "non-negative number")
        bad = True
    try:
        if "measured_at" in values:
            row["measured_at"] = parse_time(values["measured_at"], "measured_at")
    except ValueError:
        errors.append(f"row {number}, column measured_at: {values['measured_at'][:40]!r} is not an ISO 8601 "
                      "date or time (e.g. 2026-11-30 or 2026-11-30T14:05:00Z)")
        bad = True
    return None if bad else row
