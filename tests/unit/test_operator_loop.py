"""The operator's liveness answer (kopf's endpoint runs this probe): a stopped or stalled
reconcile loop fails it, so that the kubelet restarts the pod."""
import asyncio
import time

import kopf
import pytest

from ops.operator import STALE_PASSES, Reconciler


def _health(reconciler: Reconciler, loop_alive: bool) -> dict:
    async def probe():
        task = asyncio.create_task(asyncio.sleep(0 if not loop_alive else 60))
        await asyncio.sleep(0.01)  # a finished task when not alive
        try:
            return reconciler.health(task)
        finally:
            task.cancel()
    return asyncio.run(probe())


def test_liveness_follows_the_reconcile_loop():
    reconciler = Reconciler(engine=None, kube=None, namespaces=[], tick=5.0)
    assert _health(reconciler, loop_alive=True) == {"rollouts": 0, "lastPassSecondsAgo": 0.0}
    reconciler.last_pass, reconciler.listed = time.monotonic() - 10, 3
    assert _health(reconciler, loop_alive=True)["rollouts"] == 3
    with pytest.raises(kopf.PermanentError, match="the reconcile loop is not running"):
        _health(reconciler, loop_alive=False)
    reconciler.last_pass = time.monotonic() - 59  # 10 ticks of 5 s, but at least a minute
    assert _health(reconciler, loop_alive=True)["lastPassSecondsAgo"] >= 59
    reconciler.last_pass = time.monotonic() - 61
    with pytest.raises(kopf.PermanentError, match="no reconcile pass for 61 s"):
        _health(reconciler, loop_alive=True)
    slow = Reconciler(engine=None, kube=None, namespaces=[], tick=10.0)
    slow.last_pass = time.monotonic() - STALE_PASSES * 10.0 + 5
    assert _health(slow, loop_alive=True)["lastPassSecondsAgo"] >= 95
    with pytest.raises(kopf.PermanentError):
        reconciler.health(None)  # not started
