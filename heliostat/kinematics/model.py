"""Two-axis heliostat kinematics with an error model: forward and inverse.

Every drive type is the same rigid-body chain with different constants:

.. math::

    p_{world} = p_0 + A_1 (t_1 + R_1(θ_1) A_2 (t_2 + R_2(θ_2) C (t_m + p_{mirror})))

    n = A_1 R_1(θ_1) A_2 R_2(θ_2) C n_0

with :math:`p_0` the heliostat position (pivot) in site ENU, :math:`A_1` the first-axis
tilt, :math:`A_2` the non-orthogonality of axis 2, :math:`C` the mirror collimation
(canting) error, :math:`t_1, t_2, t_m` the first-joint, second-joint and concentrator
translations, and :math:`n_0` the mirror normal at zero joint angles.

Each drive type's module in :mod:`heliostat.kinematics.drives` fills in the chain's
constants (:class:`~heliostat.kinematics.drives.Chain`); :meth:`HeliostatKinematics.chain`
reads them. The built-in drives (R_e, R_n, R_u rotate about east, north, up = R_x, R_y, R_z):

==========  ==================  ==================  ======  =======================  ======  ======
drive       R1 (``joint1``)     R2 (``joint2``)     n0      A1 (``tilt``)            A2      C
==========  ==================  ==================  ======  =======================  ======  ======
``azel``    R_u(−θ1): azimuth,  R_e(θ2): elevation  +N      R_e(tilt_e) R_n(tilt_n)  R_n     R_u
            clockwise from N
``linear``  R_e(θ1): E–W axis   R_u(θ2): local up   −N      R_n(tilt_n) R_u(tilt_u)  R_n     R_e
==========  ==================  ==================  ======  =======================  ======  ======

(``tilt_e`` = ``axis1_tilt_e_rad`` etc.; A2 turns by ``axis_nonorthogonality_rad``, C by
``mirror_collimation_rad``; ``tests/test_drives.py`` checks this table against the drive
modules.) The linear chain follows ARTIST's rigid-body kinematic (east rotation then
up rotation, normal (0, −1, 0) at zero angles), so PAINT joint angles carry over unchanged.
The inverse solves n(θ) = (s + d(θ)) / |s + d(θ)|, d the unit vector from the mirror
centre c(θ) to the aim point, by Gauss–Newton from the nominal chain's analytic solution
(:func:`nominal_angles`, valid for any drive whose n0 is perpendicular to both joints);
it converges to machine precision in a few iterations for any error set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from heliostat.frames import normalize, reflect, rot_x, rot_y, rot_z
from heliostat.kinematics.actuators import LinearAxis, RotaryAxis
from heliostat.kinematics.drives import Chain, Drive, drive
from heliostat.kinematics.drives._base import BACKLASH
from heliostat.kinematics.errors import KinematicErrors


class KinematicsError(ValueError):
    """A pose the kinematic model cannot produce (unreachable aim, bad steps)."""


#: Rotation about an ENU axis by its letter (``Chain`` names axes so).
_ROT = {"e": rot_x, "n": rot_y, "u": rot_z}


def _unit(signed_axis: str) -> NDArray[np.float64]:
    """``"+n"`` → (0, 1, 0), ``"-u"`` → (0, 0, −1)."""
    out = np.zeros(3)
    out["enu".index(signed_axis[1])] = 1.0 if signed_axis[0] == "+" else -1.0
    return out


def nominal_angles(chain: Chain, u_normal_enu: ArrayLike) -> NDArray[np.float64]:
    """Joint angles (θ1, θ2) at which the error-free chain has normal ``u_normal_enu``.

    With a = joint-1 axis, b = joint-2 axis, σ1, σ2 their signs and n0 ⊥ a, b:
    a·n = a·R2 n0 = sin(σ2θ2) a·(b × n0), so σ2θ2 = arcsin(a·n / a·(b × n0)); then R1
    turns w = R2 n0 onto n about a, σ1θ1 = atan2(a·(w⊥ × n⊥), w⊥·n⊥) with ⊥ the parts
    perpendicular to a. For az-el this is azimuth = atan2(n_e, n_n), elevation = arcsin(n_u).

    Parameters
    ----------
    chain : Chain
        The drive's chain constants.
    u_normal_enu : array_like of shape (N, 3)
        Unit mirror normals.

    Returns
    -------
    ndarray of shape (N, 2)
        θ1 in (−π, π], θ2 in [−π/2, π/2]. [rad]
    """
    n = np.atleast_2d(np.asarray(u_normal_enu, dtype=float))
    a = _unit("+" + chain.joint1)
    b = _unit("+" + chain.joint2)
    n0 = _unit(chain.normal0)
    phi2 = np.arcsin(np.clip((n @ a) / float(a @ np.cross(b, n0)), -1.0, 1.0))
    w = np.cos(phi2)[:, None] * n0 + np.sin(phi2)[:, None] * np.cross(b, n0)
    w_p = w - (w @ a)[:, None] * a
    n_p = n - (n @ a)[:, None] * a
    phi1 = np.arctan2(np.cross(w_p, n_p) @ a, np.sum(w_p * n_p, axis=1))
    return np.stack([chain.joint1_sign * phi1, chain.joint2_sign * phi2], axis=1)


@dataclass(frozen=True, slots=True)
class Pose:
    """Mirror pose in site ENU.

    Attributes
    ----------
    u_normal_enu : ndarray of shape (N, 3)
        Unit mirror normal.
    centre_enu_m : ndarray of shape (N, 3)
        Mirror (concentrator) centre. [m]
    """

    u_normal_enu: NDArray[np.float64]
    centre_enu_m: NDArray[np.float64]


def _approach(approach: ArrayLike | None, shape: tuple[int, ...]) -> NDArray | None:
    """``approach`` as floats broadcasting against ``shape`` (…, 2), or None."""
    if approach is None:
        return None
    a = np.asarray(approach, dtype=float)
    try:
        np.broadcast_shapes(a.shape, shape)
    except ValueError:
        raise ValueError(
            f"approach must broadcast against shape {shape}, got shape {a.shape}"
        ) from None
    if a.shape[-1:] != (2,):
        raise ValueError(f"approach needs one value per axis (…, 2), got shape {a.shape}")
    return a


def _vec3(v: ArrayLike, name: str) -> NDArray[np.float64]:
    a = np.asarray(v, dtype=float)
    if a.shape != (3,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be 3 finite numbers, got {v!r}")
    return a


@dataclass(frozen=True, slots=True)
class HeliostatKinematics:
    """Nominal kinematics of one heliostat.

    Attributes
    ----------
    drive : str
        Name of a registered drive type (:mod:`heliostat.kinematics.drives`), e.g.
        ``"azel"`` (rotary slew drives) or ``"linear"`` (Jülich linear actuators).
    position_enu_m : tuple of 3 float
        Pivot (rotation centre) in site ENU. [m]
    axis1, axis2 : RotaryAxis or LinearAxis
        Steps ↔ joint-angle models of the two axes.
    axis1_offset_enu_m, axis2_offset_enu_m, mirror_offset_enu_m : tuple of 3 float
        Nominal first-joint, second-joint and concentrator translations (PAINT
        ``first_joint_translation_*``, ``second_joint_translation_*``,
        ``concentrator_translation_*``). [m]
    """

    drive: str
    position_enu_m: tuple[float, float, float]
    axis1: RotaryAxis | LinearAxis
    axis2: RotaryAxis | LinearAxis
    axis1_offset_enu_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axis2_offset_enu_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    mirror_offset_enu_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    _p0: NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _spec: Drive = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        spec = drive(self.drive)
        object.__setattr__(self, "_spec", spec)
        for name, kind in zip(("axis1", "axis2"), spec.axes, strict=True):
            if not isinstance(getattr(self, name), kind.type):
                raise ValueError(f"{self.drive} drive needs {kind.type.__name__} for {name}")
        object.__setattr__(self, "_p0", _vec3(self.position_enu_m, "position_enu_m"))
        for name in ("axis1_offset_enu_m", "axis2_offset_enu_m", "mirror_offset_enu_m"):
            _vec3(getattr(self, name), name)

    # ------------------------------------------------------------------ helpers
    def _errors(self, errors: KinematicErrors | None) -> KinematicErrors:
        if errors is None:
            return KinematicErrors.zeros(self.drive)
        if errors.drive != self.drive:
            raise ValueError(
                f"error set is for drive {errors.drive!r}, heliostat is {self.drive!r}"
            )
        return errors

    @property
    def spec(self) -> Drive:
        """The drive type's declaration (:mod:`heliostat.kinematics.drives`)."""
        return self._spec

    @property
    def axes(self) -> tuple[RotaryAxis | LinearAxis, RotaryAxis | LinearAxis]:
        return (self.axis1, self.axis2)

    # ---------------------------------------------------------- steps ↔ angles
    def steps_to_angles(
        self,
        steps: ArrayLike,
        errors: KinematicErrors | None = None,
        approach: ArrayLike | None = None,
    ) -> NDArray[np.float64]:
        """Joint angles (θ1, θ2) for motor steps of shape (N, 2) or (2,). [rad]

        ``approach``: direction of each axis's last move (±1, the sign of its step
        change; 0 = not known), shape broadcasting against ``steps``; with it the joint
        stands at θ − s·b/2 (b the ``axis<i>_backlash_rad`` error values: the load lags
        the motor by half the backlash). None (or 0): no backlash term, the middle of the
        dead band.
        """
        st = np.asarray(steps, dtype=float)
        if st.shape[-1:] != (2,):
            raise ValueError(f"steps must have shape (N, 2) or (2,), got {st.shape}")
        return self.steps_to_angles_values(st, self._errors(errors).to_dict(), approach)

    def steps_to_angles_values(
        self,
        steps: NDArray[np.float64],
        values: Mapping[str, float | NDArray],
        approach: ArrayLike | None = None,
    ) -> NDArray[np.float64]:
        """:meth:`steps_to_angles` with error values that may be arrays broadcasting
        against ``steps[..., 0]`` (e.g. (K, 1) columns of K parameter sets against (1, N)
        steps, giving (K, N, 2)); missing names are zero. ``approach`` as there."""
        a = _approach(approach, steps.shape)
        return np.stack(
            np.broadcast_arrays(
                *(
                    axis.steps_to_angle(
                        steps[..., i],
                        values.get(f"axis{i + 1}_zero_rad", 0.0),
                        values.get(f"actuator{i + 1}_stroke_m", 0.0),
                    )
                    - (0.0 if a is None else 0.5 * a[..., i] * values.get(BACKLASH[i], 0.0))
                    for i, axis in enumerate(self.axes)
                )
            ),
            axis=-1,
        )

    def angles_to_steps(
        self,
        angles_rad: ArrayLike,
        errors: KinematicErrors | None = None,
        approach: ArrayLike | None = None,
    ) -> NDArray[np.float64]:
        """Real-valued motor steps for joint angles of shape (N, 2) or (2,), arrived at
        from direction ``approach`` (:meth:`steps_to_angles`; None: no backlash term).
        [steps]"""
        e = self._errors(errors)
        ang = np.asarray(angles_rad, dtype=float)
        if ang.shape[-1:] != (2,):
            raise ValueError(f"angles_rad must have shape (N, 2) or (2,), got {ang.shape}")
        a = _approach(approach, ang.shape)
        out = np.empty_like(ang)
        for i, axis in enumerate(self.axes):
            # the reported angle leads the joint by s·b/2
            lead = 0.0 if a is None else 0.5 * a[..., i] * e.get(BACKLASH[i])
            out[..., i] = axis.angle_to_steps(
                ang[..., i] + lead, e[f"axis{i + 1}_zero_rad"], e.get(f"actuator{i + 1}_stroke_m")
            )
        return out

    # ----------------------------------------------------------------- forward
    def chain(
        self, theta: NDArray[np.float64], values: Mapping[str, float | NDArray]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The rigid-body chain (module docstring) for joint angles ``theta`` (..., 2) and
        error values (missing names are zero) that are scalars or arrays broadcasting
        against ``theta[..., 0]``. Returns unit normals and centres, shape (..., 3)."""

        def v(name: str) -> float | NDArray:
            return values.get(name, 0.0)

        k = self._spec.chain
        t1, t2 = theta[..., 0], theta[..., 1]
        a1 = _ROT[k.tilt[0]](v(f"axis1_tilt_{k.tilt[0]}_rad"))
        for t in k.tilt[1:]:
            a1 = a1 @ _ROT[t](v(f"axis1_tilt_{t}_rad"))
        a2 = _ROT[k.nonorthogonality](v("axis_nonorthogonality_rad"))
        c = _ROT[k.collimation](v("mirror_collimation_rad"))
        n0 = _unit(k.normal0)
        r1, r2 = _ROT[k.joint1](k.joint1_sign * t1), _ROT[k.joint2](k.joint2_sign * t2)
        m2 = a1 @ r1 @ a2  # frame after joint 1
        m3 = m2 @ r2 @ c  # mirror frame

        def trans(part: str) -> NDArray[np.float64]:
            nominal = np.asarray(getattr(self, f"{part}_offset_enu_m"), dtype=float)
            comps = np.broadcast_arrays(*(np.asarray(v(f"{part}_offset_{k}_m")) for k in "enu"))
            return nominal + np.stack(comps, axis=-1)

        def mv(m: NDArray, x: NDArray) -> NDArray:
            return (m @ x[..., None])[..., 0]

        normal = m3 @ n0
        centre = (
            self._p0 + mv(a1, trans("axis1")) + mv(m2, trans("axis2")) + mv(m3, trans("mirror"))
        )
        shape = np.broadcast_shapes(normal.shape, centre.shape)
        return np.broadcast_to(normal, shape), np.broadcast_to(centre, shape)

    def forward_angles(self, angles_rad: ArrayLike, errors: KinematicErrors | None = None) -> Pose:
        """Mirror pose for joint angles of shape (N, 2) (true joint angles, errors excluded
        from the angles themselves: zero offsets act in :meth:`steps_to_angles`)."""
        e = self._errors(errors)
        theta = np.atleast_2d(np.asarray(angles_rad, dtype=float))
        if theta.shape[-1] != 2 or theta.ndim != 2:
            raise ValueError(f"angles_rad must have shape (N, 2), got {np.shape(angles_rad)}")
        return Pose(*self.chain(theta, e.to_dict()))

    def forward(
        self,
        steps: ArrayLike,
        errors: KinematicErrors | None = None,
        approach: ArrayLike | None = None,
    ) -> Pose:
        """Mirror pose (unit normal, centre; ENU) for motor steps of shape (N, 2), each
        axis arrived at from direction ``approach`` (:meth:`steps_to_angles`)."""
        st = np.atleast_2d(np.asarray(steps, dtype=float))
        if st.ndim != 2 or st.shape[1] != 2:
            raise ValueError(f"steps must have shape (N, 2), got {np.shape(steps)}")
        if not np.all(np.isfinite(st)):
            raise KinematicsError("steps must be finite")
        theta = self.steps_to_angles(st, errors, approach)
        if not np.all(np.isfinite(theta)):
            bad = np.flatnonzero(~np.all(np.isfinite(theta), axis=1))
            raise KinematicsError(f"steps outside the actuator geometry at rows {bad.tolist()}")
        return self.forward_angles(theta, errors)

    def reflected(
        self,
        steps: ArrayLike,
        u_sun_enu: ArrayLike,
        errors: KinematicErrors | None = None,
        approach: ArrayLike | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Reflected beam direction and its origin (mirror centre) for steps and sun."""
        pose = self.forward(steps, errors, approach)
        return reflect(pose.u_normal_enu, np.asarray(u_sun_enu, dtype=float)), pose.centre_enu_m

    # ----------------------------------------------------------------- inverse
    def angles_for_normal(self, u_normal_enu: ArrayLike) -> NDArray[np.float64]:
        """Joint angles at which the error-free chain has the given mirror normals, in
        closed form (:func:`nominal_angles`; axis 1 of a full-turn drive on the branch
        nearest its mid-travel). The start of :meth:`inverse_angles`, which then also
        accounts for the mirror centre's offset from the pivot. Shape (N, 2) [rad]"""
        return self._initial_angles(np.atleast_2d(np.asarray(u_normal_enu, dtype=float)))

    def _initial_angles(self, u_normal: NDArray[np.float64]) -> NDArray[np.float64]:
        theta = nominal_angles(self._spec.chain, u_normal)
        if self._spec.axis1_full_turn:
            # Keep axis 1 in the branch nearest its mid-travel so the steps stay in range.
            mid = 0.5 * (self.axis1.min_steps + self.axis1.max_steps)
            ref = float(self.axis1.steps_to_angle(mid))
            theta[:, 0] = ref + np.mod(theta[:, 0] - ref + np.pi, 2 * np.pi) - np.pi
        return theta

    def inverse_angles(
        self,
        aim_enu_m: ArrayLike,
        u_sun_enu: ArrayLike,
        errors: KinematicErrors | None = None,
        tol_rad: float = 1e-12,
        max_iter: int = 30,
    ) -> NDArray[np.float64]:
        """Joint angles that reflect the sun onto the aim point(s). Shape (N, 2) [rad].

        Raises
        ------
        KinematicsError
            If the solve does not converge (aim point not reachable by this chain).
        """
        e = self._errors(errors)
        aim = np.atleast_2d(np.asarray(aim_enu_m, dtype=float))
        sun = np.atleast_2d(np.asarray(u_sun_enu, dtype=float))
        aim, sun = np.broadcast_arrays(aim, sun)
        if aim.shape[-1] != 3 or aim.ndim != 2:
            raise ValueError(f"aim_enu_m and u_sun_enu must have shape (N, 3), got {aim.shape}")
        if not (np.all(np.isfinite(aim)) and np.all(np.isfinite(sun))):
            raise KinematicsError("aim point and sun vector must be finite")
        sun = normalize(sun)

        def residual(theta):
            pose = self.forward_angles(theta, e)
            want = normalize(sun + normalize(aim - pose.centre_enu_m))
            return pose.u_normal_enu - want

        def solve(theta: NDArray[np.float64], rows: NDArray[np.intp]) -> NDArray[np.float64]:
            # Gauss–Newton, vectorised over rows. Near the zenith singularity it may wind
            # axis 1 through turns or pass 90° of elevation: _full_turn_branch corrects that.
            def res(th):
                pose = self.forward_angles(th, e)
                want = normalize(sun[rows] + normalize(aim[rows] - pose.centre_enu_m))
                return pose.u_normal_enu - want

            h = 1e-7
            for _ in range(max_iter):
                f = res(theta)
                if np.max(np.linalg.norm(f, axis=1)) < tol_rad:
                    break
                jac = np.empty(f.shape + (2,))
                for k in range(2):
                    dt = np.zeros(2)
                    dt[k] = h
                    jac[..., k] = (res(theta + dt) - res(theta - dt)) / (2 * h)
                jtj = np.einsum("nik,nil->nkl", jac, jac) + 1e-15 * np.eye(2)
                jtf = np.einsum("nik,ni->nk", jac, f)
                theta = theta - np.linalg.solve(jtj, jtf[..., None])[..., 0]
            return theta

        every = np.arange(aim.shape[0])
        theta = solve(self._initial_angles(normalize(sun + normalize(aim - self._p0))), every)
        if self._spec.axis1_full_turn:
            theta = self._full_turn_branch(theta, solve)
        err = np.linalg.norm(residual(theta), axis=1)
        if not np.all(err < 1e-9):
            bad = np.flatnonzero(~(err < 1e-9))
            raise KinematicsError(f"inverse kinematics did not converge for rows {bad.tolist()}")
        return theta

    def _full_turn_branch(self, theta: NDArray[np.float64], solve) -> NDArray[np.float64]:
        """Bring a solution of a full-turn axis 1 (az-el) onto the usual branch: θ1
        within ±π of the axis's mid-travel (exact: the chain is 2π-periodic in θ1), θ2
        (elevation) at most 90°. Past the zenith the same normal is also reached near
        (θ1 + π, π − θ2): solve again from there and keep that solution where it lands on
        the usual branch."""
        mid = 0.5 * (self.axis1.min_steps + self.axis1.max_steps)
        ref = float(self.axis1.steps_to_angle(mid))

        def wrap(t1):
            return ref + np.mod(t1 - ref + np.pi, 2 * np.pi) - np.pi

        theta = np.stack([wrap(theta[:, 0]), theta[:, 1]], axis=1)
        over = np.flatnonzero(np.abs(theta[:, 1]) > np.pi / 2)
        if over.size:
            flipped = np.stack([theta[over, 0] + np.pi, np.pi - theta[over, 1]], axis=1)
            alt = solve(flipped, over)
            alt[:, 0] = wrap(alt[:, 0])
            ok = np.abs(alt[:, 1]) <= np.pi / 2
            theta[over[ok]] = alt[ok]
        return theta

    def inverse(
        self,
        aim_enu_m: ArrayLike,
        u_sun_enu: ArrayLike,
        errors: KinematicErrors | None = None,
        approach: ArrayLike | None = None,
    ) -> NDArray[np.float64]:
        """Motor steps (real-valued, shape (N, 2)) that put the beam on the aim point(s)
        when each axis arrives from direction ``approach`` (±1 per axis, the sign of its
        step change; None or 0: no backlash term, :meth:`steps_to_angles`).

        Round to integers at the controller; check :meth:`within_limits` before sending.
        """
        theta = self.inverse_angles(aim_enu_m, u_sun_enu, errors)
        steps = self.angles_to_steps(theta, errors, approach)
        if not np.all(np.isfinite(steps)):
            bad = np.flatnonzero(~np.all(np.isfinite(steps), axis=1))
            raise KinematicsError(f"aim unreachable by the actuators at rows {bad.tolist()}")
        return steps

    def within_limits(self, steps: ArrayLike) -> NDArray[np.bool_]:
        """True where both axes' steps lie inside their travel limits. Shape (N,)."""
        st = np.atleast_2d(np.asarray(steps, dtype=float))
        ok = np.ones(st.shape[0], dtype=bool)
        for i, axis in enumerate(self.axes):
            ok &= (st[:, i] >= axis.min_steps) & (st[:, i] <= axis.max_steps)
        return ok
