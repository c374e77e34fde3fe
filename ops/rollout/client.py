"""What a person does to ModelRollouts: list, show, start, pause / resume, promote, abort.

One home for the CLI (`python -m ops rollout`, ops/rollout/cli.py) and the web console (console/),
so that a console button does exactly what `python -m ops rollout VERB NAME` does and both show a
rollout with the same columns. Every Kubernetes error comes out as a RolloutError of one line.
"""
from __future__ import annotations

import datetime as dt
import json

from ops.rollout.kube import ApiException, Kube, current_namespace, load_config
from ops.rollout.state import ACTIVE, parse_stamp

# The steering verbs and the patch each sends.
ACTIONS = {"pause": {"spec": {"paused": True}}, "resume": {"spec": {"paused": False}},
           "promote": {"spec": {"action": "Promote"}}, "abort": {"spec": {"action": "Abort"}}}
# The summary of one rollout, as `python -m ops rollout status` prints it (upper-cased).
SUMMARY_COLUMNS = ("name", "target", "mode", "phase", "weight", "step", "failed", "age", "message")


class RolloutError(Exception):
    """One line: the API server's refusal (`status` its HTTP code) or why it could not be reached
    (`status` None)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def api_reason(exc: ApiException) -> str:
    """The API server's own message of a refusal (e.g. `... not found`)."""
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except Exception:
        return exc.reason


class RolloutClient:
    """The ModelRollouts of one namespace (or, for listing, of all)."""

    def __init__(self, kube: Kube, namespace: str):
        self.kube, self.namespace = kube, namespace

    @classmethod
    def connect(cls, kubeconfig: str | None = None, namespace: str | None = None) -> "RolloutClient":
        """From the kubeconfig (explicit, $KUBECONFIG, ~/.kube/config) or the in-cluster account;
        the namespace defaults to the context's."""
        load_config(kubeconfig)
        return cls(Kube(), namespace or current_namespace())

    def _call(self, method, *args):
        try:
            return method(*args)
        except ApiException as exc:
            raise RolloutError(f"{exc.status} {api_reason(exc)}", exc.status) from None
        except Exception as exc:   # connection refused, TLS, timeout
            raise RolloutError(f"cannot reach the Kubernetes API ({type(exc).__name__})") from None

    def list(self, all_namespaces: bool = False) -> list[dict]:
        return self._call(self.kube.list_rollouts, None if all_namespaces else self.namespace)

    def get(self, name: str) -> dict:
        return self._call(self.kube.get_rollout, self.namespace, name)

    def create(self, body: dict) -> dict:
        return self._call(self.kube.create_rollout, self.namespace, body)

    def steer(self, name: str, action: str) -> str:
        """Send one steering verb (ACTIONS); the line to show."""
        self._call(self.kube.patch_rollout, self.namespace, name, ACTIONS[action])
        return f"modelrollout {name}: {action} requested"


def age(timestamp: str | None, now: dt.datetime | None = None) -> str:
    moment = parse_stamp(timestamp)
    if not moment:
        return "-"
    seconds = int(((now or dt.datetime.now(dt.timezone.utc)) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def summary(item: dict) -> dict:
    """One rollout's SUMMARY_COLUMNS."""
    meta, spec, status = item["metadata"], item.get("spec", {}), item.get("status") or {}
    return dict(zip(SUMMARY_COLUMNS, (
        meta["name"], spec.get("target"), spec.get("mode"), status.get("phase", "Pending"),
        f"{status['weight']}%" if status.get("weight") is not None else "-",
        status.get("stepLabel", "-"), status.get("failedChecks", 0),
        age(meta.get("creationTimestamp")), (status.get("message") or "")[:70])))


def rollout_model(item: dict) -> str:
    """The model a ModelRollout rolls out (its servers' model name)."""
    spec = item.get("spec") or {}
    return ((spec.get("endpoints") or {}).get("modelName") or (spec.get("store") or {}).get("model")
            or spec.get("target"))


def canary_weights(items: list[dict]) -> dict[str, int]:
    """{model: % of its traffic on the canary} of the rollouts in progress."""
    weights = {}
    for item in items:
        status = item.get("status") or {}
        if status.get("phase") in ACTIVE and isinstance(status.get("weight"), int):
            weights[rollout_model(item)] = status["weight"]
    return weights
