"""The documentation site builds with no broken link or anchor, its generated reference pages match
the code, and the README stays a short front page."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from scripts import gen_docs
from tests.conftest import REPO


def mkdocs_build(root, site) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_site_builds_strictly(tmp_path):
    out = mkdocs_build(REPO, tmp_path / "site")
    assert out.returncode == 0, f"mkdocs build --strict failed:\n{out.stderr[-4000:]}"
    assert (tmp_path / "site" / "reference" / "helm-values" / "index.html").is_file()
    assert "WARNING" not in out.stderr, out.stderr[-4000:]


def test_a_broken_anchor_fails_the_build(tmp_path):
    shutil.copy(REPO / "mkdocs.yml", tmp_path)
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    page = tmp_path / "docs" / "how-to" / "uninstall.md"
    page.write_text(page.read_text() + "\nSee [the runbook](../runbook.md#no-such-alert).\n")
    out = mkdocs_build(tmp_path, tmp_path / "site")
    assert out.returncode != 0
    assert "no-such-alert" in out.stderr, out.stderr[-2000:]


@pytest.mark.chart
def test_reference_pages_are_up_to_date(helm):
    """In a process of its own: rendering imports the model server's app and the CLIs."""
    out = subprocess.run([sys.executable, "-m", "scripts.gen_docs", "--check"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_staleness_is_detected(tmp_path):
    rendered = {"cli.md": "# Command lines\n", "helm-values.md": "# Helm values\n"}
    for name, text in rendered.items():
        (tmp_path / name).write_text(text)
    assert gen_docs.stale(rendered, tmp_path) == []
    (tmp_path / "cli.md").write_text("# Command lines\nedited by hand\n")
    (tmp_path / "extra.md").write_text("# left over\n")
    assert gen_docs.stale(rendered, tmp_path) == ["cli.md", "extra.md"]
    (tmp_path / "helm-values.md").unlink()
    assert gen_docs.stale(rendered, tmp_path) == ["cli.md", "extra.md", "helm-values.md"]


def test_every_reference_page_is_in_the_nav():
    nav = (REPO / "mkdocs.yml").read_text()
    for name in gen_docs.PAGES:
        assert f"reference/{name}" in nav, name


def test_readme_is_a_short_front_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    assert "```mermaid" in readme
    dated = re.findall(r"\b20\d\d-\d\d-\d\d\b|\b\d{1,2} (?:December|November) 20\d\d\b", readme)
    assert not dated, f"dated measurements belong in docs/performance/: {dated}"
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / link).is_file(), link
