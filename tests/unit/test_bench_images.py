"""The pure helpers of benchmarks/images.py (the script itself is run by hand, not timed here)."""
import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_images", Path(__file__).resolve().parents[2] / "benchmarks" / "images.py")
images = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(images)


def test_rss_is_parsed_from_proc_status():
    text = "Name:\tpython\nVmPeak:\t  900 kB\nVmRSS:\t  123456 kB\nThreads:\t4\n"
    assert images.parse_rss_kb(text) == 123456 * 1024
    with pytest.raises(ValueError):
        images.parse_rss_kb("Name:\tpython\n")


def test_rss_of_this_process_is_plausible():
    import os
    assert images.rss(os.getpid()) > 10_000_000


def test_largest_packages_are_sorted_and_marked_when_imported():
    sizes = {"tensorflow": 1_300, "kubernetes": 40, "onnxruntime": 60, "numpy": 60, "pandas": 70}
    top = images.largest(sizes, {"onnxruntime", "numpy"}, n=4)
    assert top == [("tensorflow", 1_300, False), ("pandas", 70, False), ("numpy", 60, True),
                   ("onnxruntime", 60, True)]


def test_dir_sizes_counts_unpacked_and_compressed(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100_000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 50_000)
    unpacked, compressed = images.dir_sizes(tmp_path)
    assert unpacked == 150_000
    assert 0 < compressed < 10_000  # repetitive bytes compress well; the tar headers are counted


def test_cpu_seconds_of_this_process_is_plausible():
    import os
    sum(i * i for i in range(200_000))  # some CPU time of our own
    assert 0 < images.cpu_seconds(os.getpid()) < 10_000
