"""A ModelRollout's status as one typed object, and its wire shape in the API server.

The field names on the wire (the CRD's status schema, `kubectl get mro` columns, the console and
the CLI read them) are the attribute names in camelCase: `candidate_version` is
`status.candidateVersion`. A field that is None is absent on the wire: `to_wire` sends it as null,
which a merge patch removes; fields the operator does not know (an older operator's) are left
alone. The analysis records (lastAnalysis, history entries, snapshot) stay plain data: the CRD
keeps them schema-less and the console draws them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


def wire_name(attribute: str) -> str:
    head, *rest = attribute.split("_")
    return head + "".join(part.capitalize() for part in rest)


@dataclass(frozen=True)
class RolloutStatus:
    phase: str | None = None
    message: str | None = None
    # the versions, ints end to end
    stable_version: int | None = None
    candidate_version: int | None = None
    desired_version: int | None = None  # Desired delivery: the version last acted on
    live_version: int | None = None  # Desired delivery: the version serving between rollouts
    # where an InferenceService serves them (no URI on the Deployment engine)
    stable_storage_uri: str | None = None
    candidate_storage_uri: str | None = None
    # the step: status.weight is the share the candidate really answers, stepWeight the step's
    step: int | None = None
    step_label: str | None = None
    step_weight: int | None = None
    weight: int | None = None
    # its analyses
    step_started_at: str | None = None
    next_check_at: str | None = None
    failed_checks: int | None = None
    inconclusive_since: str | None = None
    deadline_exceeded: bool | None = None
    # the serving objects
    traffic_applied: bool | None = None  # False while the serving objects must still follow
    replicas: int | None = None  # Deployment engine: the replica total found at the start
    # the shadow step (shadow_step.py): its deadline, and the lab gate's last look (lab.py figures)
    shadow_deadline_at: str | None = None
    shadow_deadline_exceeded: bool | None = None
    lab_gate: dict | None = None
    # the post-promotion watch (watch.py): its end while it runs, then how it ended (Pass, Fail,
    # Ended: the watch ran out or a new desired version came)
    watch_until: str | None = None
    watch_result: str | None = None
    # what the operator keeps between ticks
    observed_generation: int | None = None
    last_analysis: dict | None = None
    reference_stable: dict | None = None  # the stable's reference figures, once measured
    snapshot: dict | None = None
    # for people: kubectl's conditions and the history of the rollout
    conditions: list | None = None
    history: list | None = None

    @property
    def applied(self) -> bool:
        """The serving objects match this status (an older status without the field did)."""
        return self.traffic_applied is not False

    @classmethod
    def from_wire(cls, status: dict | None) -> RolloutStatus:
        status = status or {}
        return cls(**{f.name: status[wire_name(f.name)] for f in dataclasses.fields(cls)
                      if status.get(wire_name(f.name)) is not None})

    def to_wire(self) -> dict:
        """Every field, None ones as null (a merge patch removes them)."""
        return {wire_name(f.name): getattr(self, f.name) for f in dataclasses.fields(self)}

    def but(self, **changes) -> RolloutStatus:
        return dataclasses.replace(self, **changes)
