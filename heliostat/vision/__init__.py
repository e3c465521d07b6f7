"""Vision: target registration (pixels ↔ target-plane metres) and sun-spot detection.

Pure core: :mod:`~heliostat.vision.target` (registration), :mod:`~heliostat.vision.signal`
(frames, statistics, flat field) and :mod:`~heliostat.vision.classical` (detection) take
arrays and return dataclasses; :mod:`~heliostat.vision.io` reads files;
:mod:`~heliostat.vision.pipeline` turns campaign frames into observations.
"""

from heliostat.vision.classical import FLAGS, DetectOptions, SpotResult, detect_spot
from heliostat.vision.signal import FlatField, SpotInFlatError, prepare_flat
from heliostat.vision.target import (
    PlaneMaps,
    TargetRegistration,
    check_quadrilateral,
    register_aruco,
    register_corners,
)

__all__ = [
    "FLAGS",
    "DetectOptions",
    "FlatField",
    "PlaneMaps",
    "SpotResult",
    "TargetRegistration",
    "check_quadrilateral",
    "detect_spot",
    "SpotInFlatError",
    "prepare_flat",
    "register_aruco",
    "register_corners",
]
