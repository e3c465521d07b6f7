"""Optics of the simulator: the flux spot a heliostat throws on a target plane.

The plant physics this rendering uses (sun shape, atmospheric attenuation, a Gaussian's
flux density and its power on a rectangle) lives in :mod:`heliostat.optics`, the one home
the ledger uses too; this module traces the exact geometry and renders spots.

Model and why
-------------
An analytic elliptical-Gaussian model in the spirit of HFLCAL [1]_ and Collado's analytic
flux function [2]_, not Monte Carlo rays. Calibration needs the spot's *centre* and a
realistic *size and shape* thousands of times per campaign, and the vision tests need
flux maps that are exact to integrate (power, centroid) so the truth is known to 1e-6 of
the spot size; a Monte Carlo ray tracer would add its own sampling noise to the truth and
cost seconds per spot. The price is the Gaussian approximation of the sun disc and of the
mirror's geometric image (both replaced by Gaussians of the same second moment, as
HFLCAL does); non-Gaussian spots are built as *sums* of such Gaussians (faceted, streaky).

Every contribution is propagated exactly to first order through the real geometry: the
hit point on the target plane is traced (exact reflection, exact plane intersection) as
a function of a small perturbation, and the Jacobian by central differences maps each
error's covariance into the target plane. So the spot is an ellipse *in the target plane*,
including the stretch of oblique incidence on the target, without small-angle formulas
for the projection. The contributions (independent, so covariances add):

* sun shape: Gaussian of ``sun_sigma_mrad`` per axis on the incoming direction; 2.51 mrad
  is the HFLCAL value [1]_ (:func:`heliostat.optics.buie_sigma_mrad` gives the RMS of
  Buie's profile);
* mirror slope error: ``Mirror.slope_error_mrad`` per axis on the *normal*; reflection
  doubles it in the plane of incidence and gives 2·σ·cos θ across it (θ = incidence angle),
  which the Jacobian reproduces without a separate formula;
* tracking jitter: ``tracking_sigma_mrad`` per axis on the reflected beam;
* geometric image and astigmatism: the concentrator is a paraboloid of focal length
  ``Mirror.focal_length_m`` (None = focused at the slant range). Each mirror point sends
  its ray along the local normal; the linear map from mirror offset to target-plane hit,
  applied to the aperture's second moments (uniform rectangle: w²/12, h²/12), gives the
  image: zero on axis at focus, and at oblique incidence the tangential/sagittal
  astigmatism of [1]_, H_t ∝ |D/f − cos θ|, W_s ∝ |D/f·cos θ − 1|.

Power: P = DNI · A · cos θ · ρ · τ(D), with τ the Vittitoe & Biggs clear-day (23 km
visibility) attenuation of :func:`heliostat.optics.atmospheric_attenuation` (its
references there).

Faceted and streaky spots (``shape=``): the mirror is split into facets (or long strips),
each a Gaussian sub-spot with its own aperture image, offset by its own canting error
(seeded, per heliostat when no generator is given). Then the flux centroid is *not* the
central-ray point: :attr:`FluxSpot.centroid_xy_m` is the weighted mean of the
components, and the camera's truth (``sim.camera.FrameTruth``) integrates the part on
the target.

References
----------
.. [1] P. Schwarzbözl, M. Schmitz, R. Pitz-Paal, "Visual HFLCAL - a software tool for
   layout and optimisation of heliostat fields," Proc. SolarPACES 2009, Berlin, 2009.
.. [2] F. J. Collado, "One-point fitting of the flux density produced by a heliostat,"
   Solar Energy 84(4), 673-684, 2010. doi:10.1016/j.solener.2010.01.019; and F. J. Collado,
   A. Gómez, J. A. Turégano, "An analytic function for the flux density due to sunlight
   reflected from a heliostat," Solar Energy 37(3), 215-234, 1986.
   doi:10.1016/0038-092X(86)90078-2
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.config import Heliostat, Target
from heliostat.frames import normalize
from heliostat.kinematics import Pose
from heliostat.optics import (
    SUN_SIGMA_MRAD,
    atmospheric_attenuation,
    gaussian_irradiance,
    gaussian_power_on_rectangle,
)

SHAPES: tuple[str, ...] = ("round", "faceted", "streaky")


@dataclass(frozen=True, slots=True)
class FluxSpot:
    """Flux a heliostat throws on a target plane (target-plane coordinates).

    Attributes
    ----------
    centre_xy_m : ndarray (2,)
        Target-plane point hit by the central reflected ray. [m]
    cov_xy_m2 : ndarray (2, 2)
        Covariance of the whole flux distribution about its centroid. [m^2]
    power_w : float
        Total reflected power reaching the target plane (on or off the target). [W]
    components : tuple of (offset_xy_m (2,), cov_xy_m2 (2, 2), weight)
        Gaussian sub-spots; offsets are relative to ``centre_xy_m``, weights sum to 1.
        Empty for one Gaussian centred on ``centre_xy_m`` with ``cov_xy_m2``.
    """

    centre_xy_m: NDArray[np.float64]
    cov_xy_m2: NDArray[np.float64]
    power_w: float
    components: tuple = ()

    @property
    def centroid_xy_m(self) -> NDArray[np.float64]:
        """Flux-weighted centroid over the whole plane (not clipped to the target). [m]"""
        if not self.components:
            return np.asarray(self.centre_xy_m, dtype=float).copy()
        off = sum(w * np.asarray(o, float) for o, _, w in self.components)
        return np.asarray(self.centre_xy_m, dtype=float) + off

    def gaussians(self) -> list[tuple[NDArray, NDArray, float]]:
        """The spot as absolute Gaussians: list of (mean_xy_m, cov_xy_m2, power_w)."""
        c = np.asarray(self.centre_xy_m, dtype=float)
        if not self.components:
            return [(c, np.asarray(self.cov_xy_m2, float), float(self.power_w))]
        return [
            (c + np.asarray(o, float), np.asarray(cv, float), float(w) * self.power_w)
            for o, cv, w in self.components
        ]

    def scaled(self, factor: float) -> FluxSpot:
        """The same spot with its power multiplied by ``factor`` (e.g. a cloud). [1]"""
        return FluxSpot(self.centre_xy_m, self.cov_xy_m2, self.power_w * factor, self.components)


# --------------------------------------------------------------------------- tracing
def _perp_basis(v: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
    helper = np.array([0.0, 0.0, 1.0]) if abs(v[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    a = normalize(np.cross(v, helper))
    return a, np.cross(v, a)


def _mirror_axes(n: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
    """Mirror width axis (horizontal) and height axis for a normal (az-el convention)."""
    w = np.cross([0.0, 0.0, 1.0], n)
    if np.linalg.norm(w) < 1e-9:  # mirror facing straight up (stow): any horizontal axis
        w = np.array([1.0, 0.0, 0.0])
    w = normalize(w)
    return w, np.cross(n, w)


class _Tracer:
    """Exact hit point on the target plane of one reflected ray, as a function of small
    perturbations; used for the Jacobians of the analytic spot."""

    def __init__(self, c0, n, s, target: Target, f_w: float, f_h: float) -> None:
        self.c0, self.n, self.s, self.t = c0, n, s, target
        self.aw, self.ah = _mirror_axes(n)
        self.s1, self.s2 = _perp_basis(s)
        r0 = 2.0 * (n @ s) * n - s
        self.r1, self.r2 = _perp_basis(r0)
        self.inv_2fw = 0.0 if math.isinf(f_w) else 1.0 / (2.0 * f_w)
        self.inv_2fh = 0.0 if math.isinf(f_h) else 1.0 / (2.0 * f_h)

    def hit(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """x (..., 8): mirror offset (w, h) [m], normal tilt (w, h), sun tilt (2), beam tilt
        (2) [rad]. Returns target-plane (..., 2) [m]."""
        pw, ph = x[..., 0:1], x[..., 1:2]
        p = self.c0 + pw * self.aw + ph * self.ah
        # Paraboloid normal at offset p tilts by p / (2 f) toward the axis.
        nn = normalize(
            self.n
            + (-pw * self.inv_2fw + x[..., 2:3]) * self.aw
            + (-ph * self.inv_2fh + x[..., 3:4]) * self.ah
        )
        s = normalize(self.s + x[..., 4:5] * self.s1 + x[..., 5:6] * self.s2)
        r = 2.0 * np.sum(nn * s, axis=-1, keepdims=True) * nn - s
        r = normalize(r + x[..., 6:7] * self.r1 + x[..., 7:8] * self.r2)
        t = self.t
        denom = r @ t.u_normal_enu
        lam = ((t.centre_enu_m - p) @ t.u_normal_enu) / denom
        return t.enu_to_plane(p + lam[..., None] * r)

    def jacobian(self) -> NDArray[np.float64]:
        """d(hit xy)/dx at x = 0, shape (2, 8), central differences."""
        steps = np.array([1e-3, 1e-3, 1e-6, 1e-6, 1e-6, 1e-6, 1e-6, 1e-6])
        dx = np.diag(steps)
        plus = self.hit(dx)
        minus = self.hit(-dx)
        return ((plus - minus) / (2.0 * steps[:, None])).T


def _single_pose(pose: Pose) -> tuple[NDArray, NDArray]:
    n = np.asarray(pose.u_normal_enu, dtype=float)
    c = np.asarray(pose.centre_enu_m, dtype=float)
    if n.ndim == 2:
        if n.shape[0] != 1 or c.shape[0] != 1:
            raise ValueError(f"flux_spot takes one pose, got {n.shape[0]} (pass pose rows)")
        n, c = n[0], c[0]
    if n.shape != (3,) or c.shape != (3,):
        raise ValueError(f"pose must hold one normal and centre of shape (3,), got {n.shape}")
    return normalize(n), c


def _seeded(rng: np.random.Generator | None, key: str) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(zlib.crc32(key.encode()))


def flux_spot(
    heliostat: Heliostat,
    pose: Pose,
    u_sun_enu: ArrayLike,
    dni_w_m2: float,
    target: Target,
    *,
    sun_sigma_mrad: float = SUN_SIGMA_MRAD,
    tracking_sigma_mrad: float = 0.0,
    shape: str = "round",
    rng: np.random.Generator | None = None,
    facets: tuple[int, int] = (2, 4),
    canting_sigma_mrad: float = 1.5,
    streaks: int = 6,
    streak_defocus: float = 0.6,
    attenuation_model: str = "clear",
) -> FluxSpot:
    """Flux spot of one heliostat in a given (true) pose on a target plane.

    Parameters
    ----------
    heliostat : heliostat.config.Heliostat
        Supplies the mirror (size, reflectivity, slope error, focal length).
    pose : heliostat.kinematics.Pose
        True mirror pose (one row), e.g. ``kinematics.forward(steps, true_errors)``.
    u_sun_enu : array_like (3,)
        Unit vector toward the sun.
    dni_w_m2 : float
        Direct normal irradiance. [W/m^2]
    target : heliostat.config.Target
    sun_sigma_mrad, tracking_sigma_mrad : float
        Per-axis Gaussian sun shape (incoming) and tracking jitter (reflected beam). [mrad]
    shape : {"round", "faceted", "streaky"}
        ``"faceted"``: ``facets`` = (rows, cols) facets, each canted with a random error
        of ``canting_sigma_mrad`` per axis on its normal. ``"streaky"``: ``streaks`` long
        horizontal strips under-curved along their length (image length ≈
        ``streak_defocus`` × mirror width) with the same canting errors.
    rng : numpy.random.Generator, optional
        Draws canting errors; default: seeded from the heliostat id, so a heliostat keeps
        its facets' errors from frame to frame.
    attenuation_model : {"clear", "hazy"}
        See :func:`heliostat.optics.atmospheric_attenuation`.

    Returns
    -------
    FluxSpot

    Raises
    ------
    ValueError
        For an unknown shape, the sun behind the mirror, or a beam that misses the plane.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    if not (math.isfinite(dni_w_m2) and dni_w_m2 >= 0):
        raise ValueError(f"dni_w_m2 must be finite and >= 0, got {dni_w_m2!r}")
    for name, v in (("sun_sigma_mrad", sun_sigma_mrad), ("tracking", tracking_sigma_mrad)):
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {v!r}")
    n, c0 = _single_pose(pose)
    s = normalize(np.asarray(u_sun_enu, dtype=float).reshape(3))
    cos_inc = float(n @ s)
    if cos_inc <= 0:
        raise ValueError(
            f"heliostat {heliostat.id}: the sun is behind the mirror (cos incidence {cos_inc:.3f})"
        )
    r = 2.0 * cos_inc * n - s
    denom = float(r @ target.u_normal_enu)
    lam = float((target.centre_enu_m - c0) @ target.u_normal_enu) / denom if denom else -1.0
    if not lam > 0:
        raise ValueError(f"heliostat {heliostat.id}: the reflected beam misses target {target.id}")
    slant_m = lam
    m = heliostat.mirror
    f = m.focal_length_m if m.focal_length_m is not None else slant_m
    tau = atmospheric_attenuation(slant_m, attenuation_model)
    power = dni_w_m2 * m.area_m2 * cos_inc * m.reflectivity * tau

    tracer = _Tracer(c0, n, s, target, f, f)
    jac = tracer.jacobian()
    centre = tracer.hit(np.zeros(8))
    j_p, j_n, j_s, j_r = jac[:, 0:2], jac[:, 2:4], jac[:, 4:6], jac[:, 6:8]
    sig_n = m.slope_error_mrad * 1e-3
    sig_s = sun_sigma_mrad * 1e-3
    sig_r = tracking_sigma_mrad * 1e-3
    cov_ang = sig_s**2 * j_s @ j_s.T + sig_n**2 * j_n @ j_n.T + sig_r**2 * j_r @ j_r.T

    if shape == "round":
        cov_ap = np.diag([m.width_m**2 / 12.0, m.height_m**2 / 12.0])
        return FluxSpot(centre, cov_ang + j_p @ cov_ap @ j_p.T, power)

    g = _seeded(rng, heliostat.id)
    sig_c = canting_sigma_mrad * 1e-3
    comps = []
    if shape == "faceted":
        rows, cols = facets
        if rows < 1 or cols < 1:
            raise ValueError(f"facets must be (rows >= 1, cols >= 1), got {facets!r}")
        fw, fh = m.width_m / cols, m.height_m / rows
        cov_ap = np.diag([fw**2 / 12.0, fh**2 / 12.0])
        cov_k = cov_ang + j_p @ cov_ap @ j_p.T
        for i in range(rows):
            for k in range(cols):
                p = np.array([(k + 0.5) * fw - m.width_m / 2, m.height_m / 2 - (i + 0.5) * fh])
                off = j_p @ p + j_n @ g.normal(0.0, sig_c, 2)
                comps.append((off, cov_k, 1.0 / (rows * cols)))
    else:  # streaky: long strips, under-curved along their length
        if streaks < 1 or not 0 <= streak_defocus < 1:
            raise ValueError("streaks must be >= 1 and streak_defocus in [0, 1)")
        fh = m.height_m / streaks
        # Along the strip the focal length is f / (1 - defocus): image ≈ defocus × width.
        j_long = _Tracer(c0, n, s, target, f / (1.0 - streak_defocus), f).jacobian()[:, 0:2]
        j_strip = np.column_stack([j_long[:, 0], j_p[:, 1]])
        cov_k = cov_ang + j_strip @ np.diag([m.width_m**2 / 12.0, fh**2 / 12.0]) @ j_strip.T
        for i in range(streaks):
            p = np.array([0.0, m.height_m / 2 - (i + 0.5) * fh])
            off = j_p @ p + j_n @ (g.normal(0.0, sig_c, 2) * np.array([0.3, 1.0]))
            comps.append((off, cov_k, 1.0 / streaks))
    return _mixture(centre, comps, power)


