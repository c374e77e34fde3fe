"""The Predict page: which version each model's tracks serve, predictions over KServe V1 in
batches with every extra output the version offers, the download, and the spectra plot."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import requests

from console.services.common import ConsoleError, Settings, auth_headers, call, refusal
from console.services.rollouts import list_rollouts, rollout_client
from don_core.contract import (
    OUT_OF_DISTRIBUTION_OUTPUT,
    OUTLIER_SCORE_OUTPUT,
    PPB_LOWER_OUTPUT,
    PPB_UPPER_OUTPUT,
    VERSION_HEADER,
    decision_output,
)
from don_core.labcsv import DataError, Dataset, parse_csv
from don_core.schema import BAND_COLUMNS, DECISION_THRESHOLDS_PPB, N_BANDS
from ops.rollout import client

# Rows per V1 call: well below the server's default --max_batch_rows (10000).
BATCH_ROWS = 1000
# Asking a track which version it serves: a track that is down must not hold the page up.
PROBE_TIMEOUT_S = 3
TRACK_ORDER = ("stable", "canary")
DECISIONS = tuple(decision_output(limit) for limit in DECISION_THRESHOLDS_PPB)
# Extras asked for whenever the served version offers them (GET /v2/models/NAME lists them).
EXTRAS = (*DECISIONS, PPB_LOWER_OUTPUT, PPB_UPPER_OUTPUT, OUTLIER_SCORE_OUTPUT, OUT_OF_DISTRIBUTION_OUTPUT)


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


def server_outputs(settings: Settings, model: str, base: str | None = None) -> list[str]:
    """The outputs the served version offers (V2 model metadata)."""
    base = base or server_url(settings, model)
    doc = call("GET", f"{base}/v2/models/{model}", settings).json()
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
        response = requests.get(f"{base}/v2/models/{model}", headers=auth_headers(settings),
                                timeout=PROBE_TIMEOUT_S)
    except requests.RequestException as exc:
        raise ConsoleError(f"{base}: cannot connect ({type(exc).__name__})") from None
    if response.status_code >= 400:
        raise ConsoleError(f"{base}: {refusal(response)}")
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
        items = list_rollouts(rollout_client(settings))
    except ConsoleError:
        return {}
    return client.canary_weights(items)


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
        response = call("POST", f"{base}/v1/models/{model}:predict", settings, json=body)
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
