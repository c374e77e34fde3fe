"""KServe V2 over gRPC: KServe's InferRequest read by the REST rules (model_server.codec.v2), and
the answer as KServe's InferResponse."""
from __future__ import annotations

from typing import Mapping

import numpy as np
from kserve.protocol.infer_type import InferOutput, InferResponse

from don_core.schema import REFLECTANCE_RANGE
from model_server.codec.common import Request
from model_server.codec.v2 import decode_v2_document


def decode_infer_request(request, max_rows: int,
                         valid_range: tuple[float, float] = REFLECTANCE_RANGE) -> Request:
    """gRPC V2 (KServe's InferRequest): its tensors are put in the binary extension's form (raw
    contents as binary chunks, typed contents as "data") and read by the same rules as REST."""
    inputs, chunks = [], []
    for tensor in request.inputs:
        doc = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype}
        raw = tensor._raw_data  # KServe keeps raw_input_contents there; no public accessor
        if raw is not None:
            doc["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            doc["data"] = list(tensor.data or ())
        inputs.append(doc)
    doc = {"inputs": inputs}
    if request.id:
        doc["id"] = request.id
    if request.parameters:
        doc["parameters"] = _grpc_parameters(request.parameters)
    if request.request_outputs:
        doc["outputs"] = [{"name": o.name} for o in request.request_outputs]
    # typed contents hold numbers only (a protobuf field per datatype): no boolean can hide there
    return decode_v2_document(doc, b"".join(chunks), max_rows, valid_range, False)


def _grpc_parameters(params) -> dict:
    """gRPC InferParameter messages (one of bool/int64/string) as the JSON values they stand for."""
    plain = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice") if hasattr(value, "WhichOneof") else None
        plain[key] = getattr(value, choice) if choice else value
    return plain


def encode_infer_response(outputs: Mapping[str, np.ndarray], datatypes: Mapping[str, str],
                          response_id: str, model_name: str, version: str) -> InferResponse:
    """KServe's InferResponse for the outputs a request named (`datatypes`: the version's output
    types). gRPC answers every output as raw bytes (raw_output_contents is all or nothing)."""
    infer_outputs = []
    for name, values in outputs.items():
        datatype = datatypes[name]
        out = InferOutput(name=name, shape=[len(values)], datatype=datatype)
        if datatype == "BYTES":
            out.set_data_from_numpy(np.array([v.encode() for v in values], dtype=object))
        else:
            out.set_data_from_numpy(values.astype(np.bool_ if datatype == "BOOL"
                                                  else np.float32))
        infer_outputs.append(out)
    return InferResponse(response_id=response_id, model_name=model_name, model_version=version,
                         infer_outputs=infer_outputs)
