"""Training of the learned models (needs the ``train`` extra: torch, onnx).

Run ``python -m heliostat.ml.training.train``; see :mod:`heliostat.ml.training.train`.
Only :mod:`~heliostat.ml.training.spot_cnn` and the training script import torch, and only
inside functions; :mod:`~heliostat.ml.training.data` renders frames with :mod:`sim`.

The real-background model: ``python -m heliostat.ml.training.train_real`` (composites
of the real Jülich images, :mod:`~heliostat.ml.training.real_data`; network
:mod:`~heliostat.ml.training.spot_real`).
"""
