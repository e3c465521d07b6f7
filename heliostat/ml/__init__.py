"""Learned methods, run with onnxruntime only (see ``docs/ml.md``).

- :mod:`heliostat.ml.spot_model` — :func:`~heliostat.ml.spot_model.detect_spot_onnx`, the
  learned spot detector (same call and result as the classical detector);
- :mod:`heliostat.ml.spot_real` — :func:`~heliostat.ml.spot_real.detect_spot_onnx_real`,
  the learned detector for a sunlit target without a sun-off frame (trained on
  composites of the real Jülich target; input :mod:`heliostat.ml.real_input`);
- :mod:`heliostat.ml.hybrid` — the hybrid pointing model (geometric fit + learned residual);
- :mod:`heliostat.ml.rectify` — target-plane crops (the detector's input);
- :mod:`heliostat.ml.registry` — shipped models, hash-checked against their model cards;
- :mod:`heliostat.ml.training` — PyTorch training and ONNX export (``train`` extra only).

The classical-vs-ML comparison (``heliostat bench compare``) is a harness that uses the
simulator, so it lives in :mod:`heliostat.bench.compare`.

Nothing is imported here, so ``import heliostat.ml`` loads neither onnxruntime nor torch.
"""
