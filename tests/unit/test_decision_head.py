"""The decision head: per-limit parameters, and its ONNX copy gives the fitted scores."""
import numpy as np
import pytest

from don_core.artifact import DECISION_FILE, decision_score
from training_job import decision, onnx_export, synthetic


def test_each_limit_gets_its_parameters_and_the_export_matches(tmp_path):
    data = synthetic.generate(120)
    head = decision.build(0, (1000, 5000), n_estimators=10).fit(data.X, data.y)  # quick
    for limit, model in head.models_.items():
        expected = {**decision.DEFAULTS, **decision.BY_LIMIT.get(limit, {})}
        assert model.named_steps["pca"].n_components == expected["pca_components"]
        assert model.named_steps["trees"].min_samples_leaf == expected["min_samples_leaf"]
    # the 1000 ppb head differs from the defaults (what was selected), 5000 keeps them
    assert head.models_[1000].named_steps["pca"].n_components != decision.DEFAULTS["pca_components"]
    assert head.models_[5000].named_steps["pca"].n_components == decision.DEFAULTS["pca_components"]
    # a caller's parameters win over both
    assert decision.build(0, (1000,), pca_components=3).params_for(1000)["pca_components"] == 3

    files = head.export(tmp_path)
    assert files == {"1000": DECISION_FILE, "5000": DECISION_FILE}   # one model, both limits
    scores = head.predict(data.X)
    for limit, name in files.items():
        got = onnx_export.onnx_predict(tmp_path / name, data.X, decision_score(limit))
        assert got.shape == (len(data.X),)
        assert np.mean(np.abs(got - scores[int(limit)]) <= 1e-4) >= 0.99


def test_an_unknown_parameter_is_refused():
    with pytest.raises(ValueError, match="unknown decision head parameter"):
        decision.build_one(0, pca_component=6)
