"""Compiled residuals and Jacobian of many heliostats' fits at once (numba).

The numpy chain (:meth:`heliostat.kinematics.HeliostatKinematics.chain`, through
:func:`heliostat.calibration.model.batched_pose`) costs 2-3 µs per pose, i.e. ~10 s for
one Jacobian of a 10,000-heliostat field (17 poses per observation, 30 observations).
This kernel walks the same chain per (heliostat, parameter set, observation) in compiled
code (≈0.1 µs per pose) and returns the residuals of :class:`heliostat.calibration.fit.Problem`
and their central-difference Jacobian. It is the chain of
:mod:`heliostat.kinematics.model` written out for the compiler, driven by the same
constants (:class:`heliostat.kinematics.drives.Chain`, read by :func:`chain_codes`);
``tests/test_calibration_batch.py`` checks it against the numpy chain for both drive
types to round-off.

Layout (built by :mod:`heliostat.calibration.batch`): a heliostat's error values are a
vector over :data:`SLOTS` (a drive's names outside it make the drive unsupported here);
axes are rows of :data:`AXIS_WIDTH` numbers (:func:`axis_row`); observations are padded to
the batch's longest heliostat, ``nrows[b]`` rows valid.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numpy.typing import NDArray

from heliostat.kinematics import HeliostatKinematics
from heliostat.kinematics.actuators import LinearAxis, RotaryAxis
from heliostat.kinematics.drives._base import BACKLASH, ENU_AXES, TRANSLATIONS

#: Error parameters the kernel knows, in the order of its value vector.
SLOTS: tuple[str, ...] = (
    "axis1_tilt_e_rad",
    "axis1_tilt_n_rad",
    "axis1_tilt_u_rad",
    "axis_nonorthogonality_rad",
    "axis1_zero_rad",
    "axis2_zero_rad",
    "mirror_collimation_rad",
    "actuator1_stroke_m",
    "actuator2_stroke_m",
    *TRANSLATIONS,
    *BACKLASH,
)
_ZERO1, _ZERO2, _STROKE1, _STROKE2, _TRANS, _BL1, _BL2 = 4, 5, 7, 8, 9, 18, 19
#: Numbers per axis row: kind (0 rotary, 1 linear) and the axis constants.
AXIS_WIDTH = 8

# No fastmath: the kernel must agree with the numpy chain to round-off. numpy's error
# model (a division by zero gives inf/NaN, not an exception) lets the divisions go
# unchecked; the callers test the results for finiteness.
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


def supports(kin: HeliostatKinematics) -> bool:
    """True when the kernel can evaluate this heliostat's chain."""
    return set(kin.spec.error_names) <= set(SLOTS) and all(
        isinstance(a, (RotaryAxis, LinearAxis)) for a in kin.axes
    )


