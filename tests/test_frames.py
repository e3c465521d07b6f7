"""WGS84 ↔ ENU and vector helpers against independent references."""

import numpy as np
import pytest

from heliostat.frames import (
    WGS84_A_M,
    WGS84_B_M,
    Site,
    angle_between,
    azel_to_enu,
    ecef_to_geodetic,
    enu_to_azel,
    geodetic_to_ecef,
    intersect_plane,
    normalize,
    reflect,
    rot_x,
    rot_y,
    rot_z,
    target_axes,
)

JUELICH = Site(50.913296, 6.387514, 87.0, "Jülich")


def test_ecef_defining_points():
    # Equator/prime meridian and the pole follow from the WGS84 defining constants alone.
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 0.0, 0.0), [WGS84_A_M, 0, 0], atol=1e-9)
    np.testing.assert_allclose(geodetic_to_ecef(90.0, 0.0, 0.0), [0, 0, WGS84_B_M], atol=1e-6)
    np.testing.assert_allclose(
        geodetic_to_ecef(0.0, 90.0, 100.0), [0, WGS84_A_M + 100, 0], atol=1e-6
    )


def test_ecef_against_pymap3d_reference():
    # Reference computed independently with pymap3d 3.2.0 geodetic2ecef (NREL SPA site);
    # tolerance 1 mm, far above both implementations' float error.
    np.testing.assert_allclose(
        geodetic_to_ecef(39.742476, -105.1786, 1830.14),
        [-1286219.235018511, -4741071.253183921, 4057210.569472047],
        atol=1e-3,
    )


@pytest.mark.parametrize(
    ("lat", "lon", "h", "enu"),
    [
        # pymap3d 3.2.0 geodetic2enu about the Jülich reference point.
        (50.9140, 6.3880, 120.0, (34.17974212765176, 78.31920949329981, 32.99942744471232)),
        (51.0, 7.0, 500.0, (42997.63956148434, 9824.738016674874, 260.7991988409285)),
    ],
)
def test_enu_against_pymap3d_reference(lat, lon, h, enu):
    np.testing.assert_allclose(JUELICH.wgs84_to_enu(lat, lon, h), enu, atol=1e-3)


def test_enu_round_trip_below_a_millimetre():
    rng = np.random.default_rng(20261126)
    p = rng.uniform([-2000, -2000, -50], [2000, 2000, 300], size=(500, 3))
    lat, lon, h = JUELICH.enu_to_wgs84(p)
    back = JUELICH.wgs84_to_enu(lat, lon, h)
    assert np.max(np.linalg.norm(back - p, axis=1)) < 1e-3  # the bound: 1 mm


def test_geodetic_round_trip_whole_globe():
    rng = np.random.default_rng(7)
    lat = rng.uniform(-89.9, 89.9, 200)
    lon = rng.uniform(-180, 180, 200)
    h = rng.uniform(-400, 9000, 200)
    lat2, lon2, h2 = ecef_to_geodetic(geodetic_to_ecef(lat, lon, h))
    np.testing.assert_allclose(lat2, lat, atol=1e-9)  # 1e-9 deg ≈ 0.1 mm
    np.testing.assert_allclose(lon2, lon, atol=1e-9)
    np.testing.assert_allclose(h2, h, atol=1e-4)


def test_site_origin_maps_to_zero_and_rejects_bad_input():
    np.testing.assert_allclose(JUELICH.wgs84_to_enu(50.913296, 6.387514, 87.0), 0, atol=1e-9)
    with pytest.raises(ValueError, match="latitude_deg"):
        Site(91.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        JUELICH.wgs84_to_enu(np.nan, 6.0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        JUELICH.enu_to_wgs84([1.0, 2.0])


@pytest.mark.parametrize(
    ("az_deg", "vec"),
    [(0, (0, 1, 0)), (90, (1, 0, 0)), (180, (0, -1, 0)), (270, (-1, 0, 0))],
)
def test_compass_directions(az_deg, vec):
    np.testing.assert_allclose(azel_to_enu(np.radians(az_deg), 0.0), vec, atol=1e-15)
    az, el = enu_to_azel(np.array(vec, dtype=float))
    assert np.isclose(np.degrees(az), az_deg) and el == 0


def test_reflection_law():
    rng = np.random.default_rng(3)
    n = normalize(rng.normal(size=(100, 3)))
    s = normalize(rng.normal(size=(100, 3)))
    r = reflect(n, s)
    np.testing.assert_allclose(np.linalg.norm(r, axis=1), 1.0, atol=1e-12)  # stays unit
    # angle of incidence equals angle of reflection ...
    np.testing.assert_allclose(angle_between(n, s), angle_between(n, r), atol=1e-12)
    # ... and n, s, r are coplanar
    np.testing.assert_allclose(np.einsum("ij,ij->i", np.cross(n, s), r), 0.0, atol=1e-12)
    # normal incidence reflects straight back
    np.testing.assert_allclose(reflect([0, 0, 1.0], [0, 0, 1.0]), [0, 0, 1.0])


def test_rotations_by_hand():
    q = np.pi / 2
    np.testing.assert_allclose(rot_z(q) @ [1, 0, 0], [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(rot_x(q) @ [0, 1, 0], [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(rot_y(q) @ [0, 0, 1], [1, 0, 0], atol=1e-15)
    assert rot_z(np.zeros(4)).shape == (4, 3, 3)


def test_intersect_plane_and_target_axes():
    hit = intersect_plane([0, 100, 2], [0, -1, 0], [0, 0, 0], [0, 1, 0])
    np.testing.assert_allclose(hit, [0, 0, 2])
    assert np.all(np.isnan(intersect_plane([0, 100, 2], [0, 1, 0], [0, 0, 0], [0, 1, 0])))
    x, y = target_axes([0, 1, 0])  # north-facing target seen from the north: right = west
    np.testing.assert_allclose(x, [-1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(y, [0, 0, 1], atol=1e-15)
    with pytest.raises(ValueError, match="vertical"):
        target_axes([0, 0, 1])


def test_angle_between_tiny_angles():
    a = np.array([1.0, 0, 0])
    b = np.array([np.cos(1e-9), np.sin(1e-9), 0])
    assert abs(angle_between(a, b) - 1e-9) < 1e-18  # arccos(dot) would give 0 here
