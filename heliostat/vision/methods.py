"""The spot-detection methods by name: one registry for the CLI, the pipeline and benches.

Every method is a function with the call and result of
:func:`heliostat.vision.classical.detect_spot` (``image, registration, *, dark, flat,
black_level_dn, bit_depth, expected_xy_m, target, options`` ->
:class:`~heliostat.vision.classical.SpotResult`; arguments a method does not use are
accepted and ignored), so callers switch methods by name alone.

A method is registered as the module and function that implement it, imported only when
the method is asked for: reading the registry (``heliostat detect --help``, the CLI's
``--method`` choices) loads neither numba, OpenCV nor onnxruntime.

To add a method, add one :class:`DetectMethod` line to :data:`METHODS`; the CLI's
``--method`` choices and :func:`detector_for` follow. The learned models' cards and
hashes stay in :mod:`heliostat.ml.registry`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from heliostat.errors import InputError


@dataclass(frozen=True, slots=True)
class DetectMethod:
    """One spot-detection method.

    Attributes
    ----------
    name : str
        The name callers use (``heliostat detect --method NAME``).
    module, function : str
        Where the detector function lives; imported when the method is asked for.
    summary : str
        One line for help texts.
    first_use : str
        Why the method's first frame in a process may be slow, for a person waiting on
        it ("" when it is not).
    """

    name: str
    module: str
    function: str
    summary: str
    first_use: str = ""

    def load(self) -> Callable:
        """The detector function (imports its module)."""
        return getattr(importlib.import_module(self.module), self.function)


#: The classical method's background models (:mod:`heliostat.vision.auto`;
#: ``heliostat detect --background``).
BACKGROUNDS: tuple[str, ...] = ("auto", "dark-board", "sunlit")

#: The registered methods by name, in help order; the first is the default.
METHODS: Mapping[str, DetectMethod] = MappingProxyType(
    {
        m.name: m
        for m in (
            DetectMethod(
                "classical",
                "heliostat.vision.auto",
                "detect_spot_auto",
                "flux centroid over a background model chosen from the frames: a dark "
                "board, or a sunlit target (default)",
                "the first frame compiles the detector's kernels (numba; 10-40 s once per "
                "machine and frame type, then loaded from numba's disk cache in about 1 s)",
            ),
            DetectMethod(
                "onnx",
                "heliostat.ml.spot_model",
                "detect_spot_onnx",
                "the learned ONNX model (docs/ml.md; `heliostat bench compare` says which "
                "is better)",
            ),
            DetectMethod(
                "onnx-real",
                "heliostat.ml.spot_real",
                "detect_spot_onnx_real",
                "the learned ONNX model for a sunlit target without a sun-off frame, trained "
                "on real Jülich backgrounds (docs/ml.md)",
            ),
        )
    }
)
#: The method used when none is named.
DEFAULT_METHOD = next(iter(METHODS))


def method_names() -> tuple[str, ...]:
    """Names of the registered methods, the default first."""
    return tuple(METHODS)


def first_use_note(name: str) -> str:
    """What to tell a person waiting on a method's slow first frame ("" when the first
    frame will not be slow for the method's own reasons: the classical detector's kernels
    already compiled in numba's disk cache)."""
    method = METHODS.get(name)
    if method is None or not method.first_use:
        return ""
    if method.module == "heliostat.vision.auto":
        from heliostat.vision import _kernels

        if compiled_on_disk(_kernels):
            return ""
    return method.first_use


def compiled_on_disk(module) -> bool | None:
    """Whether numba's disk cache holds a current compilation (for some frame type) of
    every public cached kernel of ``module`` (helpers inlined into them have no cache of
    their own), i.e. its first call loads rather than compiles.

    Reads numba's cache index, a private numba interface: None when it cannot tell. A
    cache for another frame dtype than the next frame's still compiles once.
    """
    try:
        found = False
        for name, obj in list(vars(module).items()):
            if name.startswith("_"):
                continue
            cache_file = getattr(getattr(obj, "_cache", None), "_cache_file", None)
            if cache_file is None:
                continue
            found = True
            if not cache_file._load_index():  # {} when missing or stale
                return False
        return found or None
    except Exception:  # noqa: BLE001 - numba internals differ between versions
        return None


def detector_for(name: str) -> Callable:
    """The detector function of a registered method.

    Parameters
    ----------
    name : str
        A key of :data:`METHODS`.

    Raises
    ------
    InputError
        An unknown method name (the message lists the registered ones).
    """
    method = METHODS.get(name)
    if method is None:
        raise InputError(f"--method: expected one of {', '.join(method_names())}, got {name!r}")
    return method.load()