def _mixture(centre: NDArray, comps: list, power_w: float) -> FluxSpot:
    w = np.array([c[2] for c in comps], dtype=float)
    w = w / w.sum()
    comps = [
        (np.asarray(o, float), np.asarray(cv, float), float(wk))
        for (o, cv, _), wk in zip(comps, w, strict=True)
    ]
    mean = sum(wk * o for o, _, wk in comps)
    cov = sum(wk * (cv + np.outer(o - mean, o - mean)) for o, cv, wk in comps)
    return FluxSpot(np.asarray(centre, float), np.asarray(cov, float), float(power_w), tuple(comps))


def spot_with_sigma(
    centre_xy_m: ArrayLike,
    sigma_m: float,
    power_w: float,
    *,
    aspect: float = 1.0,
    angle_rad: float = 0.0,
    shape: str = "round",
    rng: np.random.Generator | None = None,
    n_components: int = 7,
) -> FluxSpot:
    """A directly specified spot (for vision tests with a chosen size and shape).

    Parameters
    ----------
    centre_xy_m : array_like (2,)
        Central point (for "round" also the centroid). [m]
    sigma_m : float
        1-σ size along the spot's major axis direction ``angle_rad``. [m]
    power_w : float
        Total power on the plane. [W]
    aspect : float
        σ_minor / σ_major (1 = round). [1]
    angle_rad : float
        Direction of the σ_m axis from target-plane +x toward +y. [rad]
    shape : {"round", "faceted", "streaky"}
        "faceted": ``n_components`` sub-Gaussians (σ ≈ 0.55 σ_m) at random offsets;
        "streaky": sub-Gaussians elongated 3:1 along ``angle_rad`` side by side across it.
        Overall second moments are close to (not equal to) σ_m, aspect.
    rng : numpy.random.Generator, optional
        For the sub-spot layout; default seeded with 0.
    """
    c = np.asarray(centre_xy_m, dtype=float)
    if c.shape != (2,) or not np.all(np.isfinite(c)):
        raise ValueError(f"centre_xy_m must be 2 finite numbers, got {centre_xy_m!r}")
    if not (sigma_m > 0 and math.isfinite(sigma_m)):
        raise ValueError(f"sigma_m must be positive, got {sigma_m!r}")
    if not (power_w >= 0 and math.isfinite(power_w)):
        raise ValueError(f"power_w must be finite and >= 0, got {power_w!r}")
    if not 0 < aspect <= 10:
        raise ValueError(f"aspect must lie in (0, 10], got {aspect!r}")
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    ca, sa = math.cos(angle_rad), math.sin(angle_rad)
    rot = np.array([[ca, -sa], [sa, ca]])
    sig = np.array([sigma_m, sigma_m * aspect])
    if shape == "round":
        return FluxSpot(c, rot @ np.diag(sig**2) @ rot.T, float(power_w))
    g = rng if rng is not None else np.random.default_rng(0)
    comps = []
    if shape == "faceted":
        cov_k = rot @ np.diag((0.55 * sig) ** 2) @ rot.T
        for _ in range(n_components):
            off = rot @ (g.normal(0.0, 0.8, 2) * sig)
            comps.append((off, cov_k, g.uniform(0.5, 1.5)))
    else:
        cov_k = rot @ np.diag([(0.9 * sig[0]) ** 2, (0.3 * sig[1]) ** 2]) @ rot.T
        for i in range(n_components):
            across = (i - (n_components - 1) / 2) / max(n_components - 1, 1) * 2.4 * sig[1]
            off = rot @ np.array([g.normal(0.0, 0.25 * sig[0]), across])
            comps.append((off, cov_k, g.uniform(0.5, 1.5)))
    return _mixture(c, comps, power_w)


