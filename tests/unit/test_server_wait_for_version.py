"""model_server.wait_for_version: what a server says while its version is not published, and how
often it says it (the whole start-wait-load path: tests/integration/test_server_waits_for_version.py)."""
from __future__ import annotations

import logging
import threading
import time

from model_server.model import DonModel
from model_server.wait_for_version import load_when_published, waiting_reason


def test_the_reason_names_the_version_and_the_file_awaited(tmp_path):
    version_dir = tmp_path / "don-rf" / "3"
    assert waiting_reason("don-rf", version_dir) == (
        f"version 3 of don-rf is not in the store yet: waiting for {version_dir}/metadata.json")
    version_dir.mkdir(parents=True)  # there, but not published (no metadata.json)
    assert waiting_reason("don-rf", version_dir) is not None
    assert waiting_reason("don-rf", tmp_path / "models") == (
        f"the version of don-rf is not in the store yet: waiting for {tmp_path}/models/metadata.json")
    (version_dir / "metadata.json").write_text("{}")
    assert waiting_reason("don-rf", version_dir) is None  # loading decides from here on


def test_the_wait_is_logged_once_a_period_not_once_a_poll(tmp_path, caplog):
    model = DonModel("don-rf", tmp_path / "don-rf" / "1")
    stop, result = threading.Event(), []
    waiter = threading.Thread(target=lambda: result.append(
        load_when_published(model, stop, poll_seconds=0.01, log_every=0.4)))
    with caplog.at_level(logging.INFO, logger="model_server"):
        started = time.monotonic()
        waiter.start()
        time.sleep(1.0)
        assert (model.state, model.ready) == ("waiting", False)
        assert model.reason == waiting_reason("don-rf", model.model_dir)
        stop.set()
        waiter.join(10)
        elapsed = time.monotonic() - started
    assert result == [False] and not model.ready  # stopped before anything appeared
    waits = [r for r in caplog.records if r.getMessage() == model.reason]
    # about 100 polls, one line at the start and one per 0.4 s after it
    assert 2 <= len(waits) <= 1 + elapsed / 0.4, (len(waits), elapsed)
    assert {r.levelname for r in waits} == {"WARNING"}
