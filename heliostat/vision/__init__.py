"""Vision: target registration (pixels ↔ target-plane metres) and sun-spot detection.

Pure core: :mod:`~heliostat.vision.target` (registration), :mod:`~heliostat.vision.signal`
(frames, statistics, flat field), :mod:`~heliostat.vision.classical` (detection on a dark
board or with a sun-off frame) and :mod:`~heliostat.vision.sunlit` (a sunlit target) take
arrays and return dataclasses; :mod:`~heliostat.vision.io` reads files;
:mod:`~heliostat.vision.pipeline` turns campaign frames into observations.
"""

from heliostat.vision.classical import FLAGS, DetectOptions, SpotResult, detect_spot
from heliostat.vision.signal import FlatField, SpotInFlatError, prepare_flat
from heliostat.vision.sunlit import SunlitOptions, board_is_sunlit, detect_spot_sunlit
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
    "SunlitOptions",
    "board_is_sunlit",
    "detect_spot_sunlit",
    "TargetRegistration",
    "check_quadrilateral",
    "detect_spot",
    "SpotInFlatError",
    "prepare_flat",
    "register_aruco",
    "register_corners",
]
