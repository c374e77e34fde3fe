"""The contract between the parts, each constant defined once: what training writes and serving
reads, what the server exports and the operator and alerts query, what the chart and the CRD
declare and the operator acts on. Files that cannot import it (chart templates, the CRD, alert
rules) are tested against it (tests/unit/test_contract.py, tests/chart/test_contract.py).

Imports nothing of ours, as all of don_core."""
from __future__ import annotations

import re

# ---- tensors: the ONNX graph, the TF SavedModel signature, V2 / gRPC requests ------------------
INPUT_NAME = "spectra"  # float32 [n, 448]
OUTPUT_NAME = "ppb"     # float32 [n], predictions clipped at 0
# The caller's identifier per row (a lab's lot or sample id), stored with the prediction record:
# V2 an optional BYTES input tensor of this name, shape [n]; V1 a list beside "instances".
SAMPLE_ID_INPUT = "sample_id"
V1_SAMPLE_IDS = "sample_ids"
# V1: the request parameter that names the optional outputs below (V2 names them in "outputs").
V1_OUTPUTS_PARAMETER = "outputs"

# ---- outputs ----------------------------------------------------------------------------------
# Outputs served only when a request names them (V2 "outputs", V1 parameters.outputs); a request
# that names none gets exactly the ppb response KServe clients know.
PPB_LOWER_OUTPUT, PPB_UPPER_OUTPUT = "ppb_lower", "ppb_upper"
OUTLIER_SCORE_OUTPUT, OUT_OF_DISTRIBUTION_OUTPUT = "outlier_score", "out_of_distribution"


def decision_output(limit_ppb: int) -> str:
    """accept | reject | lab at one calibrated limit, e.g. decision_1000 (limits: schema.DECISION_THRESHOLDS_PPB)."""
    return f"decision_{limit_ppb}"


# ---- HTTP: every prediction names the version that answered -----------------------------------
VERSION_HEADER = "X-Model-Version"
# The request id a caller may send (V2 JSON `id` wins); a mirrored copy carries the same one, so
# the stable's and the shadow's records of one request pair up by it.
REQUEST_ID_HEADER = "X-Request-Id"
# Marks a request as the stable's mirrored copy to a shadow (value "1"): the shadow records its
# answer with shadow=True and never mirrors it further.
SHADOW_HEADER = "X-Don-Shadow"
# V2 binary tensors (KServe's extension): the length of the JSON part before the tensor bytes.
BINARY_HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
# A server started as a shadow (env DON_SHADOW=1 or flag --shadow; the operator's shadow pods)
# records every answer as the shadow's and never mirrors: a copy that arrives without
# SHADOW_HEADER (a Gateway API RequestMirror copy) pairs up with the stable's answer all the same.
SHADOW_ENV = "DON_SHADOW"

# ---- the server's Prometheus metrics the operator and the alerts query -------------------------
REQUESTS_METRIC = "don_requests"  # a Counter: exposed and queried as don_requests_total
LATENCY_METRIC = "don_request_duration_seconds"  # a Histogram

# The model server's other metric names (Prometheus adds _total to Counters): one definition,
# read by the server, the console, benchmarks and the alert rules' tests.
BATCH_ROWS_METRIC = "don_batch_rows"
MODEL_INFO_METRIC = "don_model_info"
REFUSED_METRIC = "don_requests_refused"
MODEL_READY_METRIC = "don_model_ready"
OUT_OF_DISTRIBUTION_METRIC = "don_out_of_distribution_rows"
SCORED_ROWS_METRIC = "don_drift_scored_rows"
RECORDS_SENT_METRIC = "don_records_sent"
PREDICTED_PPB_METRIC = "don_prediction_ppb"
OUTLIER_SCORE_METRIC = "don_outlier_score"
RECORDS_SENDER_CPU_METRIC = "don_records_sender_cpu_seconds"
DRIFT_WINDOW_SCORE_METRIC = "don_drift_window_score"
RECORDS_DROPPED_METRIC = "don_records_dropped"

MODEL_LABEL, VERSION_LABEL = "model", "version"
PROTOCOL_LABEL, OUTCOME_LABEL = "protocol", "outcome"
SUCCESS, CLIENT_ERROR, SERVER_ERROR = "success", "client_error", "server_error"
OUTCOMES = (SUCCESS, CLIENT_ERROR, SERVER_ERROR)
# Mirrored copies of requests to a shadow, by outcome: don_mirror_requests_total{model,version,outcome}
# (sent: the shadow answered 2xx; failed: unreachable, timed out or non-2xx; dropped: queue full).
MIRROR_REQUESTS_METRIC = "don_mirror_requests"
MIRROR_SENT, MIRROR_DROPPED, MIRROR_FAILED = "sent", "dropped", "failed"
MIRROR_OUTCOMES = (MIRROR_SENT, MIRROR_DROPPED, MIRROR_FAILED)
# The file the stable's server re-reads for its mirror setting ({"url", "percent", "model"}): a
# ConfigMap mounted at this path, updated in place, so a shadow starts or stops without a restart.
MIRROR_CONFIG_PATH = "/etc/don-predictor/mirror/mirror.json"
# The operator's ConfigMap <target>-mirror carries that file (key mirror.json); its shadow
# Deployment and Service are <target>-shadow, their pods on track "shadow" without the model
# label, so the model's Service (which selects by model) never sends them callers' requests.
MIRROR_CONFIGMAP_SUFFIX, SHADOW_SUFFIX, SHADOW_TRACK = "-mirror", "-shadow", "shadow"
MODEL_LABEL_KEY = "don-predictor.io/model"
# The operator's Event counter (the RolledBack alert): don_rollout_events_total{namespace,rollout,reason}.
ROLLOUT_EVENTS_METRIC = "don_rollout_events"

