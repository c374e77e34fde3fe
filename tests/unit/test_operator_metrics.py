"""The operator counts every Event it emits (the chart's DonRolloutRolledBack alert reads it), even
when posting the Event fails: posting is best effort and never fails the tick."""
import socket

from kubernetes import client
from prometheus_client import REGISTRY

from ops import operator
from ops.rollout.kube import Kube


def test_emitted_events_are_counted_even_when_posting_fails(caplog):
    with socket.socket() as sock:  # a port nothing listens on: the Event cannot be posted
        sock.bind(("127.0.0.1", 0))
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{sock.getsockname()[1]}"
    configuration.retries = 0
    emit = operator.Events(Kube(client.ApiClient(configuration)))
    labels = {"namespace": "don", "rollout": "don-rf-v3", "reason": "RolledBack"}
    before = REGISTRY.get_sample_value("don_rollout_events_total", labels) or 0.0
    emit({"apiVersion": "rollouts.don-predictor.io/v1alpha1", "kind": "ModelRollout",
          "metadata": {"namespace": "don", "name": "don-rf-v3", "uid": "u"}}, "Warning", "RolledBack", "why")
    assert REGISTRY.get_sample_value("don_rollout_events_total", labels) == before + 1
    assert "don/don-rf-v3: Event RolledBack not posted" in caplog.text
