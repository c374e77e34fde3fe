"""Peak memory of loading a training CSV: the streaming loader against a whole-file baseline.

Generates a valid lab-format file of about --mb MB (synthetic spectra) and a junk file of the
same size (rows with the wrong number of cells), then loads each in a fresh process and prints the
peak resident memory above the resident memory just before loading (the high-water mark after
loading minus VmRSS before it: an upper bound), as a multiple of the file size. The baseline,
measured in the same run, is what the loader did before it streamed: read the whole file, decode
it, parse it into per-row arrays, stack them, and collect every row-length problem.

Usage: python benchmarks/data_loading.py [--mb 200] [--dir /tmp]. At 200 MB a valid load takes
about half a minute on a busy 2-core machine and the baseline needs about 2 GB of memory.
Measured (200 MB, 2 cores shared): valid file 0.70x the file size streaming vs 7.3x baseline;
junk file 0.09x vs 9.5x.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_files(directory: Path, megabytes: float) -> tuple[Path, Path]:
    from don_core.schema import BAND_COLUMNS, N_BANDS
    from training_job.synthetic import generate, to_csv
    block = generate(500, seed=0)
    body = to_csv(block.X, block.y, block.ids).split(b"\n", 1)[1]      # 500 rows, no header
    header = to_csv(block.X[:1], block.y[:1], block.ids[:1]).split(b"\n", 1)[0] + b"\n"
    good, junk = directory / "good.csv", directory / "junk.csv"
    target = int(megabytes * 1e6)
    with open(good, "wb") as fh:
        fh.write(header)
        while fh.tell() < target:
            fh.write(body)
    # junk: the right header, then rows of 6 cells instead of 450 (the 200 MB junk file)
    row = b"x1,0.512345,0.612345,0.712345,0.8123,7\n"
    with open(junk, "wb") as fh:
        fh.write(b",".join([b"hsi_id", *(c.encode() for c in BAND_COLUMNS), b"vomitoxin_ppb"]) + b"\n")
        chunk = row * 100_000
        while fh.tell() < target:
            fh.write(chunk)
    assert N_BANDS == 448
    return good, junk


def baseline_load(path: str) -> str:
    """The pre-streaming loader: whole file in memory, every problem kept."""
    import csv
    import io

    import numpy as np
    raw = Path(path).read_bytes()
    text = raw.decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    problems, rows, targets = [], [], []
    for line_no, cells in enumerate(reader, start=2):
        if len(cells) != len(header):
            problems.append(f"{path}: row {line_no}: {len(cells)} cells, header has {len(header)}")
            continue
        rows.append(np.array([float(c) for c in cells[1:-1]]))
        targets.append(float(cells[-1]))
    if problems:
        return f"refused ({len(problems)} problems kept)"
    return f"{np.vstack(rows).shape[0]} rows"


def streaming_load(path: str) -> str:
    from training_job.data import DataError, load_dataset
    try:
        return f"{load_dataset(path).rows} rows"
    except DataError as exc:
        return f"refused: {str(exc)[-60:]}"


def child(loader: str, path: str) -> None:
    import resource
    import numpy  # noqa: F401  (imports before the start figure)
    import training_job.data  # noqa: F401
    # current resident memory now (not the high-water mark, which the imports may have raised);
    # the peak above it is an upper bound of what loading needed
    start = int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS"))
                .split()[1]) * 1024
    began = time.monotonic()
    result = {"baseline": baseline_load, "streaming": streaming_load}[loader](path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"result": result, "peak_above_start": peak - start,
                      "seconds": time.monotonic() - began}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=200.0)
    parser.add_argument("--dir", default=None, help="where to write the files (default: a temp dir)")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=opts.dir) as tmp:
        good, junk = write_files(Path(tmp), opts.mb)
        print(f"{'file':<6} {'MB':>7}  {'loader':<10} {'peak above start':>17} {'x file':>7} "
              f"{'seconds':>8}  result")
        for path in (good, junk):
            size = path.stat().st_size
            for loader in ("baseline", "streaming"):
                out = subprocess.run([sys.executable, __file__, "--child", loader, str(path)],
                                     capture_output=True, text=True, check=True,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
                fig = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{path.stem:<6} {size / 1e6:>7.1f}  {loader:<10} "
                      f"{fig['peak_above_start'] / 1e6:>14.1f} MB {fig['peak_above_start'] / size:>7.2f} "
                      f"{fig['seconds']:>8.1f}  {fig['result']}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
