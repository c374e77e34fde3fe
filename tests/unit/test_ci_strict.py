"""Under CI=true a missing prerequisite fails instead of skipping (tests/conftest.py: `unavailable`),
and `make test` (tests/run.py) fails a part in which no test passed; outside CI both stay lenient.
Real pytest processes on tiny test files."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from tests import run
from tests.conftest import REPO

MISSING = ("import pytest\n"
           "from tests.conftest import unavailable\n"
           "@pytest.fixture\n"
           "def widget():\n"
           "    unavailable('the widget binary is absent')\n"
           "def test_in_a_fixture(widget):\n"
           "    pass\n"
           "def test_in_a_test():\n"
           "    unavailable('the gadget data is absent')\n")


def _env(ci: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != run.CI_ENV}
    if ci is not None:
        env[run.CI_ENV] = ci
    return env


def _pytest(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_missing.py").write_text(MISSING)
    # cwd = the repository, so that `tests` imports from it; rootdir and ini the tiny file's own.
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA",
                           "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
                          cwd=REPO, env=_env(ci), capture_output=True, text=True, timeout=120)


def test_a_missing_prerequisite_fails_under_ci(tmp_path):
    out = _pytest(tmp_path, "true")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 failed, 1 error" in out.stdout, out.stdout
    for reason in ("the widget binary is absent", "the gadget data is absent"):
        assert f"{reason} (CI=true: a missing prerequisite is a failure)" in out.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_a_missing_prerequisite_skips_outside_ci(tmp_path, ci):
    out = _pytest(tmp_path, ci)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 skipped" in out.stdout and "failed" not in out.stdout, out.stdout
    assert "the widget binary is absent" in out.stdout and "the gadget data is absent" in out.stdout


def _part(tmp_path, name: str, body: str, *args: str) -> run.Part:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / f"test_{name}.py").write_text(body)
    return run.Part(name, [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "--rootdir", str(folder), "-c", str(folder / "pytest.ini"), str(folder), *args],
                    may_select_none=True)


SKIPPED = "import pytest\ndef test_a():\n    pytest.skip('no cluster')\n"
PASSING = "def test_ok():\n    pass\n"


def test_make_test_fails_a_part_that_tested_nothing_under_ci(tmp_path, monkeypatch):
    monkeypatch.setenv(run.CI_ENV, "true")
    parts = [_part(tmp_path, "skipped", SKIPPED), _part(tmp_path, "deselected", PASSING, "-k", "nothing"),
             _part(tmp_path, "passing", PASSING + SKIPPED)]
    out = io.StringIO()
    assert run.run_parts(parts, out=out) == 1
    assert [p.returncode for p in parts] == [1, 1, 0], out.getvalue()
    assert "CI=true: no test of this part passed (1 skipped in " in out.getvalue()
    assert "CI=true: no test of this part passed (1 deselected in " in out.getvalue()


def test_make_test_lets_such_a_part_pass_outside_ci(tmp_path, monkeypatch):
    monkeypatch.delenv(run.CI_ENV, raising=False)
    parts = [_part(tmp_path, "skipped", SKIPPED), _part(tmp_path, "deselected", PASSING, "-k", "nothing")]
    assert run.run_parts(parts, out=io.StringIO()) == 0


@pytest.mark.parametrize("target, collected", [("local", False), ("kind", True)])
def test_kind_only_tests_are_deselected_not_skipped_elsewhere(target, collected):
    """The KServe-controller tests run only on kind; on the local cluster (CI's target) they are
    deselected at collection, so that CI's e2e report holds no skip."""
    env = dict(_env(None), DON_E2E_TARGET=target)
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                          "tests/e2e/test_kind_kserve.py"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert ("test_kind_kserve.py::test_rollout_splits_traffic_by_weight_and_promotes" in out.stdout) == collected
    assert ("3 deselected" in out.stdout) != collected, out.stdout


@pytest.mark.parametrize("provided", [False, True])
def test_gateway_api_crd_checks_are_deselected_without_the_crd(tmp_path, provided):
    """The upstream HTTPRoute CRD is never in the repository (nor in CI's ../shared): where it is
    absent its checks are deselected, not skipped; where a developer provides it they run."""
    crds = tmp_path / "crds"
    crds.mkdir()
    if provided:
        (crds / "gateway.networking.k8s.io_httproutes.yaml").write_text("{}\n")
    env = dict(_env(None), DON_GATEWAY_API_CRDS=str(crds))
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q",
                          "tests/integration/test_gateway_api_route.py"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert ("test_gateway_api_route.py::" in out.stdout) == provided, out.stdout
    assert ("deselected" in out.stdout) != provided, out.stdout
