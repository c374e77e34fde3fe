"""The ModelRollout operator: canary analysis, traffic patches and the kopf controller."""

GROUP = "rollouts.don-predictor.io"
VERSION = "v1alpha1"
PLURAL = "modelrollouts"
KIND = "ModelRollout"
