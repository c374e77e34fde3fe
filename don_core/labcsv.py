"""The lab's CSV format and its validation: one set of rules and messages for the training job
(which trains on it) and the console (which predicts on it).

Format: optional `hsi_id`, band columns `0`..`447` (any order), target `vomitoxin_ppb` (optional
where only predictions are wanted: `require_target=False`). LF and CRLF line endings, a UTF-8
byte-order mark and spreadsheet re-saves are accepted. Every problem is reported with the file, the
row (1-based line number, header = row 1) and the column.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import math
import operator
import re
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import numpy as np

from don_core.schema import BAND_COLUMNS, ID_COLUMN, N_BANDS, TARGET_COLUMN

_MAX_REPORTED = 10


class DataError(Exception):
    """Input data that must not be trained on; the message names file, row and column."""


@dataclass
class Dataset:
    X: np.ndarray            # (n, 448) float64 reflectance
    y: np.ndarray            # (n,) float64 ppb
    ids: list[str]
    source: str
    sha256: str
    warnings: list[str] = field(default_factory=list)
    has_ids: bool = True     # False: the file had no id column (ids are row numbers)
    has_target: bool = True  # False: a file for prediction without the target (y is NaN)

    @property
    def rows(self) -> int:
        return len(self.y)


class SourceError(Exception):
    """The data could not be read for a reason outside the file (storage, network): exit 1."""


# Read in blocks: memory stays bounded by the parsed matrix, never a copy of the whole file.
_BLOCK = 1 << 18
_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+")


def parse_csv(raw: bytes, name: str, require_target: bool = True) -> Dataset:
    return parse_stream(io.BytesIO(raw), name=name, require_target=require_target)


def parse_stream(stream: BinaryIO, name: str, require_target: bool = True) -> Dataset:
    digest = hashlib.sha256()
    reader = csv.reader(_lines(stream, name, digest))
    header = next(reader, None)
    if header is None or _blank(header):
        if all(_blank(row) for row in reader):
            raise DataError(f"{name}: file is empty")
        header = header or []
    header = [cell.strip() for cell in header]
    band_index, target_index, id_index = _check_header(header, name, require_target)
    bands = operator.itemgetter(*band_index)

    problems = _Problems(name)
    matrix = _Rows()
    y_rows: list[float] = []
    ids: list[str] = []
    for cells in reader:
        if _blank(cells):
            continue  # blank lines (a trailing newline, a spreadsheet's empty row)
        line_no = reader.line_num
        if len(cells) != len(header):
            problems.add(f"row {line_no}: {len(cells)} cells, header has {len(header)}")
            if problems.full:
                break
            continue
        values = _band_values(bands(cells))
        if values is None:   # slow path only to name the bad cells
            values = np.array([_number(cells[col], line_no, header[col], problems)
                               for col in band_index])
        target = (_number(cells[target_index], line_no, TARGET_COLUMN, problems)
                  if target_index is not None else math.nan)
        if target < 0:
            problems.add(f"row {line_no}, column '{TARGET_COLUMN}': negative concentration "
                         f"{cells[target_index].strip()}")
        if problems.count:
            if problems.full:
                break   # refused anyway: a junk file is not read to its end
            continue    # refused: stop keeping rows
        matrix.append(values)
        y_rows.append(target)
        ids.append(cells[id_index].strip() if id_index is not None else f"row-{line_no}")
    problems.raise_if_any()
    if not y_rows:
        raise DataError(f"{name}: no data rows below the header")
    return Dataset(X=matrix.finish(), y=np.asarray(y_rows), ids=ids, source=name, sha256=digest.hexdigest(),
                   warnings=_duplicate_ids(ids, name) if id_index is not None else [],
                   has_ids=id_index is not None, has_target=target_index is not None)


def _lines(stream: BinaryIO, name: str, digest) -> Iterator[str]:
    """Decoded lines with their endings (csv's newline='' contract), hashing the bytes on the way."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    offset, pending = 0, ""
    while True:
        try:
            block = stream.read(_BLOCK)
        except OSError as exc:
            raise SourceError(f"{name}: read failed after {offset} bytes: {exc}") from None
        except Exception as exc:  # botocore's streaming errors (a connection cut mid-body)
            raise SourceError(f"{name}: read failed after {offset} bytes: "
                              f"{type(exc).__name__}: {exc}") from None
        digest.update(block)
        try:
            text = pending + decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: not UTF-8 text (byte {offset + exc.start})") from None
        offset += len(block)
        # Lazily, one line behind: an unfinished last line (or a CR whose LF may start the next
        # block) waits for more. Lines end at CR, LF or CRLF, as csv's newline='' expects.
        previous = None
        for match in _LINE.finditer(text):
            if previous is not None:
                yield previous
            previous = match.group()
        pending = ""
        if previous is not None:
            if block and not previous.endswith("\n"):
                pending = previous
            else:
                yield previous
        if not block:
            return


class _Rows:
    """Rows of float64 in one array grown in place (realloc), so the peak is about the final
    matrix, not a list of row arrays plus their stacked copy."""

    def __init__(self):
        self.array = np.empty((1024, N_BANDS))
        self.count = 0

    def append(self, values: np.ndarray) -> None:
        if self.count == len(self.array):
            self.array.resize((self.count + max(1024, self.count // 4), N_BANDS), refcheck=False)
        self.array[self.count] = values
        self.count += 1

    def finish(self) -> np.ndarray:
        self.array.resize((self.count, N_BANDS), refcheck=False)
        return self.array


class _Problems:
    """The first problems verbatim; reading stops after _MAX_REPORTED of them."""

    def __init__(self, name: str):
        self.name, self.first, self.count = name, [], 0

    @property
    def full(self) -> bool:
        return self.count > _MAX_REPORTED

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.first) < _MAX_REPORTED:
            self.first.append(f"{self.name}: {message}")

    def raise_if_any(self) -> None:
        if self.count:
            more = self.count - 1
            counted = f"at least {more}" if self.full else f"{more}"
            raise DataError(self.first[0] + (f" (and {counted} more problem{'s' if more > 1 else ''})"
                                             if more else ""))


def _blank(cells: list[str]) -> bool:
    return all(not c.strip() for c in cells)


def _band_values(cells: tuple[str, ...]) -> np.ndarray | None:
    """The fast path: every band a finite number (float() rules, like _number); else None."""
    try:
        values = np.fromiter(map(float, cells), np.float64, N_BANDS)
    except ValueError:
        return None
    return values if np.isfinite(values).all() else None


def _check_header(header: list[str], name: str,
                  require_target: bool = True) -> tuple[list[int], int | None, int | None]:
    expected = f"expected '{ID_COLUMN}' (optional), band columns '0'..'{N_BANDS - 1}' and " \
               f"'{TARGET_COLUMN}'" + ("" if require_target else " (optional)")
    if TARGET_COLUMN not in header and not require_target and _looks_like_data(header):
        raise DataError(f"{name}: row 1: wrong header (the first row holds measurements, "
                        f"not column names); {expected}")
    if TARGET_COLUMN not in header and require_target:
        if _looks_like_data(header):
            raise DataError(f"{name}: row 1: wrong header (the first row holds measurements, "
                            f"not column names); {expected}")
        raise DataError(f"{name}: row 1: wrong header, no '{TARGET_COLUMN}' column; {expected}"
                        + _separator_hint(header))
    seen: dict[str, int] = {}
    for index, column in enumerate(header):
        if column in seen:
            raise DataError(f"{name}: row 1: column '{column}' appears twice")
        seen[column] = index
    missing = [c for c in BAND_COLUMNS if c not in seen]
    if missing:
        raise DataError(f"{name}: row 1: missing band column{'s' if len(missing) > 1 else ''} "
                        f"{_short_list(missing)} ({len(missing)} of {N_BANDS})" + _separator_hint(header))
    known = set(BAND_COLUMNS) | {TARGET_COLUMN, ID_COLUMN}
    extra = [c for c in header if c not in known]
    if extra:
        raise DataError(f"{name}: row 1: unexpected column{'s' if len(extra) > 1 else ''} "
                        f"{_short_list(extra)}; {expected}")
    return [seen[c] for c in BAND_COLUMNS], seen.get(TARGET_COLUMN), seen.get(ID_COLUMN)


def _number(cell: str, line_no: int, column: str, problems: _Problems) -> float:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        shown = repr(text[:40]) if text else "an empty cell"
        problems.add(f"row {line_no}, column '{column}': {shown} is not a number")
        return 0.0
    if not math.isfinite(value):
        problems.add(f"row {line_no}, column '{column}': {text} is not a finite number")
        return 0.0
    return value


def _duplicate_ids(ids: list[str], name: str) -> list[str]:
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    dups = sorted(i for i, n in counts.items() if n > 1)
    if not dups:
        return []
    return [f"{name}: {len(dups)} duplicated {ID_COLUMN} value{'s' if len(dups) > 1 else ''} "
            f"({_short_list(dups)}); rows kept, but repeated scans make CV optimistic"]


_OTHER_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _separator_hint(header: list[str]) -> str:
    """A file split on something other than commas reads as a few long header cells."""
    line = ",".join(header)
    counts = {sep: line.count(sep) for sep in _OTHER_SEPARATORS}
    sep = max(counts, key=counts.get)
    if counts[sep] < max(2, len(header)):
        return ""
    return (f" (the header looks separated by {_OTHER_SEPARATORS[sep]} {sep!r}, not commas: "
            "save the file as comma-separated CSV)")


def _looks_like_data(cells: list[str]) -> bool:
    # Band names are integers; a data row is mostly non-integer reflectances.
    fractional = 0
    for cell in cells:
        try:
            fractional += not float(cell).is_integer()
        except ValueError:
            pass
    return fractional > len(cells) // 2


def _short_list(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(f"'{i}'" for i in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
