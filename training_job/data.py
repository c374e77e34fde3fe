"""Load and validate the lab's CSV format before any training.

Format: optional `hsi_id`, band columns `0`..`447` (any order), target `vomitoxin_ppb`.
LF and CRLF line endings, a UTF-8 byte-order mark and spreadsheet re-saves are accepted. Every
problem is reported with the file, the row (1-based line number, header = row 1) and the column.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

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

    @property
    def rows(self) -> int:
        return len(self.y)


def read_source(src: str) -> bytes:
    """Bytes of a local file (a PVC mount) or an `s3://bucket/key` object."""
    if src.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        from don_core.store import s3_client
        bucket, _, key = src[len("s3://"):].partition("/")
        if not bucket or not key:
            raise DataError(f"{src}: expected s3://bucket/key")
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise DataError(f"{src}: cannot read ({exc})") from None
    path = Path(src)
    if not path.is_file():
        raise DataError(f"{src}: no such file")
    return path.read_bytes()


def load_dataset(src: str) -> Dataset:
    raw = read_source(src)
    return parse_csv(raw, name=src)


def parse_csv(raw: bytes, name: str) -> Dataset:
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise DataError(f"{name}: file is empty")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [cell.strip() for cell in next(reader)]
    band_index, target_index, id_index = _check_header(header, name)

    problems: list[str] = []
    X_rows, y_rows, ids = [], [], []
    for line_no, cells in enumerate(reader, start=2):
        if not cells or all(not c.strip() for c in cells):
            continue  # blank lines (a trailing newline, a spreadsheet's empty row)
        if len(cells) != len(header):
            problems.append(f"{name}: row {line_no}: {len(cells)} cells, header has {len(header)}")
            continue
        values = np.empty(N_BANDS)
        for band, col in enumerate(band_index):
            values[band] = _number(cells[col], name, line_no, header[col], problems)
        target = _number(cells[target_index], name, line_no, TARGET_COLUMN, problems)
        if target < 0:
            problems.append(f"{name}: row {line_no}, column '{TARGET_COLUMN}': "
                            f"negative concentration {cells[target_index].strip()}")
        X_rows.append(values)
        y_rows.append(target)
        ids.append(cells[id_index].strip() if id_index is not None else f"row-{line_no}")
        if len(problems) > _MAX_REPORTED:
            break
    if problems:
        more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})" \
            if len(problems) > 1 else ""
        raise DataError(problems[0] + more)
    if not y_rows:
        raise DataError(f"{name}: no data rows below the header")
    return Dataset(X=np.vstack(X_rows), y=np.asarray(y_rows), ids=ids, source=name, sha256=digest,
                   warnings=_duplicate_ids(ids, name) if id_index is not None else [],
                   has_ids=id_index is not None)


def _check_header(header: list[str], name: str) -> tuple[list[int], int, int | None]:
    expected = f"expected '{ID_COLUMN}' (optional), band columns '0'..'{N_BANDS - 1}' and " \
               f"'{TARGET_COLUMN}'"
    if TARGET_COLUMN not in header:
        if _looks_like_data(header):
            raise DataError(f"{name}: row 1: wrong header (the first row holds measurements, "
                            f"not column names); {expected}")
        raise DataError(f"{name}: row 1: wrong header, no '{TARGET_COLUMN}' column; {expected}")
    seen: dict[str, int] = {}
    for index, column in enumerate(header):
        if column in seen:
            raise DataError(f"{name}: row 1: column '{column}' appears twice")
        seen[column] = index
    missing = [c for c in BAND_COLUMNS if c not in seen]
    if missing:
        raise DataError(f"{name}: row 1: missing band column{'s' if len(missing) > 1 else ''} "
                        f"{_short_list(missing)} ({len(missing)} of {N_BANDS})")
    known = set(BAND_COLUMNS) | {TARGET_COLUMN, ID_COLUMN}
    extra = [c for c in header if c not in known]
    if extra:
        raise DataError(f"{name}: row 1: unexpected column{'s' if len(extra) > 1 else ''} "
                        f"{_short_list(extra)}; {expected}")
    return [seen[c] for c in BAND_COLUMNS], seen[TARGET_COLUMN], seen.get(ID_COLUMN)


def _number(cell: str, name: str, line_no: int, column: str, problems: list[str]) -> float:
    text = cell.strip()
    try:
        value = float(text)
    except ValueError:
        shown = repr(text) if text else "an empty cell"
        problems.append(f"{name}: row {line_no}, column '{column}': {shown} is not a number")
        return 0.0
    if not math.isfinite(value):
        problems.append(f"{name}: row {line_no}, column '{column}': {text} is not a finite number")
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
