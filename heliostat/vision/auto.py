"""The classical detector with its background model chosen from the frames.

Two background models measure the same flux centroid (:class:`SpotResult`):

- **dark board** (:func:`~heliostat.vision.classical.detect_spot`): the board is dark in
  the frame (a camera exposed for the spot), or a sun-off frame at the same exposure
  removes the ambient light exactly (``image - dark``);
- **sunlit** (:func:`~heliostat.vision.sunlit.detect_spot_sunlit`): the board itself is
  lit (a camera exposed for the target, as on the real Jülich frames). A sun-off frame
  is then another picture of the sunlit board whose ambient light and shadows drift
  between the two exposures (clouds, the sun moving): subtracted, a 2 % drift of a board
  at 55 % of full scale leaves a residue of ~1 % of full scale over the whole target,
  which biases the centroid. Used instead as the *empty target* of the sunlit model, it
  divides the board's texture out and the drift is fitted around the spot.

:func:`choose_background` says which applies: sunlit when the frame that shows the board
(the sun-off frame when there is one, else the frame itself) has its target's median
above 15 % of full scale (:func:`~heliostat.vision.sunlit.board_is_sunlit`).

Measured on simulated sunlit campaigns (96 frame pairs, 640 × 512, 8 bit, 1–2 % ambient
drift, moving shadows; ``heliostat sim campaign --heliostats 12 --days 2
--seed 7 --frame-heliostats 6 --frames-per-heliostat 8 --camera-size 640x512``, then
``heliostat detect --observations``): error median 3.5 mm, p90 7.2 mm, max 38 mm with
the sun-off frame as the empty target, against 13.4 / 38 / 343 mm subtracting it.
"""

from __future__ import annotations

from typing import Literal

from numpy.typing import ArrayLike, NDArray

from heliostat.config import Target
from heliostat.vision.classical import DetectOptions, SpotResult, detect_spot
from heliostat.vision.methods import BACKGROUNDS
from heliostat.vision.sunlit import SunlitOptions, board_is_sunlit, detect_spot_sunlit
from heliostat.vision.target import TargetRegistration

__all__ = ["BACKGROUNDS", "choose_background", "detect_spot_auto"]

Background = Literal["auto", "dark-board", "sunlit"]


def choose_background(
    image: NDArray,
    registration: TargetRegistration,
    *,
    dark: NDArray | None = None,
    black_level_dn: float = 0.0,
    bit_depth: int | None = None,
    background: Background = "auto",
) -> Literal["dark-board", "sunlit"]:
    """The background model for a frame: ``background`` unless it is ``"auto"``, then
    sunlit when the board is lit in the sun-off frame (or, without one, in the frame).

    Raises
    ------
    ValueError
        An unknown ``background``.
    """
    if background not in BACKGROUNDS:
        raise ValueError(f"background: expected one of {BACKGROUNDS}, got {background!r}")
    if background != "auto":
        return background  # type: ignore[return-value]
    board = dark if dark is not None else image
    lit = board_is_sunlit(board, registration, black_level_dn=black_level_dn, bit_depth=bit_depth)
    return "sunlit" if lit else "dark-board"


def detect_spot_auto(
    image: NDArray,
    registration: TargetRegistration,
    *,
    dark: NDArray | None = None,
    flat: object | None = None,
    black_level_dn: float = 0.0,
    bit_depth: int | None = None,
    expected_xy_m: ArrayLike | None = None,
    expected_flux_dn_m2: float | None = None,
    target: Target | None = None,
    options: DetectOptions | SunlitOptions | None = None,
    background: Background = "auto",
    empty_target: NDArray | None = None,
) -> SpotResult:
    """:func:`~heliostat.vision.classical.detect_spot`'s call, with the background model
    chosen by :func:`choose_background`. On a sunlit board the empty target is
    ``empty_target`` when given, else the sun-off frame ``dark``; ``flat`` and
    ``expected_flux_dn_m2`` serve the dark-board model only. ``options`` of the other
    model's type are ignored.
    """
    model = choose_background(
        image,
        registration,
        dark=dark,
        black_level_dn=black_level_dn,
        bit_depth=bit_depth,
        background=background,
    )
    if model == "sunlit":
        return detect_spot_sunlit(
            image,
            registration,
            empty_target=empty_target if empty_target is not None else dark,
            black_level_dn=black_level_dn,
            bit_depth=bit_depth,
            expected_xy_m=expected_xy_m,
            target=target,
            options=options if isinstance(options, SunlitOptions) else None,
        )
    return detect_spot(
        image,
        registration,
        dark=dark,
        flat=flat,  # type: ignore[arg-type]
        black_level_dn=black_level_dn,
        bit_depth=bit_depth,
        expected_xy_m=expected_xy_m,
        expected_flux_dn_m2=expected_flux_dn_m2,
        target=target,
        options=options if isinstance(options, DetectOptions) else DetectOptions(),
    )
