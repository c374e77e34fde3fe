"""Token source, token bucket and which paths stay open for probes."""
from __future__ import annotations

import os
import time

import pytest

from model_server.security import TokenBucket, TokenSource, _is_open, limiter_from_env


def test_probe_and_metrics_paths_stay_open():
    for path in ("/v2/health/live", "/v2/health/ready", "/", "/metrics", "/v1/models/don-rf",
                 "/v2/models/don-rf/ready"):
        assert _is_open(path), path
    for path in ("/v1/models/don-rf:predict", "/v2/models/don-rf/infer", "/status",
                 "/v2/models/don-rf", "/v2/models/don-rf/status", "/openapi.json"):
        assert not _is_open(path), path


def test_token_from_variable_or_off():
    assert TokenSource({"DON_API_TOKEN": "s3cret"}).current() == b"s3cret"
    assert not TokenSource({}).enabled


def test_token_file_is_reread_after_rotation(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("first\n")
    source = TokenSource({"DON_API_TOKEN_FILE": str(secret), "DON_API_TOKEN": "ignored"})
    assert source.current() == b"first"
    secret.write_text("second-token\n")
    os.utime(secret, ns=(time.time_ns() + 10**9,) * 2)
    source._checked = 0.0  # skip the once-per-second stat throttle
    assert source.current() == b"second-token"


def test_missing_or_empty_token_file_fails_at_start(tmp_path):
    with pytest.raises(OSError):
        TokenSource({"DON_API_TOKEN_FILE": str(tmp_path / "absent")})
    (tmp_path / "empty").write_text("")
    with pytest.raises(ValueError, match="empty"):
        TokenSource({"DON_API_TOKEN_FILE": str(tmp_path / "empty")})


def test_token_bucket_allows_burst_then_paces():
    bucket = TokenBucket(rate=2.0, burst=3)
    now = 100.0
    assert [bucket.take(b"a", now) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take(b"a", now)
    assert wait == pytest.approx(0.5)
    assert bucket.take(b"b", now) == 0.0  # other callers have their own bucket
    assert bucket.take(b"a", now + 0.5) == 0.0  # refilled at 2 tokens/s


def test_token_bucket_memory_is_bounded():
    bucket = TokenBucket(rate=1.0, burst=1, max_keys=10)
    for i in range(100):
        bucket.take(str(i).encode(), 0.0)
    assert len(bucket._buckets) == 10


def test_rate_limit_from_env():
    assert limiter_from_env({}) is None
    limiter = limiter_from_env({"DON_RATE_LIMIT_RPS": "5"})
    assert limiter.rate == 5.0 and limiter.burst == 5.0
