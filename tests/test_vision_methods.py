"""The detection-method registry (heliostat/vision/methods.py): one list of names that the
CLI's ``--method`` choices, :func:`detector_for` and every registered detector agree on."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from heliostat.errors import InputError
from heliostat.vision.methods import DEFAULT_METHOD, METHODS, detector_for, method_names

REPO = Path(__file__).resolve().parents[1]
#: The keyword arguments every detector takes (the classical detector's call).
DETECT_KEYWORDS = {"dark", "flat", "black_level_dn", "bit_depth", "expected_xy_m", "target"}


def test_names_default_and_unknown():
    assert method_names()[0] == DEFAULT_METHOD == "classical"
    assert {"classical", "onnx"} <= set(method_names())
    assert all(m.name == k and m.summary for k, m in METHODS.items())
    with pytest.raises(InputError, match="--method: expected one of classical, onnx"):
        detector_for("cnn")


@pytest.mark.parametrize("name", method_names())
def test_every_method_loads_a_detector_with_the_classical_call(name):
    fn = detector_for(name)
    params = inspect.signature(fn).parameters
    assert list(params)[:2] == ["image", "registration"]
    assert DETECT_KEYWORDS <= set(params), f"{name}: missing {DETECT_KEYWORDS - set(params)}"


def test_cli_choices_come_from_the_registry():
    from heliostat.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    detect = sub.choices["detect"]
    (method,) = [a for a in detect._actions if a.dest == "method"]
    assert tuple(method.choices) == method_names()
    assert method.default == DEFAULT_METHOD


def test_reading_the_registry_loads_no_detector():
    code = (
        "import sys\n"
        "import heliostat.vision.methods as m\n"
        "m.method_names()\n"
        "print(sorted(k for k in ('numba', 'cv2', 'onnxruntime', 'heliostat.vision.classical',"
        " 'heliostat.ml') if k in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_vision_package_names_resolve_on_first_use():
    import heliostat.vision as vision
    from heliostat.vision.classical import detect_spot

    assert vision.detect_spot is detect_spot
    assert "register_aruco" in dir(vision)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vision.nope  # noqa: B018
