"""Token source, token bucket and which paths stay open for probes."""
from __future__ import annotations

import os
import time

import pytest

from model_server.security import (Guard, TokenBucket, TokenSource, _grpc_peer, is_open,
                                   limiter_from_env)


def test_probe_and_metrics_paths_stay_open():
    for path in ("/v2/health/live", "/v2/health/ready", "/", "/metrics", "/v1/models/don-rf",
                 "/v2/models/don-rf/ready"):
        assert is_open(path), path
    for path in ("/v1/models/don-rf:predict", "/v2/models/don-rf/infer", "/status",
                 "/v2/models/don-rf", "/v2/models/don-rf/status", "/openapi.json"):
        assert not is_open(path), path


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


def test_missing_or_empty_token_file_is_a_named_problem_not_an_exception(tmp_path):
    absent = TokenSource({"DON_API_TOKEN_FILE": str(tmp_path / "absent")})
    assert "DON_API_TOKEN_FILE" in absent.problem and "absent" in absent.problem
    (tmp_path / "empty").write_text("\n")
    empty = Guard.from_env({"DON_API_TOKEN_FILE": str(tmp_path / "empty")})
    assert "empty" in empty.problem
    refusal = empty.check("http", b"anything", b"10.0.0.1")
    assert refusal.status == 503 and "empty" in refusal.message


def test_rate_limit_is_per_caller_not_per_shared_token():
    guard = Guard(TokenSource({"DON_API_TOKEN": "shared"}), TokenBucket(1.0, 2), None)
    assert [guard.check("http", b"shared", b"10.0.0.1") for _ in range(2)] == [None, None]
    assert guard.check("http", b"shared", b"10.0.0.1").status == 429
    assert guard.check("http", b"shared", b"10.0.0.2") is None  # same token, another caller


def test_wrong_token_flood_is_throttled_per_caller():
    guard = Guard(TokenSource({"DON_API_TOKEN": "right"}), None, TokenBucket(0.01, 3))
    answers = [guard.check("http", b"guess", b"10.0.0.9").status for _ in range(5)]
    assert answers == [401, 401, 401, 429, 429]
    # once throttled, even the right token waits: guesses are no longer checked
    assert guard.check("http", b"right", b"10.0.0.9").status == 429
    assert guard.check("http", b"right", b"10.0.0.1") is None


def test_caller_from_a_trusted_forwarding_header_only_when_configured():
    plain = Guard.from_env({})
    assert plain.caller(b"1.2.3.4", "10.0.0.1") == b"10.0.0.1"
    behind_proxy = Guard.from_env({"DON_CLIENT_ID_HEADER": "X-Forwarded-For"})
    assert behind_proxy.caller(b"1.2.3.4, 10.9.9.9", "10.0.0.1") == b"1.2.3.4"
    assert behind_proxy.caller(None, "10.0.0.1") == b"10.0.0.1"


def test_grpc_peer_address_without_port():
    assert _grpc_peer("ipv4:127.0.0.1:5000") == "127.0.0.1"
    assert _grpc_peer("ipv6:%5B::1%5D:5000") == "::1"


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
