"""Request decoding, validation and response encoding for KServe V1 and V2 (Open Inference Protocol).

Everything a caller can get wrong raises ClientError with an HTTP status and a message that names
the problem, so the server answers 4xx and never 5xx for bad input.

The package: `common` (ClientError, the shared checks, Request), `v1`, `v2` (REST), `grpc`
(KServe's InferRequest / InferResponse), `openapi` (the request bodies' schemas); every name is
importable from `model_server.codec`.
"""
from __future__ import annotations

from don_core.contract import INPUT_NAME, OUTPUT_NAME, SAMPLE_ID_INPUT
from model_server.codec.common import (DRIFT_OUTPUTS, MAX_SAMPLE_ID_CHARS, V2_DTYPES, ClientError,
                                       Request, RequestedOutput, V2Request,
                                       check_json_content_type, check_outputs, check_rows,
                                       check_sample_ids, media_type, parse_json)
from model_server.codec.grpc import decode_infer_request, encode_infer_response
from model_server.codec.openapi import spectrum_schema, v1_body_schema, v2_body_schema
from model_server.codec.v1 import decode_v1, decode_v1_request, encode_v1
from model_server.codec.v2 import (Tensor, check_tensor_header, decode_v2, decode_v2_document,
                                   encode_v2)

__all__ = ["DRIFT_OUTPUTS", "INPUT_NAME", "MAX_SAMPLE_ID_CHARS", "OUTPUT_NAME", "SAMPLE_ID_INPUT",
           "V2_DTYPES", "ClientError", "Request", "RequestedOutput", "Tensor", "V2Request",
           "check_json_content_type", "check_outputs", "check_rows", "check_sample_ids",
           "check_tensor_header", "decode_infer_request", "decode_v1", "decode_v1_request",
           "decode_v2", "decode_v2_document", "encode_infer_response", "encode_v1", "encode_v2",
           "media_type", "parse_json", "spectrum_schema", "v1_body_schema", "v2_body_schema"]
