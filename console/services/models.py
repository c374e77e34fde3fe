"""The Models page, and the training range of the Predict plot: the published versions in the model
store (don_core.store), their cross-validated figures and out-of-fold predictions."""
from __future__ import annotations

from console.services.common import ConsoleError, Settings
from don_core.artifact import EVALUATION_FILE, ArtifactError, parse_evaluation


def open_console_store(settings: Settings):
    from don_core.store import open_store
    if not settings.store:
        raise ConsoleError("no model store configured (--store)")
    return open_store(settings.store)


def _store_errors():
    from don_core.store import StoreError
    return (StoreError, ArtifactError, OSError)


def versions_table(settings: Settings) -> list[dict]:
    """One row per published version of every model in the store."""
    store = open_console_store(settings)
    rows = []
    try:
        for model in store.models():
            for version in store.list_versions(model):
                meta = store.read_metadata(model, version)
                summary = (meta["metrics"].get("cv") or {}).get("summary", {})
                rows.append({"model": model, "version": version, "family": meta["family"],
                             "created": meta["created"],
                             "data sha256": meta["training_data"].get("sha256", "")[:12],
                             "rows": meta["training_data"].get("rows"),
                             "CV R2 (log1p)": _median(summary, "r2_log1p"),
                             "CV RMSE (ppb)": _median(summary, "rmse_ppb")})
    except _store_errors() as exc:
        raise ConsoleError(f"store {settings.store}: {exc}") from None
    return rows


def _median(summary: dict, key: str):
    value = (summary.get(key) or {}).get("median")
    return None if value is None else round(float(value), 3)


def metadata(settings: Settings, model: str, version: int) -> dict:
    try:
        return open_console_store(settings).read_metadata(model, int(version))
    except _store_errors() as exc:
        raise ConsoleError(str(exc)) from None


def metrics_table(meta: dict) -> list[dict]:
    """The cross-validated figures: one row per metric, fold median, mean and SD."""
    summary = (meta["metrics"].get("cv") or {}).get("summary", {})
    return [{"metric": key, "median": _round(s.get("median")), "mean": _round(s.get("mean")),
             "SD": _round(s.get("sd"))} for key, s in summary.items()]


def _round(value):
    return None if value is None else round(float(value), 4)


def compare_metrics(a: dict, b: dict) -> list[dict]:
    """Two versions' CV medians side by side, with b - a."""
    left = {r["metric"]: r["median"] for r in metrics_table(a)}
    right = {r["metric"]: r["median"] for r in metrics_table(b)}
    name_a, name_b = f"{a['model']} v{a['version']}", f"{b['model']} v{b['version']}"
    rows = []
    for key in list(dict.fromkeys([*left, *right])):
        va, vb = left.get(key), right.get(key)
        rows.append({"metric": key, name_a: va, name_b: vb,
                     "difference": None if va is None or vb is None else round(vb - va, 4)})
    return rows


def evaluation(settings: Settings, model: str, version: int) -> dict | None:
    """evaluation.json of a version (out-of-fold predictions, training band range); None for a
    version published before it existed."""
    store = open_console_store(settings)
    try:
        if EVALUATION_FILE not in store.read_metadata(model, int(version))["files"]:
            return None
        return parse_evaluation(store.read_file(model, int(version), EVALUATION_FILE))
    except _store_errors() as exc:
        raise ConsoleError(str(exc)) from None
