"""Load the lab's CSV for training: from a file (a PVC mount) or S3, then what training needs beyond
a valid file. The format and its validation live in don_core.labcsv (shared with the console).
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from don_core.labcsv import (DataError, Dataset, SourceError, parse_csv,  # noqa: F401 (re-exported)
                             parse_stream)
from don_core.schema import TARGET_COLUMN


def open_source(src: str) -> BinaryIO:
    """A binary stream of a local file (a PVC mount) or an `s3://bucket/key` object."""
    if src.startswith("s3://"):
        from don_core.store import s3_client, s3_code, s3_error_types, s3_failure, s3_status
        bucket, _, key = src[len("s3://"):].partition("/")
        if not bucket or not key:
            raise DataError(f"{src}: expected s3://bucket/key")
        client = s3_client()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"]
        except s3_error_types() as exc:
            if s3_status(exc) == 404 and s3_code(exc) in ("NoSuchKey", "NoSuchBucket"):
                # The --data value names nothing: bad input, like a missing local file.
                raise DataError(f"{src}: no such object ({s3_code(exc)})") from None
            raise SourceError(s3_failure("cannot read", src, exc, client)) from None
    path = Path(src)
    if path.is_dir():
        raise DataError(f"{src}: is a directory, not a CSV file")
    if not path.exists():
        raise DataError(f"{src}: no such file")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataError(f"{src}: cannot open ({exc.strerror or exc})") from None


def load_dataset(src: str) -> Dataset:
    stream = open_source(src)
    try:
        return parse_stream(stream, name=src)
    finally:
        stream.close()


def check_trainable(dataset: Dataset, folds: int) -> None:
    """What a valid file can still lack for training: variation in the target, and enough rows
    for the stratified cross-validation and hold-out (checked before any fitting)."""
    from training_job import evaluate
    y, name = dataset.y, dataset.source
    if len(y) > 1 and np.all(y == y[0]):
        raise DataError(f"{name}: column '{TARGET_COLUMN}' holds the same value ({y[0]:g}) in "
                        f"all {len(y)} rows; a model cannot learn from a target without variation")
    need = evaluate.min_rows(folds)
    if len(y) < need:
        raise DataError(f"{name}: {len(y)} data row{'s' if len(y) != 1 else ''}, too few to train "
                        f"and evaluate: the {folds}-fold cross-validation and the hold-out, "
                        f"stratified on {evaluate.STRATA} DON ranges, need at least {need}")
    try:
        evaluate.check_splits(y, folds)
    except ValueError as exc:
        raise DataError(f"{name}: the {len(y)} rows cannot be split for a stratified {folds}-fold "
                        f"evaluation ({str(exc).splitlines()[0]})") from None
