"""Batched evaluation of the kinematic chain for many error-parameter sets at once.

:meth:`HeliostatKinematics.forward` takes one error set. A least-squares Jacobian needs
the pose for 2p sets (central differences over p parameters); evaluating them in one
broadcast numpy call is ~9× faster than 2p calls of ``forward`` (3 ms vs 28 ms for
p = 8, N = 30 on the development machine). This module evaluates exactly the chain
of :mod:`heliostat.kinematics.model` (same rotations, same order; a test checks equality
with ``forward`` to 1e-12), with a leading axis K over parameter sets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from heliostat.kinematics import HeliostatKinematics, KinematicErrors


def _mv(m: NDArray, v: NDArray) -> NDArray:
    return (m @ v[..., None])[..., 0]


def _rot(axis: int, angle_rad: NDArray) -> NDArray:
    """Right-handed rotation about x (0), y (1) or z (2), as :func:`heliostat.frames.rot_x`
    etc., built without per-element stacking (this is the hot loop of the fit)."""
    a = np.asarray(angle_rad, dtype=float)
    c, s = np.cos(a), np.sin(a)
    m = np.zeros(a.shape + (3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m[..., axis, axis] = 1.0
    m[..., i, i] = c
    m[..., j, j] = c
    m[..., i, j] = -s
    m[..., j, i] = s
    return m


def rot_x(a: NDArray) -> NDArray:
    return _rot(0, a)


def rot_y(a: NDArray) -> NDArray:
    return _rot(1, a)


def rot_z(a: NDArray) -> NDArray:
    return _rot(2, a)


def batched_pose(
    kin: HeliostatKinematics,
    base: KinematicErrors,
    names: Sequence[str],
    x: NDArray[np.float64],
    steps: NDArray,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mirror normals and centres for K parameter vectors and N step pairs.

    Parameters
    ----------
    kin : HeliostatKinematics
        Nominal kinematics.
    base : KinematicErrors
        Values of the parameters not in ``names``.
    names : sequence of str
        Parameters varied, in the column order of ``x``.
    x : ndarray of shape (K, p)
        Parameter vectors (rad for ``*_rad``, m for ``*_m``).
    steps : ndarray of shape (N, 2)
        Motor steps. [steps]

    Returns
    -------
    u_normal_enu, centre_enu_m : ndarray of shape (K, N, 3)
        NaN where the steps do not close an actuator triangle.
    """
    x = np.atleast_2d(np.asarray(x, dtype=float))
    k = x.shape[0]
    vals: dict[str, NDArray | float] = dict(base.to_dict())
    for j, name in enumerate(names):
        if name not in vals:
            raise KeyError(f"{base.drive} drive has no error parameter {name!r}")
        vals[name] = x[:, j : j + 1]  # (K, 1)
    st = np.asarray(steps, dtype=float)

    def v(name: str) -> NDArray | float:
        # A fitted parameter is a (K, 1) column, a fixed one a scalar: rotations of
        # scalars are single (3, 3) matrices that broadcast over K and N.
        return vals.get(name, 0.0)

    theta = []
    for i, axis in enumerate(kin.axes):
        stroke = v(f"actuator{i + 1}_stroke_m")
        theta.append(axis.steps_to_angle(st[None, :, i], v(f"axis{i + 1}_zero_rad"), stroke))
    t1, t2 = theta  # (K, N)
    if kin.drive == "azel":
        a1 = rot_x(v("axis1_tilt_e_rad")) @ rot_y(v("axis1_tilt_n_rad"))
        c = rot_z(v("mirror_collimation_rad"))
        n0 = np.array([0.0, 1.0, 0.0])
        r1, r2 = rot_z(-t1), rot_x(t2)
    else:
        a1 = rot_y(v("axis1_tilt_n_rad")) @ rot_z(v("axis1_tilt_u_rad"))
        c = rot_x(v("mirror_collimation_rad"))
        n0 = np.array([0.0, -1.0, 0.0])
        r1, r2 = rot_x(t1), rot_z(t2)
    a2 = rot_y(v("axis_nonorthogonality_rad"))  # (K, 1, 3, 3) or (3, 3)
    m2 = a1 @ r1 @ a2  # (K, N, 3, 3)
    m3 = m2 @ r2 @ c

    def trans(part: str) -> NDArray:
        """Translation, shape (3,) or (K, 1, 3)."""
        nominal = np.asarray(getattr(kin, f"{part}_offset_enu_m"), dtype=float)
        comps = np.broadcast_arrays(*(np.asarray(v(f"{part}_offset_{c}_m")) for c in "enu"))
        return nominal + np.stack(comps, axis=-1)

    normal = _mv(m3, n0)
    centre = (
        np.asarray(kin.position_enu_m, dtype=float)
        + _mv(a1, trans("axis1"))
        + _mv(m2, trans("axis2"))
        + _mv(m3, trans("mirror"))
    )
    shape = (k, st.shape[0], 3)
    return np.broadcast_to(normal, shape), np.broadcast_to(centre, shape)
