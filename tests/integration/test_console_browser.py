"""The console in a real browser: headless Debian Chromium driven by Playwright (no browser
download: `executable_path`), against `python -m console` on loopback with a real model server.

Screenshots of every page (1280 px and phone width) are written to $DON_TEST_ARTIFACTS/console
(default: test-artifacts/console in the repository, git-ignored); Monitoring with a real
recorder holding a few days of predictions and lab results.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, SHARED
from tests.fixtures_browser import ARTIFACTS
from tests.fixtures_server import post_records
from tests.net import free_port, running

pytestmark = pytest.mark.slow
ROWS = 20


def first_rows(tmp_path: Path) -> Path:
    """The real data's first 20 rows (header kept), or 20 synthetic rows without ../shared."""
    path = tmp_path / "lab.csv"
    real = SHARED / "data" / "corn_hsi_don.csv"
    if real.is_file():
        with open(real, newline="") as fh:
            path.write_text("".join(line for _, line in zip(range(ROWS + 1), fh)))
    else:
        from training_job import synthetic
        ds = synthetic.generate(ROWS, seed=16)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["hsi_id", *map(str, range(448)), "vomitoxin_ppb"])
        writer.writerows([i, *map(repr, map(float, x)), float(t)] for i, x, t in zip(ds.ids, ds.X, ds.y))
        path.write_text(out.getvalue())
    return path


def recorded_days(recorder_url: str, days: int = 5) -> None:
    """A few days of recorded predictions by don-rf v1 with their lab results (for Monitoring)."""
    today = dt.datetime.now(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0, tzinfo=None)
    lab, records = ["sample_id,vomitoxin_ppb,method,measured_at"], []
    for day in range(days):
        for i, truth in enumerate((50.0, 800.0, 2000.0, 6000.0)):
            sample = f"lot-{day}-{i}"
            records.append({"time": (today - dt.timedelta(days=day)).isoformat() + "Z", "model": "don-rf",
                            "version": 1, "request_id": f"req-{day}", "row": i, "sample_id": sample,
                            "predicted_ppb": truth * (1 + 0.1 * (day - i)), "spectrum_sha256": f"{len(records):064x}",
                            "outlier_score": 0.5, "out_of_distribution": i == day % 4})
            lab.append(f"{sample},{truth},HPLC,{(today - dt.timedelta(days=day)).date()}")
    post_records(recorder_url, records)
    stored = requests.post(recorder_url + "/v1/labresults", data="\n".join(lab) + "\n", timeout=30)
    assert stored.status_code == 200, stored.text


@pytest.fixture
def console_url(rf_server, serving_store, recorder_url, tmp_path):
    recorded_days(recorder_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "console.log", "wb") as log, \
            running([sys.executable, "-m", "console", "--store", str(serving_store),
                     "--server", f"don-rf={rf_server.base}", "--recorder", recorder_url, "--port", str(port)],
                    url + "/_stcore/health", timeout=90,
                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True):
        yield url


def test_browser_upload_predict_plot_download(chromium, console_url, rf_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from don_core.labcsv import parse_csv
    data = first_rows(tmp_path)
    dataset = parse_csv(data.read_bytes(), name="lab.csv")
    direct = requests.post(rf_server.url("/v1/models/don-rf:predict"), timeout=30, json={
        "instances": dataset.X.tolist(), "parameters": {"outputs": ["decision_1000", "decision_5000"]}}).json()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)   # a busy 2-core machine renders slowly
            page.goto(console_url)
            expect(page.get_by_text("DON predictor console")).to_be_visible()
            page.locator("input[type=file]").set_input_files(str(data))
            expect(page.get_by_text("lab.csv")).to_be_visible()
            page.get_by_role("button", name="Predict").click()
            expect(page.get_by_text(f"{ROWS} predictions from don-rf version 1")).to_be_visible()
            chart = page.locator("[data-testid='stVegaLiteChart']").first
            expect(chart).to_be_visible()
            expect(chart.locator("canvas, svg").first).to_be_visible()
            expect(page.get_by_text("against the training data's band-wise range")).to_be_visible()
            with page.expect_download() as info:
                page.get_by_role("button", name="Download results (CSV)").click()
            downloaded = tmp_path / "predictions.csv"
            info.value.save_as(downloaded)
            page.screenshot(path=str(ARTIFACTS / "predict-1280.png"), full_page=True)

            # the download equals a direct V1 call on the same rows
            rows = list(csv.DictReader(io.StringIO(downloaded.read_text())))
            assert len(rows) == ROWS
            assert [r["hsi_id"] for r in rows] == dataset.ids
            assert [float(r["predicted_ppb"]) for r in rows] == [float(v) for v in direct["predictions"]]
            assert [r["decision_1000"] for r in rows] == direct["decision_1000"]
            assert {r["version"] for r in rows} == {"1"}

            # every page renders without an error box, at 1280 px and at phone width
            for width, height, suffix in ((1280, 900, "1280"), (390, 844, "phone")):
                page.set_viewport_size({"width": width, "height": height})
                for name in ("Models", "Rollouts", "Monitoring", "Predict"):
                    page.locator("[data-testid='stRadio'] label").filter(has_text=name).click()
                    expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
                    page.wait_for_load_state("networkidle")
                    if name == "Models":
                        expect(page.locator("[data-testid='stVegaLiteChart']").first).to_be_visible()
                        assert page.locator("[data-testid='stAlertContentError']").count() == 0
                    if name == "Monitoring":   # four series: error, false accepts, matched, drift
                        expect(page.locator("[data-testid='stVegaLiteChart']")).to_have_count(4)
                        expect(page.locator("[data-testid='stVegaLiteChart'] canvas, "
                                            "[data-testid='stVegaLiteChart'] svg").first).to_be_visible()
                        assert page.locator("[data-testid='stAlertContentError']").count() == 0
                    page.screenshot(path=str(ARTIFACTS / f"{name.lower()}-{suffix}.png"), full_page=True)
                    assert page.locator("text=Traceback").count() == 0
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 1, f"{overflow} px of horizontal overflow at {width} px"

            # lab results in through the Monitoring page's upload (the recorder checks every row)
            page.set_viewport_size({"width": 1280, "height": 900})
            page.locator("[data-testid='stRadio'] label").filter(has_text="Monitoring").click()
            expect(page.get_by_role("heading", name="Monitoring", exact=True)).to_be_visible()
            results = tmp_path / "lab-results.csv"
            results.write_text("sample_id,vomitoxin_ppb\nbrowser-lot-1,120\nbrowser-lot-2,4000\n")
            page.wait_for_load_state("networkidle")
            page.locator("[data-testid='stFileUploader']").filter(has_text="Lab results CSV") \
                .locator("input[type=file]").set_input_files(str(results))
            expect(page.get_by_text("lab-results.csv").first).to_be_visible()
            page.get_by_role("button", name="Import lab results").click()
            expect(page.get_by_text("lab-results.csv: 2 result(s) stored, 0 already there, 0 refused")).to_be_visible()
        finally:
            browser.close()
