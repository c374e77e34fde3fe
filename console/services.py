"""Everything the console reads or changes, through the system's public interfaces only: model
servers over KServe V1/V2 HTTP, the model store through don_core.store, ModelRollouts through the
Kubernetes API (the same steering function as `python -m ops rollout`), the recorder's HTTP API.

No Streamlit here: the pages (console/app.py) call these and show what they return or the
ConsoleError's message.
"""
from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import requests

from don_core.artifact import EVALUATION_FILE, ArtifactError, parse_evaluation
from don_core.contract import PAIRS_PATH, VERSION_HEADER
from don_core.labcsv import DataError, Dataset, parse_csv
from don_core.schema import BAND_COLUMNS, DECISION_THRESHOLDS_PPB, N_BANDS

# Rows per V1 call: well below the server's default --max_batch_rows (10000).
BATCH_ROWS = 1000
TIMEOUT_S = 60
# Asking a track which version it serves: a track that is down must not hold the page up.
PROBE_TIMEOUT_S = 3
TRACK_ORDER = ("stable", "canary")
DECISIONS = tuple(f"decision_{limit}" for limit in DECISION_THRESHOLDS_PPB)
# Extras asked for whenever the served version offers them (GET /v2/models/NAME lists them).
EXTRAS = (*DECISIONS, "ppb_lower", "ppb_upper", "outlier_score", "out_of_distribution")


class ConsoleError(Exception):
    """A readable one-line reason something could not be shown or done."""


@dataclass(frozen=True)
class Settings:
    """From the environment (`python -m console` sets it from its options; the chart from values)."""
    servers: dict[str, str] = field(default_factory=dict)   # model name -> base URL
    tracks: dict[str, dict[str, str]] = field(default_factory=dict)  # model -> track -> base URL
    store: str | None = None
    recorder: str | None = None
    namespace: str | None = None
    kubeconfig: str | None = None
    control: bool = False                                  # rollout buttons enabled
    token_file: str | None = None                          # model servers' bearer token
    recorder_token_file: str | None = None                 # the recorder's write token (else token_file's)

    @classmethod
    def from_env(cls, env=None) -> "Settings":
        env = os.environ if env is None else env
        servers, tracks = parse_endpoints(env.get("DON_CONSOLE_SERVERS", ""))
        return cls(servers=servers, tracks=tracks,
                   store=env.get("DON_CONSOLE_STORE") or None,
                   recorder=env.get("DON_CONSOLE_RECORDER") or None,
                   namespace=env.get("DON_CONSOLE_NAMESPACE") or None,
                   kubeconfig=env.get("DON_CONSOLE_KUBECONFIG") or None,
                   control=env.get("DON_CONSOLE_CONTROL", "").lower() in ("1", "true", "yes"),
                   token_file=env.get("DON_API_TOKEN_FILE") or None,
                   recorder_token_file=env.get("DON_CONSOLE_RECORDER_TOKEN_FILE") or None)

    def token(self) -> str | None:
        if not self.token_file:
            return os.environ.get("DON_API_TOKEN") or None
        return _read_token(self.token_file, "API token file")

    def recorder_token(self) -> str | None:
        """What the console sends with the lab results it imports."""
        if not self.recorder_token_file:
            return self.token()
        return _read_token(self.recorder_token_file, "recorder token file")


def _read_token(path: str, what: str) -> str | None:
    try:
        return open(path).read().strip() or None
    except OSError as exc:
        raise ConsoleError(f"{what} {path}: {exc.strerror or exc}") from None


