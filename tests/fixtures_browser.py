"""Headless Chromium for the browser tests: Debian's `chromium` (apt-installed when absent, as the
suite installs PostgreSQL) driven by Playwright with `executable_path` (no browser download)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[1]
# Screenshots and other browser artifacts (git-ignored by default).
ARTIFACTS = Path(os.environ.get("DON_TEST_ARTIFACTS") or REPO / "test-artifacts") / "console"


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of Debian's chromium, installed with apt when absent; Playwright importable."""
    if shutil.which("chromium") is None:
        from tests.fixtures_cluster import binaries
        try:
            binaries.apt_install(["chromium"])
        except Exception as exc:  # no root, no apt, no package: the browser test cannot run here
            unavailable(f"chromium is not installed and apt failed: {exc}")
    path = shutil.which("chromium")
    if path is None:
        unavailable("no chromium on PATH after installing it")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        unavailable(f"the playwright package is missing: {exc}")
    return path
