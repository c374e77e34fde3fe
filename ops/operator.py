"""`python -m ops operator`: run the ModelRollout controller (kopf runs the process and its liveness
endpoint).

Every DON_OPERATOR_TICK seconds (default 5) one loop lists the ModelRollouts in the watched
namespaces and runs `Engine.tick` for each in a worker thread (never two at once for one object;
after a fault not before its delay); the rollout's own pace comes from the timestamps in its
status, so the tick only bounds how quickly a due analysis or a pause/resume/promote/abort request
is noticed. No finalizer: kopf's timers put one on every object (and kopf removes it only while it
runs), so `helm uninstall`, which deletes the operator with its ModelRollouts, hung. The serving
objects the operator creates carry ownerReferences to their ModelRollout: Kubernetes' garbage
collector removes them, nothing needs the operator at deletion time. The finalizer an older
operator left is removed on sight (upgraded installs uninstall cleanly too).

Every Event it emits is also counted in `don_rollout_events_total{namespace,rollout,reason}` (the
RolledBack alert), served on DON_OPERATOR_METRICS_PORT (default 9090; 0 turns it off).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator

import kopf
import urllib3
from prometheus_client import Counter, start_http_server

from don_core.contract import ROLLOUT_EVENTS_METRIC
from ops.rollout.controller import Engine
from ops.rollout.kube import ApiException, Kube, load_config

log = logging.getLogger("ops.operator")
ROLLOUT_EVENTS = Counter(ROLLOUT_EVENTS_METRIC, "ModelRollout Events by reason (Advanced, Promoted, RolledBack, ...)",
                         ["namespace", "rollout", "reason"])
# What kopf's timers (operators before this loop) put on every ModelRollout: removed on sight.
KOPF_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
EVENT_SOURCE = "don-operator"
STALE_PASSES = 10  # liveness fails when no pass ended for this many ticks (and at least a minute)


class Events:
    """Posts an Event for a ModelRollout (best effort: a failed post is logged, never fails the
    tick) and counts it."""

    def __init__(self, kube: Kube):
        self.kube = kube

    def __call__(self, obj: dict, kind: str, reason: str, message: str) -> None:
        meta = obj.get("metadata", {})
        ROLLOUT_EVENTS.labels(meta.get("namespace", ""), meta.get("name", ""), reason).inc()
        try:
            self.kube.create_event(obj, kind, reason, message[:1000], EVENT_SOURCE)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("%s/%s: Event %s not posted: %s", meta.get("namespace"), meta.get("name"),
                        reason, exc)


@contextlib.contextmanager
def _api_faults(what: str, delay: float) -> Iterator[None]:
    """A fault of the API server or of the network on the way to it becomes kopf's TemporaryError
    (tried again after `delay` seconds, logged in one line), never a failure of the rollout."""
    try:
        yield
    except ApiException as exc:
        raise kopf.TemporaryError(f"{what}: Kubernetes API answered {exc.status} {exc.reason}",
                                  delay=delay) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise kopf.TemporaryError(f"{what}: Kubernetes API unreachable: {exc}", delay=delay) from exc


def reconcile_once(engine: Engine, namespace: str, name: str, delay: float) -> str | None:
    """One tick; API faults are TemporaryErrors (above). Anything else is a bug and keeps its
    traceback (the loop logs it and tries again after its delay)."""
    with _api_faults(f"{namespace}/{name}", delay):
        return engine.tick(namespace, name)


class Reconciler:
    """The loop that replaced kopf's per-object timer (which needs a finalizer)."""

    def __init__(self, engine: Engine, kube: Kube, namespaces: list[str], tick: float):
        self.engine, self.kube, self.namespaces, self.tick = engine, kube, namespaces, tick
        self.delay = max(tick, 1.0)
        self.running: dict[tuple[str, str], asyncio.Task] = {}
        self.not_before: dict[tuple[str, str], float] = {}
        self.last_pass: float | None = None
        self.listed = 0

    def rollouts(self) -> list[dict]:
        with _api_faults("listing ModelRollouts", self.delay):
            return [obj for ns in (self.namespaces or [None]) for obj in self.kube.list_rollouts(ns)]

    def handle(self, obj: dict) -> str | None:
        """In a worker thread: drop kopf's old finalizer, then tick (unless it is being deleted)."""
        meta = obj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        finalizers = meta.get("finalizers") or []
        if KOPF_FINALIZER in finalizers:
            with _api_faults(f"{ns}/{name}", self.delay):
                self.kube.remove_rollout_finalizer(ns, name, finalizers, KOPF_FINALIZER)
            log.info("%s/%s: removed the finalizer %s (no operator needs it now)", ns, name, KOPF_FINALIZER)
        if meta.get("deletionTimestamp"):
            return None
        return reconcile_once(self.engine, ns, name, self.delay)

    async def _handle(self, key: tuple[str, str], obj: dict) -> None:
        try:
            await asyncio.to_thread(self.handle, obj)
        except kopf.TemporaryError as exc:
            log.warning("%s (tried again in %.0f s)", exc, exc.delay or self.delay)
            self.not_before[key] = time.monotonic() + (exc.delay or self.delay)
        except Exception:
            log.exception("%s/%s: reconcile failed (tried again in %.0f s)", *key, self.delay)
            self.not_before[key] = time.monotonic() + self.delay
        finally:
            self.running.pop(key, None)

    async def pass_once(self) -> None:
        try:
            items = await asyncio.to_thread(self.rollouts)
        except kopf.TemporaryError as exc:
            log.warning("%s (tried again in %.0f s)", exc, self.tick)
            return
        finally:
            self.last_pass = time.monotonic()
        self.listed, seen = len(items), set()
        for obj in items:
            key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
            seen.add(key)
            if key not in self.running and self.not_before.get(key, 0.0) <= time.monotonic():
                self.running[key] = asyncio.create_task(self._handle(key, obj), name=f"tick {key}")
        for key in set(self.not_before) - seen:  # deleted objects
            del self.not_before[key]

    async def run(self) -> None:
        while True:
            await self.pass_once()
            await asyncio.sleep(self.tick)

    def health(self, loop_task: asyncio.Task | None) -> dict:
        """For kopf's liveness endpoint: fails (PermanentError: HTTP 500 at once) once the loop has
        ended or no pass ended for STALE_PASSES ticks, so that the kubelet restarts the pod."""
        if loop_task is None or loop_task.done():
            raise kopf.PermanentError("the reconcile loop is not running")
        since = time.monotonic() - (self.last_pass or time.monotonic())
        if since > max(60.0, STALE_PASSES * self.tick):
            raise kopf.PermanentError(f"no reconcile pass for {since:.0f} s")
        return {"rollouts": self.listed, "lastPassSecondsAgo": round(since, 1)}


def register(reconciler: Reconciler) -> None:
    state: dict[str, asyncio.Task] = {}

    @kopf.on.startup()
    async def start_loop(**_):
        # kopf cancels every task it did not start itself when it stops: this one included.
        state["loop"] = asyncio.create_task(reconciler.run(), name="ModelRollout reconcile loop")

    @kopf.on.probe(id="reconcile")
    def reconcile_loop(**_):
        return reconciler.health(state.get("loop"))


def main(namespaces: list[str], kubeconfig: str | None, tick: float | None,
         liveness: str | None) -> None:
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it too
    load_config(kubeconfig)
    tick = float(tick or os.environ.get("DON_OPERATOR_TICK", "5"))
    kube = Kube()
    register(Reconciler(Engine(kube, Events(kube)), kube, namespaces, tick))
    metrics_port = int(os.environ.get("DON_OPERATOR_METRICS_PORT", "9090"))
    if metrics_port:
        try:
            start_http_server(metrics_port)
        except OSError as exc:  # a port taken (several operators on one test machine) is no reason to stop
            log.warning("metrics not served on port %d: %s", metrics_port, exc)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
             liveness_endpoint=liveness)