def chain_codes(kin: HeliostatKinematics) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Integer codes of the drive's chain and its zero-angle normal n0.

    codes = (joint1 axis, joint1 sign, joint2 axis, joint2 sign, tilt axis 1, tilt axis 2
    (−1: none), non-orthogonality axis, collimation axis); axes 0, 1, 2 = e, n, u.
    """
    k = kin.spec.chain
    ax = ENU_AXES.index
    tilt = [ax(t) for t in k.tilt] + [-1] * (2 - len(k.tilt))
    codes = np.array(
        [ax(k.joint1), k.joint1_sign, ax(k.joint2), k.joint2_sign, *tilt,
         ax(k.nonorthogonality), ax(k.collimation)],
        dtype=np.int64,
    )  # fmt: skip
    n0 = np.zeros(3)
    n0[ax(k.normal0[1])] = 1.0 if k.normal0[0] == "+" else -1.0
    return codes, n0


def axis_row(axis: RotaryAxis | LinearAxis) -> NDArray[np.float64]:
    """One axis as a row of :data:`AXIS_WIDTH` numbers for the kernel: rotary (0,
    steps_per_rad, zero_rad); linear (1, increment, initial stroke, offset, pivot radius,
    initial angle, ±1 clockwise, ψ(initial stroke))."""
    row = np.zeros(AXIS_WIDTH)
    if isinstance(axis, RotaryAxis):
        row[:3] = (0.0, axis.steps_per_rad, axis.zero_rad)
    else:
        row[:] = (
            1.0,
            axis.increment_steps_per_m,
            axis.initial_stroke_m,
            axis.offset_m,
            axis.pivot_radius_m,
            axis.initial_angle_rad,
            1.0 if axis.clockwise else -1.0,
            _psi(axis.offset_m, axis.pivot_radius_m, axis.initial_stroke_m),
        )
    return row


@nb.njit(**_JIT)
def _psi(o: float, r: float, stroke: float) -> float:
    # LinearAxis._psi: law of cosines, NaN where the triangle does not close.
    c = (o**2 + r**2 - stroke**2) / (2.0 * o * r)
    if abs(c) <= 1.0:
        return math.acos(c)
    return math.nan


@nb.njit(**_JIT)
def _joint_angle(row, steps: float, zero_err: float, stroke_err: float) -> float:
    # RotaryAxis / LinearAxis.steps_to_angle.
    if row[0] == 0.0:
        return row[2] + zero_err + steps / row[1]
    inc, l0, o, r, ang0, sign, psi0 = row[1], row[2], row[3], row[4], row[5], row[6], row[7]
    stroke = l0 + stroke_err + steps / inc
    delta = psi0 - _psi(o, r, stroke)
    return ang0 + zero_err + sign * delta


@nb.njit(**_JIT)
def _rot(axis: int, angle: float, out) -> None:
    # heliostat.frames._rot: right-handed rotation about x (0), y (1) or z (2).
    c, s = math.cos(angle), math.sin(angle)
    out[:, :] = 0.0
    i = (1, 2, 0)[axis]
    j = (2, 0, 1)[axis]
    out[axis, axis] = 1.0
    out[i, i] = c
    out[j, j] = c
    out[i, j] = -s
    out[j, i] = s


@nb.njit(**_JIT)
def _mm(a, b, out) -> None:
    for i in range(3):
        for j in range(3):
            out[i, j] = a[i, 0] * b[0, j] + a[i, 1] * b[1, j] + a[i, 2] * b[2, j]


@nb.njit(**_JIT)
def _mv_add(m, v, out) -> None:
    for i in range(3):
        out[i] += m[i, 0] * v[0] + m[i, 1] * v[1] + m[i, 2] * v[2]


@nb.njit(**_JIT)
def residual_kernel(
    sel, x, h, idx, vals0, p0, tnom, axes, codes, n0, steps, appr, sun, spot, tc, tn, ea, eb,
    nrows, plane, want_jac, res, jac, centres,
):  # fmt: skip
    """Unweighted residuals (M, N, 2) [mrad] and their Jacobian (M, N, 2, p) [mrad per
    unit] by central (``want_jac`` = 2) or forward (1) differences, or none (0), of the
    M heliostats ``sel`` (indices into the
    batch arrays); ``centres`` (M, N, 3) receives the mirror centres at x [m]. Rows past
    ``nrows[b]`` are left untouched.

    x (M, p) parameter values at slots ``idx`` (p,), steps ``h`` (p,); vals0 (B, S) the
    other slots; p0 (B, 3) pivot; tnom (B, 3, 3) nominal axis-1, axis-2 and mirror
    translations; axes (B, 2, AXIS_WIDTH); codes, n0 from :func:`chain_codes`; per row:
    steps (B, N, 2), the direction of each axis's last move appr (B, N, 2: ±1, 0 not
    known; the joint stands at θ − appr·backlash/2, as ``steps_to_angles``), sun, spot,
    target centre tc and normal tn, residual basis ea, eb (B, N, 3); ``plane`` selects
    the target-plane residual.
    """
    m_, p = x.shape
    nk = 1 + 2 * p if want_jac == 2 else 1 + p if want_jac == 1 else 1
    ns_ = vals0.shape[1]
    vk = np.empty((nk, ns_))
    a1k = np.empty((nk, 3, 3))
    a2k = np.empty((nk, 3, 3))
    cmk = np.empty((nk, 3, 3))
    tk = np.empty((nk, 3, 3))
    own1 = np.zeros(nk, dtype=np.bool_)  # parameter set k moves joint 1's angle
    own2 = np.zeros(nk, dtype=np.bool_)
    tmp = np.empty((3, 3))
    r1b = np.empty((3, 3))
    r2b = np.empty((3, 3))
    r1 = np.empty((3, 3))
    r2 = np.empty((3, 3))
    m2 = np.empty((3, 3))
    m3 = np.empty((3, 3))
    cen = np.empty(3)
    nrm = np.empty(3)
    j1, s1, j2, s2 = codes[0], codes[1], codes[2], codes[3]
    for o in range(m_):
        b = sel[o]
        # Parameter-only parts per parameter set k (0: x; 1..p: +h; p+1..2p: −h):
        # A1 = R_tilt0 · R_tilt1, A2, C and the translations (model.py chain()).
        for k in range(nk):
            v = vk[k]
            v[:] = vals0[b]
            for q in range(p):
                v[idx[q]] = x[o, q]
            if k > 0:
                q = (k - 1) % p
                v[idx[q]] = x[o, q] + (h[q] if k <= p else -h[q])
                own1[k] = idx[q] == _ZERO1 or idx[q] == _STROKE1 or idx[q] == _BL1
                own2[k] = idx[q] == _ZERO2 or idx[q] == _STROKE2 or idx[q] == _BL2
            _rot(codes[4], v[codes[4]], a1k[k])
            if codes[5] >= 0:
                _rot(codes[5], v[codes[5]], tmp)
                _mm(a1k[k].copy(), tmp, a1k[k])
            _rot(codes[6], v[3], a2k[k])
            _rot(codes[7], v[6], cmk[k])
            for part in range(3):
                for c in range(3):
                    tk[k, part, c] = tnom[b, part, c] + v[_TRANS + 3 * part + c]
        for n in range(nrows[b]):
            # Joint rotations at x, shared by every parameter set that leaves them alone.
            v = vk[0]
            lag1, lag2 = 0.5 * appr[b, n, 0], 0.5 * appr[b, n, 1]
            th1 = _joint_angle(axes[b, 0], steps[b, n, 0], v[_ZERO1], v[_STROKE1]) - lag1 * v[_BL1]
            th2 = _joint_angle(axes[b, 1], steps[b, n, 1], v[_ZERO2], v[_STROKE2]) - lag2 * v[_BL2]
            _rot(j1, s1 * th1, r1b)
            _rot(j2, s2 * th2, r2b)
            for k in range(nk):
                v = vk[k]
                q = (k - 1) % p if k > 0 else 0
                if own1[k]:
                    th1 = _joint_angle(axes[b, 0], steps[b, n, 0], v[_ZERO1], v[_STROKE1])
                    _rot(j1, s1 * (th1 - lag1 * v[_BL1]), r1)
                else:
                    r1[:, :] = r1b
                if own2[k]:
                    th2 = _joint_angle(axes[b, 1], steps[b, n, 1], v[_ZERO2], v[_STROKE2])
                    _rot(j2, s2 * (th2 - lag2 * v[_BL2]), r2)
                else:
                    r2[:, :] = r2b
                a1 = a1k[k]
                _mm(a1, r1, tmp)
                _mm(tmp, a2k[k], m2)
                _mm(m2, r2, tmp)
                _mm(tmp, cmk[k], m3)
                for i in range(3):
                    nrm[i] = m3[i, 0] * n0[0] + m3[i, 1] * n0[1] + m3[i, 2] * n0[2]
                    cen[i] = p0[b, i]
                _mv_add(a1, tk[k, 0], cen)
                _mv_add(m2, tk[k, 1], cen)
                _mv_add(m3, tk[k, 2], cen)
                # Beam r = 2(n·s)n − s and the miss against the measured ray (fit.py).
                ns = nrm[0] * sun[b, n, 0] + nrm[1] * sun[b, n, 1] + nrm[2] * sun[b, n, 2]
                d0 = spot[b, n, 0] - cen[0]
                d1 = spot[b, n, 1] - cen[1]
                d2 = spot[b, n, 2] - cen[2]
                dl = math.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
                rr0 = 2.0 * ns * nrm[0] - sun[b, n, 0]
                rr1 = 2.0 * ns * nrm[1] - sun[b, n, 1]
                rr2 = 2.0 * ns * nrm[2] - sun[b, n, 2]
                if plane:
                    num = (
                        (tc[b, n, 0] - cen[0]) * tn[b, n, 0]
                        + (tc[b, n, 1] - cen[1]) * tn[b, n, 1]
                        + (tc[b, n, 2] - cen[2]) * tn[b, n, 2]
                    )
                    tt = num / (rr0 * tn[b, n, 0] + rr1 * tn[b, n, 1] + rr2 * tn[b, n, 2])
                    f0 = (cen[0] + tt * rr0 - spot[b, n, 0]) / dl
                    f1 = (cen[1] + tt * rr1 - spot[b, n, 1]) / dl
                    f2 = (cen[2] + tt * rr2 - spot[b, n, 2]) / dl
                else:
                    f0 = rr0 - d0 / dl
                    f1 = rr1 - d1 / dl
                    f2 = rr2 - d2 / dl
                e1 = 1e3 * (f0 * ea[b, n, 0] + f1 * ea[b, n, 1] + f2 * ea[b, n, 2])
                e2 = 1e3 * (f0 * eb[b, n, 0] + f1 * eb[b, n, 1] + f2 * eb[b, n, 2])
                if k == 0:
                    res[o, n, 0] = e1
                    res[o, n, 1] = e2
                    for i in range(3):
                        centres[o, n, i] = cen[i]
                elif want_jac == 1:
                    jac[o, n, 0, q] = (e1 - res[o, n, 0]) / h[q]
                    jac[o, n, 1, q] = (e2 - res[o, n, 1]) / h[q]
                elif k <= p:
                    jac[o, n, 0, q] = e1
                    jac[o, n, 1, q] = e2
                else:
                    jac[o, n, 0, q] = (jac[o, n, 0, q] - e1) / (2.0 * h[q])
                    jac[o, n, 1, q] = (jac[o, n, 1, q] - e2) / (2.0 * h[q])
