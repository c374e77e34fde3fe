"""ONNX copies of both families for the fast serving path: input `spectra` float32 [N,448],
output `ppb` float32 [N]. The export is checked against the native model before publishing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from don_core.contract import INPUT_NAME as INPUT
from don_core.contract import ONNX_MIN_AGREEMENT
from don_core.contract import OUTPUT_NAME as OUTPUT
from don_core.export_check import agreement
from don_core.schema import N_BANDS

OPSET = 17


def sklearn_to_onnx(pipeline, output: str = OUTPUT) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import Pipeline

    steps = list(pipeline.steps)
    name, final = steps[-1]
    inverse = None
    if isinstance(final, TransformedTargetRegressor):
        inverse = final.inverse_func.__name__
        steps[-1] = (name, final.regressor_)
    inner = convert_sklearn(Pipeline(steps), initial_types=[(INPUT, FloatTensorType([None, N_BANDS]))],
                            target_opset={"": OPSET, "ai.onnx.ml": 3})
    return _append_output_head(inner, inverse, output)


def _append_output_head(model: onnx.ModelProto, inverse: str | None,
                        output: str = OUTPUT) -> onnx.ModelProto:
    """Inverse target transform, clamp at zero, flatten to [N], named `output` (`ppb`)."""
    graph = model.graph
    current = graph.output[0].name
    nodes, inits = [], []
    if inverse == "expm1":
        inits.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
        nodes += [helper.make_node("Exp", [current], ["exp"]),
                  helper.make_node("Sub", ["exp", "one"], ["inv"])]
        current = "inv"
    elif inverse == "square":
        nodes.append(helper.make_node("Mul", [current, current], ["inv"]))
        current = "inv"
    elif inverse is not None:
        raise ValueError(f"no ONNX form for inverse target transform {inverse!r}")
    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array([-1], np.int64), "flat")]
    nodes += [helper.make_node("Max", [current, "zero"], ["clamped"]),
              helper.make_node("Reshape", ["clamped", "flat"], [output])]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, [None]))
    onnx.checker.check_model(model)
    return model


def network_to_onnx(network) -> onnx.ModelProto:
    """The TF family's inference path (see families.tf.Network) as ONNX ops."""
    inits = [numpy_helper.from_array(network.mean, "mean"),
             numpy_helper.from_array(network.scale, "scale"),
             numpy_helper.from_array(network.components, "components")]
    nodes = [helper.make_node("Sub", [INPUT, "mean"], ["centred"]),
             helper.make_node("Div", ["centred", "scale"], ["standard"]),
             helper.make_node("MatMul", ["standard", "components"], ["scores"])]
    member_outputs = []
    for m, layers in enumerate(network.members):
        h = "scores"
        for i, (W, b, activation) in enumerate(layers):
            w_name, b_name, out = f"m{m}_w{i}", f"m{m}_b{i}", f"m{m}_h{i}"
            inits += [numpy_helper.from_array(W.astype(np.float32), w_name),
                      numpy_helper.from_array(b.astype(np.float32), b_name)]
            nodes.append(helper.make_node("Gemm", [h, w_name, b_name], [out]))
            if activation == "relu":
                nodes.append(helper.make_node("Relu", [out], [out + "_relu"]))
                out += "_relu"
            h = out
        member_outputs.append(h)
    const = {"n": float(len(member_outputs)), "t_scale": network.target_scale,
             "t_mean": network.target_mean, "t_min": network.target_min,
             "t_max": network.target_max, "zero": 0.0}
    inits.append(numpy_helper.from_array(np.array([-1], np.int64), "flat"))
    nodes += [helper.make_node("Sum", member_outputs, ["sum"]),
              helper.make_node("Div", ["sum", "n"], ["avg"]),
              helper.make_node("Reshape", ["avg", "flat"], ["avg_flat"]),
              helper.make_node("Mul", ["avg_flat", "t_scale"], ["scaled"]),
              helper.make_node("Add", ["scaled", "t_mean"], ["t"]),
              helper.make_node("Clip", ["t", "t_min", "t_max"], ["t_clipped"])]
    if network.target == "log1p":
        const["one"] = 1.0
        nodes += [helper.make_node("Exp", ["t_clipped"], ["e"]),
                  helper.make_node("Sub", ["e", "one"], ["inv"])]
    elif network.target == "sqrt":
        nodes.append(helper.make_node("Mul", ["t_clipped", "t_clipped"], ["inv"]))
    else:  # root4
        const["four"] = 4.0
        nodes += [helper.make_node("Max", ["t_clipped", "zero"], ["t_pos"]),
                  helper.make_node("Pow", ["t_pos", "four"], ["inv"])]
    nodes.append(helper.make_node("Max", ["inv", "zero"], [OUTPUT]))
    inits += [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in const.items()]
    graph = helper.make_graph(
        nodes, "don_mlp", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, N_BANDS])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="don-predictor", ir_version=9)
    onnx.checker.check_model(model)
    return model


def side_by_side(models: list[onnx.ModelProto]) -> onnx.ModelProto:
    """One model running `models` on their shared input (each with its own output names): one
    ONNX Runtime session and one run instead of one each. Node and initializer names are prefixed
    per model so that they cannot clash; inputs and outputs keep their names."""
    from onnx import compose

    if len({tuple(i.name for i in m.graph.input) for m in models}) != 1:
        raise ValueError("side_by_side: the models must share their inputs")
    nodes, inits, outputs, opsets = [], [], [], {}
    for index, model in enumerate(models):
        renamed = compose.add_prefix(model, f"m{index}_", rename_inputs=False,
                                     rename_outputs=False)
        nodes += renamed.graph.node
        inits += renamed.graph.initializer
        outputs += model.graph.output
        for opset in model.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    first = models[0]
    graph = helper.make_graph(nodes, "side_by_side", list(first.graph.input), outputs, inits)
    merged = helper.make_model(graph, ir_version=max(m.ir_version for m in models),
                               opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                               producer_name="don-predictor")
    onnx.checker.check_model(merged)
    return merged


def save(model: onnx.ModelProto, path: Path) -> None:
    onnx.save_model(model, str(path))


def onnx_predict(path: Path, X: np.ndarray, output: str = OUTPUT) -> np.ndarray:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run([output], {INPUT: np.asarray(X, dtype=np.float32)})[0]


def check_match(reference: np.ndarray, candidate: np.ndarray, what: str) -> float:
    """Raise if the ONNX copy strays from the native model; return the worst relative error."""
    reference, candidate = np.asarray(reference, float), np.asarray(candidate, float)
    agreed, diff = agreement(reference, candidate)  # the contract's tolerance, as the server's
    if agreed < ONNX_MIN_AGREEMENT:
        worst = int(np.argmax(diff))
        raise RuntimeError(f"{what}: ONNX export agrees with the native model on only "
                           f"{agreed:.1%} of {len(diff)} rows (row {worst}: "
                           f"{candidate[worst]:.1f} vs {reference[worst]:.1f} ppb)")
    return float(np.max(diff / np.maximum(np.abs(reference), 1.0)))