def parse_endpoints(text: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """`NAME=URL` (a model's address, what its callers use) and `NAME@TRACK=URL` (one track of it,
    e.g. the stable or the canary Service), comma-separated; the first model is the default.
    Returns ({model: address}, {model: {track: URL}}); a model given only by tracks gets its
    stable (else first) track as its address."""
    servers: dict[str, str] = {}
    tracks: dict[str, dict[str, str]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, url = item.partition("=")
        name, at, track = (part.strip() for part in key.partition("@"))
        if (not sep or not name or (at and not re.match(r"^[a-z0-9][a-z0-9-]*$", track))
                or not re.match(r"^https?://", url.strip())):
            raise ConsoleError(f"model server {item!r}: expected NAME=http://HOST:PORT or "
                               "NAME@TRACK=http://HOST:PORT (TRACK: stable, canary, ...)")
        url = url.strip().rstrip("/")
        if at:
            tracks.setdefault(name, {})[track] = url
            servers.setdefault(name, "")
        else:
            servers[name] = url
    for name, url in servers.items():
        if not url:
            found = tracks[name]
            servers[name] = found.get("stable") or next(iter(found.values()))
    return servers, tracks


def parse_servers(text: str) -> dict[str, str]:
    """{model: address} of `parse_endpoints`; the first is the default (the stable model)."""
    return parse_endpoints(text)[0]


# ---- Predict ---------------------------------------------------------------------------------

def parse_upload(raw: bytes, name: str) -> Dataset:
    """The lab's CSV, checked with the training job's rules and messages (target optional)."""
    try:
        return parse_csv(raw, name=name, require_target=False)
    except DataError as exc:
        raise ConsoleError(str(exc)) from None


def parse_pasted(text: str) -> Dataset:
    """A pasted CSV with its header, or one spectrum of 448 numbers (commas, spaces or tabs)."""
    text = text.strip()
    if not text:
        raise ConsoleError("nothing pasted")
    first = text.splitlines()[0]
    if len(text.splitlines()) == 1 and len(re.split(r"[,\s;]+", first)) == N_BANDS:
        row = ",".join(re.split(r"[,\s;]+", first))
        text = ",".join(BAND_COLUMNS) + "\n" + row + "\n"
    return parse_upload(text.encode(), "pasted text")


def _headers(settings: Settings) -> dict:
    token = settings.token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _refusal(response: requests.Response) -> str:
    try:
        doc = response.json()
        message = doc.get("error") or doc.get("detail") or doc.get("message") or json.dumps(doc)
    except ValueError:
        message = response.text.strip()[:300]
    return f"{response.status_code}: {str(message)[:400]}"


def _call(method: str, url: str, settings: Settings, headers: dict | None = None,
          **kwargs) -> requests.Response:
    try:
        response = requests.request(method, url, headers=_headers(settings) if headers is None else headers,
                                    timeout=TIMEOUT_S, **kwargs)
    except requests.RequestException as exc:
        raise ConsoleError(f"{url}: cannot connect ({type(exc).__name__})") from None
    if response.status_code >= 400:
        raise ConsoleError(f"{url} refused the request: {_refusal(response)}")
    return response


def server_outputs(settings: Settings, model: str, base: str | None = None) -> list[str]:
    """The outputs the served version offers (V2 model metadata)."""
    base = base or server_url(settings, model)
    doc = _call("GET", f"{base}/v2/models/{model}", settings).json()
    return [o["name"] for o in doc.get("outputs", []) if "name" in o]


def server_url(settings: Settings, model: str) -> str:
    if model not in settings.servers:
        raise ConsoleError(f"no model server configured for {model!r}")
    return settings.servers[model]


@dataclass(frozen=True)
class Choice:
    """One thing the Predict page can call: a model's track (or its address) and what it serves."""
    model: str
    track: str | None           # None: the model's address, routed as its callers are
    url: str
    version: str | None         # None: the address did not answer (the call will say why)
    weight: int | None = None   # % of the model's traffic, when a ModelRollout says so

    @property
    def label(self) -> str:
        version = f" v{self.version}" if self.version else ""
        where = ", ".join(filter(None, (self.track, None if self.weight is None else f"{self.weight} %")))
        return f"{self.model}{version}" + (f" ({where})" if where else "")


def served_version(settings: Settings, model: str, base: str) -> str:
    """The version `base` serves now (V2 model metadata: its version header, else `versions`);
    ConsoleError when it is down, refuses, or serves nothing ready."""
    try:
        response = requests.get(f"{base}/v2/models/{model}", headers=_headers(settings),
                                timeout=PROBE_TIMEOUT_S)
    except requests.RequestException as exc:
        raise ConsoleError(f"{base}: cannot connect ({type(exc).__name__})") from None
    if response.status_code >= 400:
        raise ConsoleError(f"{base}: {_refusal(response)}")
    try:
        version = response.headers.get(VERSION_HEADER) or str(response.json()["versions"][0])
    except (ValueError, KeyError, IndexError, TypeError):
        raise ConsoleError(f"{base}: no model version in its V2 metadata") from None
    return version


def served_choices(settings: Settings) -> tuple[list[Choice], list[str]]:
    """What the Predict page offers, the default first: per model (in the configured order) each
    track that answers with the version it serves, stable first; a model none of whose tracks
    answers (or that has none) is offered by its address. Also one note per track left out."""
    def rank(item):  # stable, canary, then other tracks in the configured order
        return TRACK_ORDER.index(item[0]) if item[0] in TRACK_ORDER else len(TRACK_ORDER)

    probes = [(model, track, url) for model in settings.servers
              for track, url in sorted(settings.tracks.get(model, {}).items(), key=rank)]
    probes += [(model, None, url) for model, url in settings.servers.items()]

    def probe(item):
        model, _, url = item
        try:
            return served_version(settings, model, url), None
        except ConsoleError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(max_workers=min(8, len(probes) + 1)) as pool:
        weights = pool.submit(canary_weights, settings)
        answers = dict(zip(probes, pool.map(probe, probes)))
        weights = weights.result()
    choices: list[Choice] = []
    notes: list[str] = []
    for model, address in settings.servers.items():
        canary = weights.get(model)
        split = {"canary": canary, "stable": None if canary is None else 100 - canary}
        offered = [Choice(model, track, url, answers[(model, track, url)][0], split.get(track))
                   for (m, track, url) in probes
                   if m == model and track is not None and answers[(m, track, url)][0]]
        notes += [f"{model} {track}: not offered ({answers[(m, track, url)][1]})"
                  for (m, track, url) in probes
                  if m == model and track is not None and not answers[(m, track, url)][0]]
        choices += offered or [Choice(model, None, address, answers[(model, None, address)][0])]
    return choices, notes


def canary_weights(settings: Settings) -> dict[str, int]:
    """{model name: % of its traffic on the canary} from the ModelRollouts in progress. Empty
    unless a Kubernetes API is configured (--kubeconfig or --namespace; the chart sets the
    namespace) and readable: the weight is a nicety, the versions come from the servers."""
    if not (settings.kubeconfig or settings.namespace):
        return {}
    try:
        items = list_rollouts(*kube_client(settings))
    except ConsoleError:
        return {}
    from ops.rollout.state import ACTIVE
    weights = {}
    for item in items:
        status = item.get("status") or {}
        if status.get("phase") in ACTIVE and isinstance(status.get("weight"), int):
            weights[rollout_model(item)] = status["weight"]
    return weights


def rollout_model(item: dict) -> str:
    """The model a ModelRollout rolls out (its servers' model name)."""
    spec = item.get("spec") or {}
    return ((spec.get("endpoints") or {}).get("modelName") or (spec.get("store") or {}).get("model")
            or spec.get("target"))


@dataclass
class Prediction:
    model: str
    version: str
    columns: dict[str, list]    # column name -> one value per row, ids first
    track: str | None = None    # the track called, when one was chosen


def predict(settings: Settings, model: str, dataset: Dataset, choice: Choice | None = None) -> Prediction:
    """V1 calls in batches to the chosen track (default: the model's address); ppb with every
    extra the version offers."""
    base = choice.url if choice else server_url(settings, model)
    offered = set(server_outputs(settings, model, base))
    extras = [name for name in EXTRAS if name in offered]
    columns: dict[str, list] = {"hsi_id": list(dataset.ids), "predicted_ppb": []}
    columns.update({name: [] for name in extras})
    version = "?"
    for start in range(0, dataset.rows, BATCH_ROWS):
        rows = dataset.X[start:start + BATCH_ROWS]
        body = {"instances": rows.tolist()}
        if extras:
            body["parameters"] = {"outputs": extras}
        response = _call("POST", f"{base}/v1/models/{model}:predict", settings, json=body)
        version = response.headers.get(VERSION_HEADER, version)
        doc = response.json()
        columns["predicted_ppb"].extend(float(v) for v in doc["predictions"])
        for name in extras:
            columns[name].extend(doc[name])
    if dataset.has_target:
        columns["measured_ppb"] = [float(v) for v in dataset.y]
    return Prediction(model, version, columns, choice.track if choice else None)


def results_csv(prediction: Prediction) -> bytes:
    """The download: one row per uploaded row, the columns of the table shown."""
    import csv
    import io
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = list(prediction.columns)
    writer.writerow(["model", "version", *names])
    for i in range(len(prediction.columns["hsi_id"])):
        writer.writerow([prediction.model, prediction.version,
                         *(_cell(prediction.columns[n][i]) for n in names)])
    return out.getvalue().encode()


def _cell(value) -> str:
    if isinstance(value, float):
        return repr(value)   # full precision: the download equals the server's answer
    return str(value)


# ---- the store: Models page, and the training range of the Predict plot -----------------------

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


def spectra_frame(dataset: Dataset, band_range: dict | None, max_rows: int = 50):
    """Long-form rows for the spectra plot: each uploaded spectrum (first `max_rows`) and, when
    known, the training data's band-wise min and max."""
    import pandas as pd
    bands = np.arange(N_BANDS)
    shown = dataset.X[:max_rows]
    frame = pd.DataFrame({"band": np.tile(bands, len(shown)),
                          "reflectance": shown.reshape(-1),
                          "spectrum": np.repeat([str(i) for i in dataset.ids[:max_rows]], N_BANDS)})
    range_frame = None
    if band_range is not None:
        range_frame = pd.DataFrame({"band": bands, "min": band_range["min"], "max": band_range["max"]})
    return frame, range_frame


def outside_range(dataset: Dataset, band_range: dict) -> list[int]:
    """Bands-outside count per row (how many of the 448 values lie outside the training range)."""
    low, high = np.asarray(band_range["min"]), np.asarray(band_range["max"])
    return [int(n) for n in ((dataset.X < low) | (dataset.X > high)).sum(axis=1)]


# ---- Rollouts ----------------------------------------------------------------------------------

def kube_client(settings: Settings):
    """(Kube, namespace) from the kubeconfig or the in-cluster account; ConsoleError if neither."""
    try:
        from ops.rollout.kube import Kube, current_namespace, load_config
        load_config(settings.kubeconfig)
        return Kube(), settings.namespace or current_namespace()
    except Exception as exc:  # no kubeconfig, no in-cluster account, a broken file
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConsoleError("no Kubernetes API to read ModelRollouts from: give --kubeconfig, set "
                           f"$KUBECONFIG or run in a cluster ({detail})") from None


def list_rollouts(kube, namespace: str) -> list[dict]:
    from ops.rollout.kube import ApiException
    try:
        return kube.list_rollouts(namespace)
    except ApiException as exc:
        from ops.rollout.cli import api_reason
        raise ConsoleError(f"cannot list ModelRollouts in {namespace}: {exc.status} "
                           f"{api_reason(exc)}") from None
    except Exception as exc:   # connection refused, TLS
        raise ConsoleError(f"cannot reach the Kubernetes API ({type(exc).__name__})") from None


def rollout_rows(items: list[dict]) -> list[dict]:
    """The table of `python -m ops rollout status`, as records."""
    from ops.rollout.cli import summary_rows
    rows, headers = summary_rows(items, False)
    return [dict(zip([h.lower() for h in headers], row)) for row in rows]


def timeline(item: dict) -> list[dict]:
    """One record per history entry and per figure: time, event, weight, figure name, value."""
    out = []
    for entry in (item.get("status") or {}).get("history") or []:
        base = {"time": entry.get("time"), "event": entry.get("event"), "step": entry.get("step"),
                "weight": entry.get("weight"), "verdict": entry.get("verdict")}
        out.append(dict(base, figure="weight %", value=entry.get("weight")))
        for name, value in (entry.get("figures") or {}).items():
            out.append(dict(base, figure=name, value=value))
    return [r for r in out if r["value"] is not None and r["time"]]


def rollout_versions(item: dict) -> tuple[str, int, int] | None:
    """(model, stable, candidate) from a ModelRollout's status; None until the operator has found
    both versions."""
    status = item.get("status") or {}
    stable, candidate = status.get("stableVersion"), status.get("candidateVersion")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (stable, candidate)) or stable == candidate:
        return None
    return rollout_model(item), stable, candidate


def pairs(settings: Settings, model: str, stable: int, candidate: int) -> dict:
    """The recorder's paired figures (GET /v1/pairs): stable against the candidate's shadow answers."""
    if not settings.recorder:
        raise ConsoleError("no prediction recorder configured (--recorder)")
    return _call("GET", settings.recorder.rstrip("/") + PAIRS_PATH, settings,
                 params={"model": model, "stable": stable, "candidate": candidate}).json()


def pairs_rows(doc: dict) -> list[dict]:
    """One row per version of a pairs document: its error and its decisions on the same lots."""
    rows = []
    for side in ("stable", "candidate"):
        row = {"version": f"v{doc[side]} ({side})", "pairs": doc["pairs"], "MAE log1p": doc["maeLog1p"][side]}
        for limit, d in doc["decisions"].items():
            row[f"false accepts @{limit}"] = d[side]["falseAccepts"]
            row[f"false rejects @{limit}"] = d[side]["falseRejects"]
        rows.append(row)
    return rows


def pairs_summary(doc: dict) -> str:
    """The paired difference in one sentence."""
    diff = doc["difference"]
    if diff["mean"] is None:
        return (f"no lab-matched pair yet: the lab has measured none of the lots both v{doc['stable']} and "
                f"v{doc['candidate']} (in shadow) answered")
    interval = (f"95 % CI [{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}]" if diff["ci95"]
                else "no interval from one pair")
    return (f"{doc['pairs']} lab-matched pair(s): the candidate's |log1p error| minus the stable's, "
            f"mean {diff['mean']:+.4f}, {interval} (positive: the candidate is worse)")


def steer(settings: Settings, kube, namespace: str, name: str, action: str) -> str:
    """A rollout button: exactly `python -m ops rollout ACTION NAME` (ops.rollout.cli.steer)."""
    from ops.rollout.cli import api_reason
    from ops.rollout.cli import steer as cli_steer
    from ops.rollout.kube import ApiException
    if not settings.control:
        raise ConsoleError("rollout control is off (start the console with --control)")
    try:
        return cli_steer(kube, namespace, name, action)
    except ApiException as exc:
        raise ConsoleError(f"{action} {name}: {exc.status} {api_reason(exc)}") from None


# ---- Monitoring --------------------------------------------------------------------------------

def accuracy(settings: Settings) -> dict:
    if not settings.recorder:
        raise ConsoleError("no prediction recorder configured (--recorder)")
    return _call("GET", settings.recorder.rstrip("/") + "/v1/accuracy", settings).json()


def accuracy_rows(doc: dict) -> list[dict]:
    rows = []
    for r in doc.get("results", []):
        row = {"model": r["model"], "version": r["version"], "window": r["window"],
               "matched": r["matched"], "MAE log1p": r.get("maeLog1p"), "R2 log1p": r.get("r2Log1p")}
        for limit, t in (r.get("thresholds") or {}).items():
            row[f"false accept @{limit}"] = t.get("falseAcceptRate")
            row[f"false reject @{limit}"] = t.get("falseRejectRate")
        rows.append(row)
    return rows


SPANS_DAYS = (7, 30, 90)


class LabResultsRefused(ConsoleError):
    """The recorder refused a lab file; `errors` names each bad row and column."""

    def __init__(self, message: str, errors: list[str]):
        super().__init__(message)
        self.errors = errors


def import_lab_results(settings: Settings, raw: bytes, name: str) -> dict:
    """Post a lab CSV (sample_id, vomitoxin_ppb[, method][, measured_at]) to the recorder, which
    checks every row (ops/recorder/labresults.py, the one reader) and stores all of it or nothing.
    Returns its summary {stored, duplicates, rejected}."""
    if not settings.recorder:
        raise ConsoleError("no prediction recorder configured (--recorder)")
    url = settings.recorder.rstrip("/") + "/v1/labresults"
    token = settings.recorder_token()
    headers = {"Content-Type": "text/csv", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        response = requests.post(url, data=raw, headers=headers, timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise ConsoleError(f"{url}: cannot connect ({type(exc).__name__})") from None
    if response.status_code == 422:
        doc = response.json()
        raise LabResultsRefused(f"{name}: {doc.get('error')}", list(doc.get("errors", [])))
    if response.status_code >= 400:
        raise ConsoleError(f"{name}: the recorder refused it: {_refusal(response)}")
    return response.json()


def accuracy_series(settings: Settings, days: int) -> dict:
    """The recorder's per-day series (GET /v1/accuracy/series) over the last `days` days."""
    if not settings.recorder:
        raise ConsoleError("no prediction recorder configured (--recorder)")
    return _call("GET", settings.recorder.rstrip("/") + "/v1/accuracy/series", settings,
                 params={"days": days}).json()


def series_rows(doc: dict) -> list[dict]:
    """One row per model version and day: the figures the Monitoring page plots."""
    rows = []
    for s in doc.get("series", []):
        for p in s.get("points", []):
            row = {"day": p["day"], "model version": f"{s['model']} v{s['version']}",
                   "predictions": p.get("predictions"), "matched": p.get("matched"),
                   "MAE log1p": p.get("maeLog1p"), "OOD rate": p.get("oodRate")}
            for limit, t in (p.get("thresholds") or {}).items():
                row[f"false accept @{limit}"] = t.get("falseAcceptRate")
            rows.append(row)
    return rows


_METRIC = re.compile(r"^(don_out_of_distribution_rows_total|don_drift_scored_rows_total|don_drift_window_score)"
                     r"(\{[^}]*\})?\s+(\S+)", re.M)


def drift_rates(settings: Settings) -> list[dict]:
    """Per model server: rows scored and the share out of distribution since it started, and the
    window score of its last rows (the highest of its workers; None before a window is full)."""
    rows = []
    for model, base in settings.servers.items():
        try:
            text = _call("GET", f"{base}/metrics", settings).text
        except ConsoleError as exc:
            rows.append({"model": model, "scored rows": None, "out of distribution": None,
                         "rate": None, "window score": None, "note": str(exc)})
            continue
        totals = {"don_out_of_distribution_rows_total": 0.0, "don_drift_scored_rows_total": 0.0}
        window = None
        for name, _, value in _METRIC.findall(text):
            if name == "don_drift_window_score":
                window = max(float(value), window if window is not None else float("-inf"))
            else:
                totals[name] += float(value)
        scored, ood = totals["don_drift_scored_rows_total"], totals["don_out_of_distribution_rows_total"]
        rows.append({"model": model, "scored rows": int(scored), "out of distribution": int(ood),
                     "rate": round(ood / scored, 4) if scored else None,
                     "window score": None if window is None else round(window, 2), "note": ""})
    return rows