# ---- the chart's serving objects, as the operator reads and rewrites them ----------------------
MODEL_VERSION_ENV = "DON_MODEL_VERSION"  # env of the model server container: the version it serves
MODEL_VERSION_LABEL = "don-predictor.io/model-version"  # pod label: the same version
TRACK_LABEL = "don-predictor.io/track"  # stable | canary (Deployment engine)

# ---- ONNX agreement: the fast copy must reproduce the native model -----------------------------
# |onnx - native| <= ONNX_ATOL_PPB + ONNX_RTOL * |native| on at least ONNX_MIN_AGREEMENT of the rows.
# One rule for training (before publishing) and serving (before trusting the copy): float32 ONNX
# against the float64 pipeline differs by rounding only, far below 0.5 ppb; what the rule has to
# tolerate is a rare tree whose split flips for a value within float32 rounding of its threshold,
# and that is what the 1 % of rows is for. Training used 1.0 ppb and serving 0.5: training's looser
# value could only publish a version the server then refuses, so the serving value is the one.
ONNX_RTOL = 1e-3
ONNX_ATOL_PPB = 0.5
ONNX_MIN_AGREEMENT = 0.99

# ---- requests ------------------------------------------------------------------------------------
# The most spectra one request may carry (the server's --max_batch_rows default): larger batches
# are refused with 413, so one call cannot hold a worker for long.
MAX_BATCH_ROWS = 10_000

# ---- the model store: <root>/<model>/<N> -----------------------------------------------------------
_STORAGE_URI = re.compile(r"^(?P<root>.+)/(?P<model>[^/]+)/(?P<version>[0-9]+)/?$")


def storage_uri(root: str, model: str, version: int) -> str:
    """`<root>/<model>/<N>`: where a published version lives (a path, s3://... or pvc://...)."""
    return f"{str(root).rstrip('/')}/{model}/{version}"


def parse_storage_uri(uri: str) -> tuple[str, str, int]:
    """`<root>/<model>/<N>` -> (root, model, N); ValueError naming the URI otherwise."""
    match = _STORAGE_URI.match(uri or "")
    if not match:
        raise ValueError(f"storage URI {uri!r} does not end in <model>/<version>")
    return match["root"], match["model"], int(match["version"])


# ---- ModelRollout spec defaults: the only hand-written copy. `python -m scripts.gen_rollout_defaults`
# writes them into the CRD's schema defaults and the chart's operator.rollout values (a test fails
# when those are stale); the operator fills them in for objects written before a default existed.
LIVE_ACCURACY_DEFAULTS: dict = {"thresholdPpb": 1000, "window": "7d", "maxFalseAcceptIncrease": 0.05,
                                "minMatched": 30}
# The paired lab gate (don_core.lab_gate reads its defaults here; benchmarks/gates.py chose them).
LAB_GATE_MIN_PAIRS, LAB_GATE_MARGIN, LAB_GATE_ALPHA = 30, 0.02, 0.05
# The first step "shadow": the candidate answers mirrored copies only, until the lab gate decides.
SHADOW_STEP = "shadow"
# What a shadow with fewer than minPairs lab pairs at its deadline does; the default (first) rolls
# back: no lab evidence is no evidence.
ON_NO_LABELS = ("RollBack", "Proceed")
ROLLOUT_DEFAULTS: dict = {
    "delivery": "Once",
    "mode": "Standard",
    "steps": [10, 25, 50, 100],
    "interval": "60s",
    "progressDeadline": "10m",
    "paused": False,
    # goldenSet: the served-correctly check, judged by the ONNX agreement rule above (no threshold of its own)
    "analysis": {"minSuccessRate": 0.99, "maxP99LatencyMs": 500, "failureLimit": 1, "minRequests": 10,
                 "goldenSet": True, "referenceSet": True,
                 "maxReferenceErrorIncrease": 0.1, "maxReferenceFalseAcceptIncrease": 0.1},
    "metrics": {"source": "Direct", "requestsMetric": REQUESTS_METRIC + "_total",
                "latencyMetric": LATENCY_METRIC},
    "endpoints": {"timeoutSeconds": 10},
    "store": {},
    "deployment": {"versionEnv": MODEL_VERSION_ENV},
    # deadline 72h: lab results arrive hours to days after the predictions. watch: after a shadowed
    # candidate is promoted, how long the lab gate keeps judging it against the previous version
    # (which runs on as the shadow); "0s", off by default: it costs the previous version's pods
    # for that long, and only lab results that arrive within it count.
    "shadow": {"percent": 100, "deadline": "72h", "onNoLabels": ON_NO_LABELS[0], "watch": "0s"},
    "labGate": {"minPairs": LAB_GATE_MIN_PAIRS, "margin": LAB_GATE_MARGIN, "alpha": LAB_GATE_ALPHA},
}

# ---- the recorder's HTTP API (ops/recorder/server.py), as the operator, the CLI and the console call it
ACCURACY_PATH = "/v1/accuracy"                  # GET live accuracy (?model=&version=)
ACCURACY_SERIES_PATH = "/v1/accuracy/series"    # GET the same per day
LAB_RESULTS_PATH = "/v1/labresults"             # POST a lab results CSV (?partial=true)
# The paired figures (GET /v1/pairs): a stable version against its shadow.
PAIRS_PATH = "/v1/pairs"
# With ?detail=1: one list per name, one value per lab-matched lot, what the operator's lab gate reads.
PAIRS_DETAIL_FIELDS = ("sample_id", "stable_ppb", "candidate_ppb", "truth_ppb")
