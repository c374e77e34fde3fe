"""The request bodies as OpenAPI (JSON Schema 2020-12) documents them, from the decoders' rules."""
from __future__ import annotations

from don_core.contract import (OUT_OF_DISTRIBUTION_OUTPUT, OUTLIER_SCORE_OUTPUT, PPB_LOWER_OUTPUT,
                               PPB_UPPER_OUTPUT, SAMPLE_ID_INPUT, V1_OUTPUTS_PARAMETER,
                               decision_output)
from don_core.schema import N_BANDS, REFLECTANCE_RANGE
from model_server.codec.common import V2_DTYPES


def spectrum_schema(valid_range: tuple[float, float] = REFLECTANCE_RANGE) -> dict:
    low, high = valid_range
    return {"type": "array", "items": {"type": "number", "minimum": low, "maximum": high},
            "minItems": N_BANDS, "maxItems": N_BANDS,
            "description": f"{N_BANDS} reflectance values, each within the server's plausible "
                           "range (--reflectance_range)"}


def v1_body_schema(valid_range: tuple[float, float] = REFLECTANCE_RANGE,
                   max_rows: int | None = None, outputs: list[str] | None = None) -> dict:
    """`outputs`: the extra outputs the served version has (None: not known yet)."""
    instances = {"type": "array", "items": spectrum_schema(valid_range), "minItems": 1}
    if max_rows is not None:
        instances["maxItems"] = max_rows
    names = {"type": "string"} if outputs is None else {"type": "string", "enum": outputs}
    return {"type": "object", "required": ["instances"], "properties": {
        "instances": instances,
        "parameters": {"type": "object", "properties": {V1_OUTPUTS_PARAMETER: {
            "type": "array", "items": names,
            "description": f"extra outputs: {decision_output('<limit>')}, {PPB_LOWER_OUTPUT}, "
                           f"{PPB_UPPER_OUTPUT}, {OUTLIER_SCORE_OUTPUT}, "
                           f"{OUT_OF_DISTRIBUTION_OUTPUT}"}}}}}


def v2_body_schema(valid_range: tuple[float, float] = REFLECTANCE_RANGE,
                   max_rows: int | None = None) -> dict:
    """The JSON form with one spectra tensor (the binary extension and the optional sample_id
    tensor are described in prose: a schema cannot tie binary_data_size to the bytes after it)."""
    spectrum = spectrum_schema(valid_range)
    rows = {"type": "integer", "minimum": 1}
    if max_rows is not None:
        rows["maximum"] = max_rows
    return {"type": "object", "required": ["inputs"], "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {
            "type": "object", "required": ["name", "shape", "datatype", "data"],
            "properties": {
                # any name but the sample id tensor's, which must be BYTES
                "name": {"type": "string", "not": {"const": SAMPLE_ID_INPUT}},
                "shape": {"type": "array", "minItems": 2, "maxItems": 2,
                          "prefixItems": [rows, {"type": "integer", "const": N_BANDS}],
                          "description": f"[n, {N_BANDS}]: n spectra; data holds n x {N_BANDS} "
                                         "numbers"},
                "datatype": {"type": "string", "enum": sorted(V2_DTYPES)},
                "data": {"description": f"row-major: nested rows, or flat (n x {N_BANDS} "
                                        "numbers)",
                         "anyOf": [{"type": "array", "items": spectrum, "minItems": 1},
                                   {"type": "array", "items": spectrum["items"],
                                    "minItems": N_BANDS}]}}}},
        "outputs": {"type": "array", "items": {"type": "object",
                                               "properties": {"name": {"type": "string"}}}}}}
