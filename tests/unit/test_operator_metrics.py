"""The operator counts every Event it emits (the chart's DonRolloutRolledBack alert reads it)."""
from prometheus_client import REGISTRY

from ops import operator


def test_emitted_events_are_counted(monkeypatch):
    sent = []
    monkeypatch.setattr(operator.kopf, "event", lambda obj, **kw: sent.append(kw["reason"]))
    labels = {"namespace": "don", "rollout": "don-rf-v3", "reason": "RolledBack"}
    before = REGISTRY.get_sample_value("don_rollout_events_total", labels) or 0.0
    operator._emit({"metadata": {"namespace": "don", "name": "don-rf-v3"}}, "Warning", "RolledBack", "why")
    assert sent == ["RolledBack"]
    assert REGISTRY.get_sample_value("don_rollout_events_total", labels) == before + 1
