"""PAINT import: conventions, file reading, and a fit against the generator's truth.

The files in tests/data/paint/AA39 are written by tests/data/paint/make_paint_files.py
from a simulated Jülich-like heliostat with known errors (truth.json).
"""

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from heliostat.calibration import fit_heliostat, with_cross_validation
from heliostat.calibration.paint import (
    load_paint_dir,
    load_tower,
    paint_sun_azimuth_to_north_deg,
)

DATA = Path("tests/data/paint/AA39")
TRUTH = json.loads((DATA / "truth.json").read_text())
sys.path.insert(0, str(Path("tests/data/paint").resolve()))
import make_paint_files as gen  # noqa: E402


@pytest.mark.parametrize(
    "paint_deg, north_deg",
    [(0.0, 180.0), (90.0, 90.0), (-90.0, 270.0), (180.0, 0.0), (-53.97, 233.97)],
)
def test_sun_azimuth_compass_table(paint_deg, north_deg):
    # PAINT: from south, positive toward east (atan2(E, −N)). Four compass points, and a
    # PAINT record of 2022-03-23 ~14:45 UTC at Jülich (sun in the south-west).
    assert paint_sun_azimuth_to_north_deg(paint_deg) == pytest.approx(north_deg)


def test_tower_targets_and_site():
    site, targets = load_tower(DATA / "WRI1030197-tower-measurements.json")
    # The power-plant position is the ENU origin (round trip through WGS84: < 1e-9°).
    assert site.latitude_deg == pytest.approx(gen.SITE.latitude_deg, abs=1e-9)
    assert site.longitude_deg == pytest.approx(gen.SITE.longitude_deg, abs=1e-9)
    assert site.altitude_m == pytest.approx(gen.SITE.altitude_m, abs=1e-6)
    assert set(targets) == set(gen.TARGETS)  # the convex receiver is skipped
    for name, (centre, w, h) in gen.TARGETS.items():
        t = targets[name]
        # WGS84 round trip through the files: well below a millimetre.
        np.testing.assert_allclose(t.centre_enu_m, centre, atol=1e-6)
        assert t.width_m == pytest.approx(w, abs=1e-6) and t.height_m == pytest.approx(h, abs=1e-6)
        # Normal +N: x right as seen from the field (looking south) is west.
        np.testing.assert_allclose(t.u_x_enu, [-1, 0, 0], atol=1e-12)


def test_heliostat_matches_generator_and_physical_range():
    camp = load_paint_dir(DATA)
    kin = camp.field.heliostats["AA39"].kinematics
    ref = gen.kinematics()
    np.testing.assert_allclose(kin.position_enu_m, ref.position_enu_m, atol=1e-6)
    assert kin.axis1 == ref.axis1 and kin.axis2 == ref.axis2
    assert kin.mirror_offset_enu_m == ref.mirror_offset_enu_m
    # Convention check (axis-1 angle −π/2): at 0 steps the mirror looks almost straight up,
    # at full stroke of axis 1 horizontally toward the south (toward the tower).
    n0 = kin.forward([[0, 37000]]).u_normal_enu[0]
    n1 = kin.forward([[kin.axis1.max_steps, 37000]]).u_normal_enu[0]
    # PAINT axis-1 initial angle 0.039 rad from the vertical and axis 2 ~10° off centre
    # at 37000 steps: the normal is within 10° of the zenith.
    assert n0[2] > math.cos(math.radians(10))
    assert n1[1] < -0.95 and abs(n1[2]) < 0.1


def test_calibration_records_and_rejection():
    camp = load_paint_dir(DATA)
    assert len(camp.observations) == TRUTH["n_records"]
    assert len(camp.rejected) == 1
    assert "199999" in camp.rejected[0].reason and "below the horizon" in camp.rejected[0].reason


@pytest.mark.parametrize("spot, noise_key", [("helios", "noise_mrad"), ("UTIS", "utis_noise_mrad")])
def test_fit_recovers_truth_and_reports_loo(spot, noise_key):
    camp = load_paint_dir(DATA, spot)
    kin = camp.field.heliostats["AA39"].kinematics
    r = fit_heliostat(kin, camp.observations)
    r = with_cross_validation(kin, camp.observations, r, loo="refit", k=None)
    assert r.success
    for name in r.names:
        # Correct model, Gaussian noise: within 4 σ (P(fail) ≈ 6e-5 per parameter).
        assert abs(r.errors[name] - TRUTH["errors"][name]) < 4 * r.std[name], name
    sigma = TRUTH[noise_key]
    # LOO mean square of the residual norm ≈ 2σ² · χ²₇₂/72 (36 points, 2 axes), inflated
    # by the prediction error (≈ p/n = 22 %): χ²₇₂/72 lies in [0.57, 1.55] with 99.9 %
    # probability, so the RMS lies in [0.75, 1.25·1.1] · √2 σ; bounds [0.7, 1.6] · √2 σ.
    assert 0.7 * math.sqrt(2) * sigma < r.loo_rms_mrad < 1.6 * math.sqrt(2) * sigma


def test_alternative_kinematic_key_spelling_and_errors(tmp_path):
    d = tmp_path / "AA39"
    shutil.copytree(DATA, d)
    props = d / "Properties" / "AA39-heliostat-properties.json"
    p = json.loads(props.read_text())
    kp = p.pop("kinematic_properties")
    for c in "enu":
        kp.pop(f"joint_translation_{c}_1")
    kp["first_joint_translation_u"] = 0.25
    p["kinematic"] = kp
    props.write_text(json.dumps(p))
    kin = load_paint_dir(d).field.heliostats["AA39"].kinematics
    assert kin.axis1_offset_enu_m == (0.0, 0.0, 0.25)
    p["kinematic"]["actuators"][0].pop("increment")
    props.write_text(json.dumps(p))
    with pytest.raises(ValueError, match=r"actuators\[0\]: key 'increment' missing"):
        load_paint_dir(d)
    with pytest.raises(ValueError, match="spot must be one of"):
        load_paint_dir(DATA, "camera")
