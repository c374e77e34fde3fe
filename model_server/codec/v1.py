"""KServe V1: `{"instances": [...]}` in, `{"predictions": [...]}` out."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import orjson

from don_core.contract import (OUTPUT_NAME, PPB_LOWER_OUTPUT, PPB_UPPER_OUTPUT,
                               V1_OUTPUTS_PARAMETER, V1_SAMPLE_IDS, decision_output)
from don_core.schema import DECISION_THRESHOLDS_PPB, N_BANDS, REFLECTANCE_RANGE
from model_server.codec.common import (ClientError, Request, RequestedOutput, _may_hold_bool,
                                       _numeric_array, _unique, check_rows, check_sample_ids,
                                       parse_json)


def decode_v1(body: bytes, max_rows: int,
              valid_range: tuple[float, float] = REFLECTANCE_RANGE) -> np.ndarray:
    """`{"instances": [[448 numbers], ...]}` -> float64 array [n, 448]."""
    return decode_v1_request(body, max_rows, valid_range).x


def decode_v1_request(body: bytes, max_rows: int,
                      valid_range: tuple[float, float] = REFLECTANCE_RANGE) -> "Request":
    """The batch, the extra outputs named in `parameters.outputs` (ppb is always there, as
    "predictions") and the optional `"sample_ids": [str | null, ...]` (one per instance)."""
    doc = parse_json(body)
    x = _v1_instances(doc, body, max_rows, valid_range)
    sample_ids = doc.get(V1_SAMPLE_IDS)
    if sample_ids is not None:
        if not isinstance(sample_ids, list):
            raise ClientError(400, f'"{V1_SAMPLE_IDS}" must be a list of strings (or nulls), '
                                   "one per instance")
        sample_ids = check_sample_ids(sample_ids, len(x), f'"{V1_SAMPLE_IDS}"')
    outputs = _v1_outputs(doc)
    return Request(x, None, outputs, bool(outputs), sample_ids)


def _v1_outputs(doc: dict) -> list[RequestedOutput]:
    if "parameters" not in doc:  # null is not an object: 400, as documented
        return []
    params = doc["parameters"]
    if not isinstance(params, dict):
        raise ClientError(400, '"parameters" must be a JSON object')
    if V1_OUTPUTS_PARAMETER not in params:
        return []
    names = params[V1_OUTPUTS_PARAMETER]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ClientError(400, f'parameters.{V1_OUTPUTS_PARAMETER} must be a list of output '
                               f'names, e.g. ["{decision_output(DECISION_THRESHOLDS_PPB[0])}", '
                               f'"{PPB_LOWER_OUTPUT}", "{PPB_UPPER_OUTPUT}"]')
    return _unique([RequestedOutput(n) for n in names if n != OUTPUT_NAME])


def _v1_instances(doc: dict, body: bytes, max_rows: int,
                  valid_range: tuple[float, float]) -> np.ndarray:
    if "instances" not in doc:
        raise ClientError(400, 'V1 request needs an "instances" list of spectra '
                               f'([[{N_BANDS} numbers], ...])')
    instances = doc["instances"]
    if not isinstance(instances, list):
        raise ClientError(400, '"instances" must be a list of spectra')
    if not instances:
        raise ClientError(400, "empty batch: \"instances\" holds no spectrum")
    if not isinstance(instances[0], list):
        raise ClientError(400, f'each instance must be a list of {N_BANDS} numbers '
                               f'(got {type(instances[0]).__name__}); wrong dimension')
    if len(instances) > max_rows:  # refuse before converting a huge batch
        raise ClientError(413, f"batch of {len(instances)} rows is above this server's limit "
                               f"of {max_rows} rows per request; split it")
    return check_rows(_numeric_array(instances, '"instances"', _may_hold_bool(body)), max_rows,
                      valid_range)


def encode_v1(ppb: np.ndarray, extra: Mapping[str, np.ndarray] | None = None) -> bytes:
    """`{"predictions": [ppb...]}`, plus one list per extra output named in the request."""
    doc = {"predictions": ppb}
    for name, values in (extra or {}).items():
        doc[name] = values.tolist() if values.dtype == object else values
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
