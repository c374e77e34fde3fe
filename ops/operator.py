"""`python -m ops operator`: run the ModelRollout controller with kopf.

Every object gets a kopf timer that calls `Engine.tick` every DON_OPERATOR_TICK seconds (default
5); the rollout's own pace comes from the timestamps in its status, so the tick only bounds how
quickly a due analysis or a pause/resume/promote/abort request is noticed. Every Event it emits is
also counted in `don_rollout_events_total{namespace,rollout,reason}` (the RolledBack alert), served
on DON_OPERATOR_METRICS_PORT (default 9090; 0 turns it off).
"""
from __future__ import annotations

import logging
import os

import kopf
import urllib3
from prometheus_client import Counter, start_http_server

from don_core.contract import ROLLOUT_EVENTS_METRIC
from ops.rollout import GROUP, PLURAL, VERSION
from ops.rollout.controller import Engine
from ops.rollout.kube import ApiException, Kube, load_config


ROLLOUT_EVENTS = Counter(ROLLOUT_EVENTS_METRIC, "ModelRollout Events by reason (Advanced, Promoted, RolledBack, ...)",
                         ["namespace", "rollout", "reason"])


def _emit(obj: dict, kind: str, reason: str, message: str) -> None:
    meta = obj.get("metadata", {})
    ROLLOUT_EVENTS.labels(meta.get("namespace", ""), meta.get("name", ""), reason).inc()
    kopf.event(obj, type=kind, reason=reason, message=message[:1000])


def reconcile_once(engine: Engine, namespace: str, name: str, delay: float) -> str | None:
    """One tick; a fault of the API server or of the network on the way to it is kopf's
    TemporaryError (tried again after `delay` seconds, logged in one line), never a failure of the
    rollout. Anything else is a bug and keeps its traceback (kopf retries it after its backoff)."""
    try:
        return engine.tick(namespace, name)
    except ApiException as exc:
        raise kopf.TemporaryError(f"{namespace}/{name}: Kubernetes API answered {exc.status} "
                                  f"{exc.reason}", delay=delay) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise kopf.TemporaryError(f"{namespace}/{name}: Kubernetes API unreachable: {exc}",
                                  delay=delay) from exc


def register(engine: Engine, tick: float) -> None:
    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_):
        # Keep kopf's own bookkeeping in annotations under our group, never in our status.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        settings.posting.level = logging.WARNING  # our own Events say what happened
        settings.watching.server_timeout = 60
        settings.networking.request_timeout = 30

    @kopf.timer(GROUP, VERSION, PLURAL, interval=tick, backoff=max(tick, 1.0))
    def reconcile(name: str, namespace: str, **_):
        reconcile_once(engine, namespace, name, delay=max(tick, 1.0))


def main(namespaces: list[str], kubeconfig: str | None, tick: float | None,
         liveness: str | None) -> None:
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it too
    load_config(kubeconfig)
    tick = float(tick or os.environ.get("DON_OPERATOR_TICK", "5"))
    register(Engine(Kube(), _emit), tick)
    metrics_port = int(os.environ.get("DON_OPERATOR_METRICS_PORT", "9090"))
    if metrics_port:
        try:
            start_http_server(metrics_port)
        except OSError as exc:  # a port taken (several operators on one test machine) is no reason to stop
            logging.getLogger(__name__).warning("metrics not served on port %d: %s", metrics_port, exc)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # no line per successful tick
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
             liveness_endpoint=liveness)
