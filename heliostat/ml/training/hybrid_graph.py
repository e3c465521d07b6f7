"""Build the ONNX graph of the hybrid pointing model's learned residual regressor.

The regressor is a ridge regression on a fixed basis of the sun position and the motor
steps (:func:`heliostat.ml.hybrid.basis`). The *graph* is the same for every heliostat;
its per-heliostat coefficients are inputs. So one shipped file serves the whole field,
each heliostat's calibration only fits 9 x 2 + 2 numbers (small data: ~30 points), and
at run time only onnxruntime is needed — no ONNX builder, no torch::

    features (N, 4) = [sun_azimuth_rad, sun_elevation_rad, axis1_steps, axis2_steps]
    z = (features − centre) / scale                     centre, scale: (4,)
    b = [sin z₀, sin z₁, cos z₀, cos z₁, z₂, z₃, z₂², z₃², z₂·z₃]     (N, 9)
    correction_mrad = b @ weights + bias                weights (9, 2), bias (2,)

(``centre`` and ``scale`` of the two angles are 0 and 1, so z₀, z₁ are the angles.)
Needs the ``onnx`` package (training extra).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

N_BASIS = 9


def build_graph():
    """The :class:`onnx.ModelProto` of the regressor (opset 17)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f32 = TensorProto.FLOAT
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "i0"),
        numpy_helper.from_array(np.array([1], np.int64), "i1"),
        numpy_helper.from_array(np.array([2], np.int64), "i2"),
        numpy_helper.from_array(np.array([4], np.int64), "i4"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "centre"], ["d"]),
        helper.make_node("Div", ["d", "scale"], ["z"]),
        helper.make_node("Slice", ["z", "i0", "i2", "i1"], ["ang"]),  # columns 0:2
        helper.make_node("Slice", ["z", "i2", "i4", "i1"], ["st"]),  # columns 2:4
        helper.make_node("Sin", ["ang"], ["sin"]),
        helper.make_node("Cos", ["ang"], ["cos"]),
        helper.make_node("Mul", ["st", "st"], ["sq"]),
        helper.make_node("Slice", ["st", "i0", "i1", "i1"], ["s1"]),
        helper.make_node("Slice", ["st", "i1", "i2", "i1"], ["s2"]),
        helper.make_node("Mul", ["s1", "s2"], ["cross"]),
        helper.make_node("Concat", ["sin", "cos", "st", "sq", "cross"], ["basis"], axis=1),
        helper.make_node("MatMul", ["basis", "weights"], ["lin"]),
        helper.make_node("Add", ["lin", "bias"], ["correction_mrad"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pointing_residual",
        [
            helper.make_tensor_value_info("features", f32, ["n", 4]),
            helper.make_tensor_value_info("centre", f32, [4]),
            helper.make_tensor_value_info("scale", f32, [4]),
            helper.make_tensor_value_info("weights", f32, [N_BASIS, 2]),
            helper.make_tensor_value_info("bias", f32, [2]),
        ],
        [helper.make_tensor_value_info("correction_mrad", f32, ["n", 2])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="heliostat"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_hybrid_graph(out_dir: Path) -> dict:
    """Write ``pointing_residual.onnx`` and its card into ``out_dir``; return the card."""
    import onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "pointing_residual.onnx"
    data = build_graph().SerializeToString()
    path.write_bytes(data)
    card = {
        "schema": "heliostat-model-card/1",
        "name": "pointing_residual",
        "file": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "task": "learned part of the hybrid pointing model: beam residual of the geometric "
        "error model [mrad, target-plane axes] from sun position and motor steps",
        "inputs": {
            "features": "float32 (N, 4): sun_azimuth_rad, sun_elevation_rad, axis1_steps, "
            "axis2_steps",
            "centre": "float32 (4,)",
            "scale": "float32 (4,)",
            "weights": "float32 (9, 2): per-heliostat ridge coefficients",
            "bias": "float32 (2,)",
        },
        "outputs": {"correction_mrad": "float32 (N, 2)"},
        "training": {
            "where": "per heliostat at calibration time (heliostat.ml.hybrid.fit_hybrid): "
            "ridge regression, penalty chosen by internal k-fold cross-validation; "
            "no offline training, so no training energy",
            "energy_j": 0.0,
        },
        "opset": 17,
        "framework": {"onnx": onnx.__version__},
        "command": "python -m heliostat.ml.training.train --hybrid-only",
    }
    (out_dir / "pointing_residual.card.json").write_text(
        json.dumps(card, indent=2) + "\n", encoding="utf-8"
    )
    return card
