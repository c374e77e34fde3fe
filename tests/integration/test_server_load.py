"""Load test: hold a real server at a steady request rate for 60 s on loopback, zero errors.

Open loop: request i is due at start + i / RATE whatever the server does, so a server that falls
behind shows up as a lower rate held (and growing latency), not as a slower client.
"""
from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import numpy as np
import pytest

RATE = 150          # requests per second (a few % of measured capacity on a busy 2-core box)
SECONDS = 60
CONNECTIONS = 16


def _requests(rows):
    rows = np.asarray(rows, dtype=np.float32)
    head = json.dumps({"inputs": [{"name": "spectra", "shape": [10, 448], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 10 * 448 * 4}}]}).encode()
    return [
        ("/v1/models/don-rf:predict", json.dumps({"instances": rows[:1].tolist()}).encode(),
         {"Content-Type": "application/json"}),
        ("/v2/models/don-rf/infer", json.dumps({"inputs": [{
            "name": "spectra", "shape": [5, 448], "datatype": "FP32",
            "data": rows[:5].tolist()}]}).encode(), {"Content-Type": "application/json"}),
        ("/v2/models/don-rf/infer", head + np.resize(rows, (10, 448)).tobytes(),
         {"Content-Type": "application/octet-stream",
          "Inference-Header-Content-Length": str(len(head))}),
    ]


async def _drive(base: str, mix) -> dict:
    total = RATE * SECONDS
    latencies, failures = [], []
    next_index = 0
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        start = time.perf_counter()

        async def worker():
            nonlocal next_index
            while next_index < total:
                i = next_index
                next_index += 1
                delay = start + i / RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                path, body, headers = mix[i % len(mix)]
                sent = time.perf_counter()
                try:
                    async with session.post(base + path, data=body, headers=headers) as resp:
                        await resp.read()
                        if resp.status != 200:
                            failures.append(f"{path}: {resp.status}")
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    failures.append(f"{path}: {exc!r}")
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        elapsed = time.perf_counter() - start
    return {"requests": len(latencies), "elapsed": elapsed, "failures": failures,
            "p50_ms": 1e3 * float(np.percentile(latencies, 50)),
            "p99_ms": 1e3 * float(np.percentile(latencies, 99))}


@pytest.mark.cpu_timed
def test_steady_rate_for_a_minute_without_errors(rf_server, golden_rows):
    result = asyncio.run(_drive(rf_server.base, _requests(golden_rows)))
    held = result["requests"] / result["elapsed"]
    print(f"\nload test: held {held:.1f} req/s for {result['elapsed']:.1f} s "
          f"({result['requests']} requests: V1 1 row, V2 JSON 5 rows, V2 binary 10 rows), "
          f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
          f"{len(result['failures'])} errors")
    assert not result["failures"], result["failures"][:10]
    assert result["requests"] == RATE * SECONDS
    assert held >= 0.97 * RATE, f"server fell behind: {held:.1f} of {RATE} req/s"
