"""Shipped ONNX models: located with importlib.resources, checked against their card.

Each model ``<name>.onnx`` in ``heliostat/ml/models/`` has a model card
``<name>.card.json`` beside it holding, among the training facts, the file's SHA-256.
:func:`load_session` reads the bytes, checks the hash and only then builds the
onnxruntime session: a missing, truncated or altered file is a clear
:class:`ModelError`, never a silently different model.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from heliostat.errors import HeliostatError

__all__ = ["ModelError", "load_card", "load_session", "model_bytes"]

_PACKAGE = "heliostat.ml"
_FOLDER = "models"
_RETRAIN = "python -m heliostat.ml.training.train"


class ModelError(HeliostatError, OSError):
    """A shipped model is missing, unreadable or does not match its model card."""


def _resource(name: str):
    return resources.files(_PACKAGE).joinpath(_FOLDER, name)


def load_card(name: str, models_dir: str | Path | None = None) -> dict:
    """The model card of a shipped model (``<name>.card.json``)."""
    where = Path(models_dir) / f"{name}.card.json" if models_dir else _resource(f"{name}.card.json")
    label = f"heliostat/ml/models/{name}.card.json" if models_dir is None else str(where)
    try:
        card = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            f"model card {label} is missing: the package is incomplete (reinstall it) "
            f"or the model was never trained ({_RETRAIN})"
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"model card {label} is not valid JSON: {exc}") from None
    if not isinstance(card, dict) or not isinstance(card.get("sha256"), str):
        raise ModelError(f"model card {label} has no 'sha256' entry")
    return card


def model_bytes(name: str, models_dir: str | Path | None = None) -> tuple[bytes, dict]:
    """The model file's bytes, after checking them against the card's SHA-256.

    Parameters
    ----------
    name : str
        Model name (``spot_cnn``, ``pointing_residual``).
    models_dir : path, optional
        Read from this folder instead of the installed package (tests, retraining).

    Raises
    ------
    ModelError
        The card or the model file is missing, or the file's hash differs from the card's.
    """
    card = load_card(name, models_dir)
    fname = card.get("file", f"{name}.onnx")
    where = Path(models_dir) / fname if models_dir else _resource(fname)
    label = f"heliostat/ml/models/{fname}" if models_dir is None else str(where)
    try:
        data = where.read_bytes()
    except FileNotFoundError:
        raise ModelError(
            f"model file {label} is missing: reinstall the package or retrain ({_RETRAIN})"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != card["sha256"]:
        raise ModelError(
            f"model file {label} does not match its model card: SHA-256 {digest[:16]}… "
            f"expected {card['sha256'][:16]}… ({len(data)} bytes, card says "
            f"{card.get('size_bytes', '?')}); the file was altered or replaced — reinstall "
            f"the package or retrain ({_RETRAIN})"
        )
    return data, card


@lru_cache(maxsize=8)
def _session(name: str, models_dir: str | None):
    import onnxruntime as ort

    data, card = model_bytes(name, models_dir)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"onnxruntime cannot load model {name!r}: {exc}") from None
    return sess, card


def load_session(name: str, models_dir: str | Path | None = None):
    """A (cached) onnxruntime session and the card of a verified shipped model."""
    return _session(name, None if models_dir is None else str(models_dir))
