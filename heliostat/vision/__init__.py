"""Vision: target registration (pixels ↔ target-plane metres) and sun-spot detection.

Pure core: :mod:`~heliostat.vision.target` (registration), :mod:`~heliostat.vision.signal`
(frames, statistics, flat field), :mod:`~heliostat.vision.classical` (detection on a dark
board or with a sun-off frame) and :mod:`~heliostat.vision.sunlit` (a sunlit target) take
arrays and return dataclasses; :mod:`~heliostat.vision.io` reads files;
:mod:`~heliostat.vision.pipeline` turns campaign frames into observations;
:mod:`~heliostat.vision.methods` names the detection methods.

The names below are imported on first use (PEP 562), so importing a light submodule such
as :mod:`~heliostat.vision.methods` (the CLI does, to list ``--method`` choices) does not
load numba or OpenCV.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> submodule that defines it.
_EXPORTS: dict[str, str] = {
    "FLAGS": "classical",
    "DetectOptions": "classical",
    "SpotResult": "classical",
    "detect_spot": "classical",
    "FlatField": "signal",
    "SpotInFlatError": "signal",
    "prepare_flat": "signal",
    "PlaneMaps": "target",
    "TargetRegistration": "target",
    "check_quadrilateral": "target",
    "register_aruco": "target",
    "register_corners": "target",
    "SunlitOptions": "sunlit",
    "board_is_sunlit": "sunlit",
    "detect_spot_sunlit": "sunlit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