# --------------------------------------------------------------------------- evaluation
def irradiance_w_m2(spot: FluxSpot, xy_m: ArrayLike) -> NDArray[np.float64]:
    """Irradiance the spot puts on the target plane at points ``xy_m`` (..., 2). [W/m^2]"""
    xy = np.asarray(xy_m, dtype=float)
    if xy.shape[-1:] != (2,):
        raise ValueError(f"xy_m must have shape (..., 2), got {xy.shape}")
    out = np.zeros(xy.shape[:-1])
    for mean, cov, p in spot.gaussians():
        out += gaussian_irradiance(mean, cov, p, xy)
    return out


def on_target_flux(spot: FluxSpot, target: Target) -> tuple[float, NDArray[np.float64]]:
    """Power on the target rectangle [W] and its centroid in the target plane [m].

    Each Gaussian component goes through :func:`heliostat.optics.gaussian_power_on_rectangle`
    (Gauss–Legendre quadrature over the part of its ±8σ box on the target, error < 1e-9
    relative). The centroid is NaN when nothing lands on the target.
    """
    half = np.array([target.width_m / 2, target.height_m / 2])
    total = 0.0
    moment = np.zeros(2)
    for mean, cov, p in spot.gaussians():
        p_on, m_on = gaussian_power_on_rectangle(mean, cov, p, half)
        total += p_on
        moment += m_on
    if total <= 0:
        return 0.0, np.full(2, np.nan)
    return total, moment / total
