"""Plant optics: beam spread, atmospheric attenuation and intercept (one home).

The simulator (:mod:`sim.optics`, which renders flux spots through the exact geometry)
and the ledger (:mod:`heliostat.ledger.gain`, which models what better pointing gains)
both take these from here.

Beam model (HFLCAL-type, a circular Gaussian of angular standard deviation per axis)
---------------------------------------------------------------------------------
All angular errors are standard deviations **per axis** of the reflected beam, except a
calibration pointing error, which is a **radial RMS** (what cross-validation reports:
``sqrt(mean(ex² + ey²))``) and so contributes ``X/√2`` per axis.

``σ_beam² = σ_sun² + (2·σ_slope)² + σ_track² + σ_ast²``  [rad²]

* sun shape ``σ_sun`` (2.51 mrad, HFLCAL's value [1]_; :func:`buie_sigma_mrad` gives the
  RMS of Buie's profile [4]_) is not doubled: the mirror only turns the incoming cone;
* mirror slope error ``σ_slope`` is an error of the **surface normal**: a normal tilted by
  δ turns the reflected ray by 2δ, so it **doubles** (in the plane of incidence; across it
  the factor is 2·cos θ_i, which this model ignores, a slightly conservative choice; the
  simulator's traced spot keeps it);
* tracking jitter ``σ_track`` is quoted for the reflected beam (project convention) and is
  not doubled again; a tracking error quoted for the normal must be doubled by the caller;
* astigmatism of an off-axis focused heliostat, HFLCAL's ``σ_ast = √(½(H_t² + W_s²))/(4D)``
  with ``H_t = d|D/f − cos ω|``, ``W_s = d|D/f·cos ω − 1|`` (d: square-root of the mirror
  area, f: focal length, D: slant range, ω: incidence angle on the mirror) [2]_.

Pointing error as a distribution
--------------------------------
A pointing error of X mrad RMS is a spread over time (and heliostats), not a fixed offset.
:func:`pointing_intercept` averages the intercept over a 2-D circular Gaussian offset with
that RMS: exactly the intercept of a centred beam with ``σ_eff² = σ_beam² + X²/2``
(Gaussians convolve), ``treatment="gaussian"``. ``treatment="fixed"`` puts the beam at a
fixed radial offset ``X·D`` (Rice / Marcum-Q for a circle): a heliostat with a constant
bias, the pessimistic reading.

Intercept
---------
Apertures are taken normal to the central ray (give a tilted aperture as its projection).
Circle of radius R, Gaussian σ, offset d: ``η = 1 − Q₁(d/σ, R/σ)`` with
``Q₁(a, b) = ncx2.sf(b², 2, a²)``. Rectangle w × h: product of two error-function terms.
An elliptical (any covariance) Gaussian on a rectangle in its own plane:
:func:`gaussian_power_on_rectangle` (Gauss–Legendre quadrature), with
:func:`gaussian_irradiance` its flux density.

Attenuation
-----------
:func:`atmospheric_attenuation`: the Vittitoe & Biggs fits [3]_ as used in HFLCAL, DELSOL
and by Schmitz et al. [5]_: clear day (23 km visibility) by default, hazy (5 km) on request.

References
----------
.. [1] P. Schwarzbözl, M. Schmitz, R. Pitz-Paal, "Visual HFLCAL - a software tool for
   layout and optimisation of heliostat fields," Proc. SolarPACES 2009, Berlin, 2009.
.. [2] F. J. Collado, "One-point fitting of the flux density produced by a heliostat,"
   Solar Energy 84(4), 673-684, 2010. doi:10.1016/j.solener.2010.01.019
.. [3] C. N. Vittitoe, F. Biggs, "Terrestrial propagation loss," Sandia report
   SAND78-1137C, presented at the AS/ISES annual meeting, Denver, 1978.
.. [4] D. Buie, A. G. Monger, C. J. Dey, "Sunshape distributions for terrestrial solar
   simulations," Solar Energy 74(2), 113-122, 2003. doi:10.1016/S0038-092X(03)00125-7
.. [5] M. Schmitz, P. Schwarzbözl, R. Buck, R. Pitz-Paal, "Assessment of the potential
   improvement due to multiple apertures in central receiver systems with secondary
   concentrators," Solar Energy 80(1), 111-120, 2006. doi:10.1016/j.solener.2005.02.012
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats
from scipy.integrate import trapezoid

#: Gaussian-equivalent sun shape per axis used by HFLCAL [1]_. [mrad]
SUN_SIGMA_MRAD = 2.51
#: The same in radians. [rad]
SUN_SHAPE_RAD = SUN_SIGMA_MRAD * 1e-3


# ------------------------------------------------------------------- sun shape
def buie_sigma_mrad(csr: float, theta_max_mrad: float = 43.6) -> float:
    """Per-axis RMS angle of Buie's sunshape [4]_ for a circumsolar ratio. [mrad]

    The profile is φ(θ) = cos(0.326 θ)/cos(0.308 θ) on the disc (θ <= 4.65 mrad) and
    e^κ θ^γ in the aureole up to ``theta_max_mrad``, κ = 0.9 ln(13.5 χ) χ^−0.3,
    γ = 2.2 ln(0.52 χ) χ^0.43 − 0.1 (χ = CSR). The RMS per axis is the Gaussian with the
    same second moment, the equivalent used by the analytic spot model.
    """
    if not 0.0 <= csr < 1.0:
        raise ValueError(f"csr must lie in [0, 1), got {csr!r}")
    disc = 4.65
    th = np.linspace(0.0, disc, 4001)
    phi = np.cos(0.326 * th) / np.cos(0.308 * th)
    w0 = trapezoid(phi * th, th)
    m2 = trapezoid(phi * th**3, th)
    if csr > 0:
        kappa = 0.9 * math.log(13.5 * csr) * csr**-0.3
        gamma = 2.2 * math.log(0.52 * csr) * csr**0.43 - 0.1
        ta = np.geomspace(disc, theta_max_mrad, 4001)
        pa = np.exp(kappa) * ta**gamma
        w0 += trapezoid(pa * ta, ta)
        m2 += trapezoid(pa * ta**3, ta)
    # 2-D radial second moment / 2 = per-axis variance.
    return math.sqrt(0.5 * m2 / w0)


# ------------------------------------------------------------------- beam spread
def beam_sigma_rad(
    sun_shape_rad: ArrayLike = SUN_SHAPE_RAD,
    slope_rad: ArrayLike = 1.5e-3,
    tracking_beam_rad: ArrayLike = 0.0,
    astigmatism_rad: ArrayLike = 0.0,
) -> NDArray[np.float64]:
    """Per-axis standard deviation of the reflected beam. [rad]

    ``σ² = σ_sun² + (2σ_slope)² + σ_track² + σ_ast²``; the slope error is of the surface
    normal and doubles on reflection; the others are already beam quantities.
    """
    s = np.asarray(sun_shape_rad, float)
    sl = np.asarray(slope_rad, float)
    t = np.asarray(tracking_beam_rad, float)
    a = np.asarray(astigmatism_rad, float)
    for name, v in (("sun_shape", s), ("slope", sl), ("tracking", t), ("astigmatism", a)):
        if np.any(v < 0):
            raise ValueError(f"{name} error must be >= 0 [rad], got {v!r}")
    return np.sqrt(s**2 + (2.0 * sl) ** 2 + t**2 + a**2)


def astigmatism_sigma_rad(
    mirror_area_m2: float, slant_m: ArrayLike, focal_m: ArrayLike, incidence_rad: ArrayLike
) -> NDArray[np.float64]:
    """HFLCAL astigmatic spread ``√(½(H_t² + W_s²))/(4D)`` (Collado 2010, Eq. 7). [rad]

    Parameters
    ----------
    mirror_area_m2 : float
        Reflective area; ``d = √A``. [m²]
    slant_m : array_like
        Heliostat-to-aim-point distance D. [m]
    focal_m : array_like
        Focal length f (``inf`` for a flat mirror). [m]
    incidence_rad : array_like
        Angle of incidence of the sun on the mirror ω. [rad]
    """
    d = math.sqrt(mirror_area_m2)
    D = np.asarray(slant_m, float)
    f = np.asarray(focal_m, float)
    c = np.cos(np.asarray(incidence_rad, float))
    ratio = D / f
    h_t = d * np.abs(ratio - c)  # tangential image size
    w_s = d * np.abs(ratio * c - 1.0)  # sagittal image size
    return np.sqrt(0.5 * (h_t**2 + w_s**2)) / (4.0 * D)


# ------------------------------------------------------------------- apertures
@dataclass(frozen=True, slots=True)
class CircularAperture:
    """A circular target aperture, normal to the beam.

    Attributes
    ----------
    radius_m : float
        Radius. [m]
    """

    radius_m: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.radius_m) and self.radius_m > 0):
            raise ValueError(f"aperture radius_m must be > 0, got {self.radius_m!r}")

    @property
    def area_m2(self) -> float:
        """Aperture area. [m²]"""
        return math.pi * self.radius_m**2

    def intercept(self, sigma_m: ArrayLike, offset_x_m: ArrayLike = 0.0, offset_y_m=0.0):
        """Share of a circular Gaussian spot inside the circle.

        ``η = 1 − Q₁(d/σ, R/σ) = ncx2.cdf((R/σ)², 2, (d/σ)²)`` (Rice distribution of the
        radial distance of a point with an offset mean).
        """
        return intercept_circle(self.radius_m, sigma_m, np.hypot(offset_x_m, offset_y_m))


@dataclass(frozen=True, slots=True)
class RectangularAperture:
    """A rectangular target aperture, normal to the beam.

    Attributes
    ----------
    width_m, height_m : float
        Size along target-plane x and y. [m]
    """

    width_m: float
    height_m: float

    def __post_init__(self) -> None:
        for k in ("width_m", "height_m"):
            v = getattr(self, k)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"aperture {k} must be > 0, got {v!r}")

    @property
    def area_m2(self) -> float:
        """Aperture area. [m²]"""
        return self.width_m * self.height_m

    def intercept(self, sigma_m: ArrayLike, offset_x_m: ArrayLike = 0.0, offset_y_m=0.0):
        """Share of a circular Gaussian spot inside the rectangle."""
        return intercept_rectangle(self.width_m, self.height_m, sigma_m, offset_x_m, offset_y_m)


Aperture = CircularAperture | RectangularAperture


def intercept_circle(radius_m: float, sigma_m: ArrayLike, offset_m: ArrayLike = 0.0):
    """Intercept of a circular Gaussian spot (σ per axis) offset by d, in a circle of radius R.

    Returns ``1 − Q₁(d/σ, R/σ)``, with Marcum's ``Q₁(a, b) = ncx2.sf(b², 2, a²)``. [-]
    """
    s = np.asarray(sigma_m, float)
    d = np.abs(np.asarray(offset_m, float))
    if np.any(~(s > 0)):
        raise ValueError(f"sigma_m must be > 0, got {sigma_m!r}")
    b2 = (radius_m / s) ** 2
    a2 = (d / s) ** 2
    centred = -np.expm1(-0.5 * b2)  # d = 0: 1 − exp(−R²/2σ²), the chi-square(2) cdf
    with np.errstate(all="ignore"):
        off = stats.ncx2.cdf(b2, 2, np.where(a2 > 0, a2, 1.0))
    return np.where(a2 > 0, off, centred)


def intercept_rectangle(
    width_m: float, height_m: float, sigma_m: ArrayLike, offset_x_m=0.0, offset_y_m=0.0
):
    """Intercept of a circular Gaussian spot (σ per axis), offset (dx, dy), in a w × h box. [-]"""
    s = np.asarray(sigma_m, float)
    if np.any(~(s > 0)):
        raise ValueError(f"sigma_m must be > 0, got {sigma_m!r}")
    dx = np.asarray(offset_x_m, float)
    dy = np.asarray(offset_y_m, float)
    k = 1.0 / (s * math.sqrt(2.0))

    def one(half: float, off):
        return 0.5 * (special.erf((half - off) * k) + special.erf((half + off) * k))

    return one(width_m / 2, dx) * one(height_m / 2, dy)


def pointing_intercept(
    aperture: Aperture,
    beam_sigma_rad_: ArrayLike,
    slant_m: ArrayLike,
    pointing_rms_rad: float,
    treatment: str = "gaussian",
):
    """Intercept with a pointing error of a given radial RMS.

    Parameters
    ----------
    aperture : CircularAperture or RectangularAperture
    beam_sigma_rad_ : array_like
        Per-axis beam spread without the pointing error. [rad]
    slant_m : array_like
        Slant range. [m]
    pointing_rms_rad : float
        Radial RMS pointing error of the reflected beam. [rad]
    treatment : {"gaussian", "fixed"}
        "gaussian": intercept averaged over a 2-D Gaussian offset of that RMS (per axis
        RMS/√2), exactly a centred beam with ``σ² + RMS²/2``. "fixed": a constant radial
        offset ``RMS·D`` (along x for a rectangle).
    """
    if not (math.isfinite(pointing_rms_rad) and pointing_rms_rad >= 0):
        raise ValueError(f"pointing error must be >= 0 [rad], got {pointing_rms_rad!r}")
    sb = np.asarray(beam_sigma_rad_, float)
    D = np.asarray(slant_m, float)
    if treatment == "gaussian":
        sig = np.sqrt(sb**2 + 0.5 * pointing_rms_rad**2) * D
        return aperture.intercept(sig)
    if treatment == "fixed":
        return aperture.intercept(sb * D, pointing_rms_rad * D, 0.0)
    raise ValueError(f"treatment must be 'gaussian' or 'fixed', got {treatment!r}")


# ------------------------------------------------------------------- atmosphere
def atmospheric_attenuation(slant_range_m: ArrayLike, model: str = "clear") -> float | NDArray:
    """Fraction of the reflected beam transmitted over a slant range. [1]

    Parameters
    ----------
    slant_range_m : float or array_like
        Mirror-to-target distance, >= 0. [m]
    model : {"clear", "hazy"}
        ``"clear"``: Vittitoe & Biggs 23 km visibility [3]_ (HFLCAL default):
        τ = 0.99321 − 1.176e-4 D + 1.97e-8 D² for D <= 1000 m, τ = exp(−1.106e-4 D) beyond.
        ``"hazy"``: 5 km visibility: τ = 0.98707 − 2.748e-4 D + 3.394e-8 D², D <= 1000 m.

    Raises
    ------
    ValueError
        For a negative or non-finite range, an unknown model, or a hazy range > 1000 m.
    """
    d = np.asarray(slant_range_m, dtype=float)
    if not np.all(np.isfinite(d)) or np.any(d < 0):
        raise ValueError(f"slant_range_m must be finite and >= 0, got {slant_range_m!r}")
    if model == "clear":
        tau = np.where(
            d <= 1000.0,
            0.99321 - 1.176e-4 * d + 1.97e-8 * d**2,  # [3], 23 km visibility
            np.exp(-1.106e-4 * d),
        )
    elif model == "hazy":
        if np.any(d > 1000.0):
            raise ValueError("the hazy-day attenuation fit is valid up to 1000 m slant range")
        tau = 0.98707 - 2.748e-4 * d + 3.394e-8 * d**2  # [3], 5 km visibility
    else:
        raise ValueError(f"model must be 'clear' or 'hazy', got {model!r}")
    return float(tau) if tau.ndim == 0 else tau


# ------------------------------------------------------------------- elliptical spots
def gaussian_irradiance(
    mean_xy_m: NDArray, cov_xy_m2: NDArray, power_w: float, xy_m: NDArray
) -> NDArray[np.float64]:
    """Irradiance of one 2-D Gaussian of total ``power_w`` at points ``xy_m`` (..., 2)."""
    inv = np.linalg.inv(cov_xy_m2)
    norm = power_w / (2.0 * math.pi * math.sqrt(np.linalg.det(cov_xy_m2)))
    dx = xy_m[..., 0] - mean_xy_m[0]
    dy = xy_m[..., 1] - mean_xy_m[1]
    q = inv[0, 0] * dx * dx + 2.0 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy
    return norm * np.exp(-0.5 * q)


@functools.lru_cache(maxsize=4)
def _leggauss(n: int) -> tuple[NDArray, NDArray]:
    return np.polynomial.legendre.leggauss(n)  # pure; cached (an eigensolve per call)


def _gauss_legendre_box(lo: NDArray, hi: NDArray, n: int) -> tuple[NDArray, NDArray]:
    x, w = _leggauss(n)
    px = 0.5 * (hi[0] - lo[0]) * x + 0.5 * (hi[0] + lo[0])
    py = 0.5 * (hi[1] - lo[1]) * x + 0.5 * (hi[1] + lo[1])
    wx = 0.5 * (hi[0] - lo[0]) * w
    wy = 0.5 * (hi[1] - lo[1]) * w
    gx, gy = np.meshgrid(px, py, indexing="xy")
    return np.stack([gx, gy], axis=-1), np.outer(wy, wx)


def gaussian_power_on_rectangle(
    mean_xy_m: NDArray, cov_xy_m2: NDArray, power_w: float, half_size_m: NDArray
) -> tuple[float, NDArray[np.float64]]:
    """Power of one 2-D Gaussian spot that falls on a rectangle, and its first moment.

    The rectangle is centred on the plane's origin with half sizes ``half_size_m``
    (x, y). The Gaussian is integrated over the part of its ±8σ box inside the rectangle
    with a 96×96 Gauss–Legendre rule (smooth integrand on that box, error < 1e-9
    relative); a Gaussian whose box lies wholly inside contributes its full power at its
    mean, one whose box misses the rectangle contributes nothing.

    Parameters
    ----------
    mean_xy_m : ndarray (2,)
        Centre of the Gaussian in the rectangle's plane. [m]
    cov_xy_m2 : ndarray (2, 2)
        Its covariance. [m²]
    power_w : float
        Its total power on the whole plane. [W]
    half_size_m : ndarray (2,)
        Half width and half height of the rectangle. [m]

    Returns
    -------
    power_on_w : float
        Power on the rectangle (``power_on_w / power_w`` is the intercept). [W]
    moment_w_m : ndarray (2,)
        Power-weighted sum of the positions on the rectangle (divide by ``power_on_w``
        for the centroid). [W·m]
    """
    mean = np.asarray(mean_xy_m, dtype=float)
    cov = np.asarray(cov_xy_m2, dtype=float)
    half = np.asarray(half_size_m, dtype=float)
    p = power_w
    sd = np.sqrt(np.diag(cov))
    lo = np.maximum(mean - 8 * sd, -half)
    hi = np.minimum(mean + 8 * sd, half)
    if np.all(mean - 8 * sd >= -half) and np.all(mean + 8 * sd <= half):
        return p, p * mean
    if np.any(hi <= lo):
        return 0.0, np.zeros(2)
    pts, wts = _gauss_legendre_box(lo, hi, 96)
    e = gaussian_irradiance(mean, cov, p, pts) * wts
    return float(e.sum()), np.tensordot(e, pts, axes=([0, 1], [0, 1]))
