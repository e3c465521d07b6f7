"""Simulated campaigns (sim/campaign.py) and ``heliostat sim campaign``."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from heliostat.cli import main
from heliostat.config import load_camera, load_field
from heliostat.frames import azel_to_enu, intersect_plane, normalize, reflect
from sim.campaign import (
    CampaignSettings,
    Seeds,
    plan_schedule,
    simulate_campaign,
    write_campaign,
)
from sim.field import draw_truth, generate_field, load_truth
from sim.observe import OBSERVATION_COLUMNS
from sim.reproduce import campaign_differences, stable_float, stable_numbers

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "calibration_data" / "sample"

SEED = 11
SETTINGS = CampaignSettings(days=3, cloudiness=0.3, frame_heliostats=0)


@pytest.fixture(scope="module")
def plant():
    seeds = Seeds.from_seed(SEED)
    field_cfg = generate_field(8, np.random.default_rng(seeds.layout), drives="mixed")
    truth = draw_truth(field_cfg, np.random.default_rng(seeds.truth))
    return field_cfg, truth


@pytest.fixture(scope="module")
def result(plant):
    field_cfg, truth = plant
    return simulate_campaign(field_cfg, truth, SETTINGS, SEED)


def test_schedule_one_at_a_time_well_spread(plant):
    field_cfg, _ = plant
    sched = plan_schedule(field_cfg, SETTINGS)
    t = pd.DatetimeIndex(sched["time_utc"])
    assert t.is_monotonic_increasing and t.is_unique  # one heliostat on the target at a time
    assert (t == t.round("s")).all()
    for _, g in sched.groupby("heliostat_id"):
        tt = pd.DatetimeIndex(g["time_utc"])
        assert len(set(tt.date)) == 3
        for _, day in g.groupby(tt.date):
            gaps = day["time_utc"].diff().dt.total_seconds().to_numpy()[1:]
            # rounds every 1.5 h; each slot is rounded to the second
            np.testing.assert_allclose(gaps, 5400.0, atol=1.0)
            assert len(day) >= 6  # ~10.5 h of sun above 10° on 1-3 April at Jülich


def test_counts_add_up(result):
    obs = result.observations
    assert list(obs.columns) == list(OBSERVATION_COLUMNS)
    assert result.scheduled == len(obs) + sum(result.skipped.values())
    assert result.skipped["sun_low"] == 0  # the schedule only uses sunny minutes
    assert len(obs) > 100
    assert set(obs["quality_flags"]) <= {"", "cloud"}
    assert (obs["frame"] == "").all()
    el = obs["sun_elevation_deg"].to_numpy()
    assert el.min() > 10.0


def _reproject(field_cfg, truth, obs, errors_from_truth=True):
    """Target-plane hit of the beam for each row, recomputed from the CSV's steps and sun
    angles with the kinematics (true errors or nominal model)."""
    out = np.empty((len(obs), 2))
    centres = np.empty((len(obs), 3))
    for i, row in enumerate(obs.itertuples(index=False)):
        h = field_cfg.heliostats[row.heliostat_id]
        tgt = field_cfg.targets[row.target_id]
        s = azel_to_enu(np.radians(row.sun_azimuth_deg), np.radians(row.sun_elevation_deg))
        e = truth[row.heliostat_id] if errors_from_truth else None
        pose = h.kinematics.forward([[row.axis1_steps, row.axis2_steps]], e)
        r = reflect(pose.u_normal_enu, s[None, :])
        hit = intersect_plane(pose.centre_enu_m, r, tgt.centre_enu_m, tgt.u_normal_enu)
        out[i] = tgt.enu_to_plane(hit)[0]
        centres[i] = pose.centre_enu_m[0]
    return out, centres


def test_true_spot_is_the_true_model_beam(plant, result):
    field_cfg, truth = plant
    obs = result.observations
    xy, _ = _reproject(field_cfg, truth, obs)
    # the CSV rounds sun angles to 1e-6 deg (1.7e-8 rad, x2 on reflection, x<100 m slant:
    # 3.5 µm) and spots to 1 µm: 1e-5 m covers both
    np.testing.assert_allclose(xy, obs[["true_spot_x_m", "true_spot_y_m"]], atol=1e-5)
    # the true errors (1-3 mrad per term at 30-80 m) move the spot by decimetres
    off = np.hypot(obs["true_spot_x_m"], obs["true_spot_y_m"])
    assert off.median() > 0.05


def test_steps_aim_the_nominal_model_at_the_centre(plant, result):
    field_cfg, truth = plant
    xy, _ = _reproject(field_cfg, truth, result.observations, errors_from_truth=False)
    # rounding to whole steps: az-el 1 step = 1 mdeg = 17.5 µrad per joint, ~50 µrad on the
    # beam, x<100 m = 5 mm; linear steps are finer. 1 cm bounds both.
    assert np.abs(xy).max() < 0.01


def test_measured_spot_noise_matches_model(plant, result):
    field_cfg, truth = plant
    obs = result.observations
    _, centres = _reproject(field_cfg, truth, obs)
    tgt = field_cfg.targets["cal1"]
    true_enu = tgt.plane_to_enu(obs[["true_spot_x_m", "true_spot_y_m"]].to_numpy())
    meas_enu = obs[["spot_e_m", "spot_n_m", "spot_u_m"]].to_numpy()
    np.testing.assert_allclose(
        tgt.enu_to_plane(meas_enu), obs[["spot_x_m", "spot_y_m"]], atol=2e-6
    )  # the two spot columns are the same point (each printed to 1 µm)
    ang = np.linalg.norm(normalize(meas_enu - centres) - normalize(true_enu - centres), axis=1)
    n = len(ang)
    # two independent N(0, σ) beam angles: E[ang²] = 2σ²; the estimate's relative standard
    # error is 1/sqrt(n) (< 8 % for n > 160); 4 standard errors
    ratio = np.mean(ang**2) / (2 * (SETTINGS.noise_mrad * 1e-3) ** 2)
    assert abs(ratio - 1.0) < 4 / np.sqrt(n)
    slant = np.linalg.norm(true_enu - centres, axis=1)
    # sigma_m = noise x slant range, printed to 1 µm on values of ~10 mm
    np.testing.assert_allclose(obs["sigma_m"], SETTINGS.noise_mrad * 1e-3 * slant, rtol=2e-4)


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_differs(plant, tmp_path):
    field_cfg, truth = plant
    s = CampaignSettings(days=1, frame_heliostats=0)
    write_campaign(tmp_path / "a", field_cfg, truth, s, 5)
    write_campaign(tmp_path / "b", field_cfg, truth, s, 5)
    write_campaign(tmp_path / "c", field_cfg, truth, s, 6)
    ha, hb, hc = (_hashes(tmp_path / k) for k in "abc")
    assert set(ha) == {"campaign.json", "field.toml", "truth.json", "observations.csv"}
    assert ha == hb
    assert ha["observations.csv"] != hc["observations.csv"]


def test_written_folder_reads_back(plant, tmp_path):
    field_cfg, truth = plant
    res, man = write_campaign(
        tmp_path, field_cfg, truth, CampaignSettings(days=1, frame_heliostats=0), 5
    )
    back = load_field(tmp_path / "field.toml")
    assert list(back.heliostats) == list(field_cfg.heliostats)
    assert load_truth(tmp_path / "truth.json", back) == truth
    csv = pd.read_csv(tmp_path / "observations.csv", keep_default_na=False)
    assert list(csv.columns) == list(OBSERVATION_COLUMNS)
    assert len(csv) == man["counts"]["observations"] == len(res.observations)
    assert csv["time_utc"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    assert csv["axis1_steps"].dtype == np.int64
    assert man["seed"] == 5 and man["counts"]["heliostats"] == 8


# ----------------------------------------------------------------------------- frames
def test_frames_pngs_and_reproducible(plant, tmp_path):
    field_cfg, truth = plant
    s = CampaignSettings(
        days=1,
        frame_heliostats=2,
        frames_per_heliostat=1,
        camera_width_px=320,
        camera_height_px=256,
    )
    for sub in ("a", "b"):
        write_campaign(tmp_path / sub, field_cfg, truth, s, 9)
    ha, hb = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert ha == hb
    pngs = sorted(k for k in ha if k.endswith(".png"))
    assert len(pngs) == 4 and sum(k.endswith("_dark.png") for k in pngs) == 2
    obs = pd.read_csv(tmp_path / "a" / "observations.csv", keep_default_na=False)
    framed = obs[obs["frame"] != ""]
    # the first visit of each of the first two heliostats
    assert sorted(framed["heliostat_id"]) == ["H001", "H002"]
    for hid, g in obs.groupby("heliostat_id"):
        assert (g["frame"] != "").sum() == (1 if hid in ("H001", "H002") else 0)
        assert hid not in ("H001", "H002") or g["frame"].iloc[0] != ""
    cam = load_camera(tmp_path / "a" / "camera.toml")
    assert (cam.width_px, cam.height_px) == (320, 256)
    for rel in framed["frame"]:
        on = cv2.imread(str(tmp_path / "a" / rel), cv2.IMREAD_UNCHANGED)
        dark = cv2.imread(str(tmp_path / "a" / rel.replace(".png", "_dark.png")), -1)
        assert on.dtype == np.uint16 and on.shape == (256, 320)
        assert on.max() <= 2**cam.bit_depth - 1
        # the spot adds light: the sun-on frame is brighter than its dark frame
        assert on.astype(float).sum() > dark.astype(float).sum() * 1.01


def test_flux_spot_centre_is_the_true_spot(plant, result):
    from heliostat.kinematics import Pose
    from sim.optics import flux_spot

    field_cfg, truth = plant
    obs = result.observations.iloc[::10]
    tgt = field_cfg.targets["cal1"]
    for row in obs.itertuples(index=False):
        h = field_cfg.heliostats[row.heliostat_id]
        s = azel_to_enu(np.radians(row.sun_azimuth_deg), np.radians(row.sun_elevation_deg))
        pose = h.kinematics.forward([[row.axis1_steps, row.axis2_steps]], truth[h.id])
        spot = flux_spot(h, Pose(pose.u_normal_enu, pose.centre_enu_m), s, 900.0, tgt)
        # the optics' central ray and the campaign's truth are the same beam; 1e-5 m covers
        # the CSV's rounding (see test_true_spot_is_the_true_model_beam)
        np.testing.assert_allclose(
            spot.centre_xy_m, [row.true_spot_x_m, row.true_spot_y_m], atol=1e-5
        )


# ----------------------------------------------------------------------------- CLI
def test_cli_bad_field_is_one_line_exit_2(tmp_path, capsys):
    rc = main(["sim", "campaign", "--field", str(tmp_path / "nope.toml"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("heliostat: error:") and "nope.toml" in err and "\n" not in err


def test_cli_refuses_foreign_non_empty_out(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    rc = main(["sim", "campaign", "--heliostats", "2", "--days", "1", "--out", str(tmp_path)])
    assert rc == 2
    assert "holds no campaign.json" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_campaign_on_field_file(tmp_path, capsys):
    out = tmp_path / "c"
    args = ["sim", "campaign", "--field", str(REPO / "tests/data/field_small.toml")]
    args += ["--days", "1", "--frame-heliostats", "0", "--out", str(out), "--json"]
    assert main(args) == 0
    assert '"observations"' in capsys.readouterr().out
    man = (out / "campaign.json").read_text()
    assert '"heliostats": 3' in man
    # running again into the same campaign folder replaces it
    assert main(args) == 0


# ----------------------------------------------------------------------------- sample
def _regeneration_command() -> list[str]:
    """The command in calibration_data/README.md (the line after 'Regenerate')."""
    text = (REPO / "calibration_data" / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("heliostat sim campaign"))
    return shlex.split(line.strip())[1:]


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="calibration_data/sample not generated")
def test_committed_sample_regenerates_with_the_same_content(tmp_path):
    """Same seed, same content on any machine: parsed numbers within the tolerances of
    sim.reproduce (each explained there), frames by pixel statistics - not the same bytes,
    which depend on the CPU's last bits (a camera roll of -2.0e-16 vs -4.0e-16 deg)."""
    args = _regeneration_command()
    i = args.index("--out")
    args[i + 1] = str(tmp_path / "sample")
    assert main(args) == 0
    assert campaign_differences(tmp_path / "sample", SAMPLE) == []


def test_campaign_comparison_sees_a_changed_scene(tmp_path):
    """The content comparison is not blind: a moved spot, a changed number and a changed
    step count are each reported, naming the file."""
    import shutil

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(SAMPLE, a)
    shutil.copytree(SAMPLE, b)
    assert campaign_differences(a, b) == []
    cam = (b / "camera.toml").read_text()
    (b / "camera.toml").write_text(cam.replace("cx_px = 319.5", "cx_px = 319.5001"))
    obs = pd.read_csv(b / "observations.csv", keep_default_na=False)
    obs.loc[3, "axis1_steps"] += 2
    obs.to_csv(b / "observations.csv", index=False)
    frame = next(p for p in sorted(b.rglob("*.png")) if "_dark" not in p.name)
    img = cv2.imread(str(frame), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(frame), np.roll(img, 3, axis=1))  # the spot 3 px to the right
    diffs = campaign_differences(a, b)
    assert any(d.startswith("camera.toml: camera.cx_px") for d in diffs)
    assert any("axis1_steps" in d and "line 5" in d for d in diffs)
    assert any(d.startswith(frame.relative_to(b).as_posix()) for d in diffs)


def test_stable_numbers_remove_round_off():
    # the round-off zero of two CPUs is written as one number; other values keep 12 digits
    assert stable_float(-2.0166e-16) == stable_float(-3.9757e-16) == 0.0
    assert str(stable_float(-0.0)) == "0.0"
    assert stable_float(5543.971908297524) == 5543.97190830
    assert stable_float(5543.971908297524 * (1 + 4e-16)) == 5543.97190830
    assert stable_numbers({"a": [1, 2.0e-17, True], "b": "x"}) == {"a": [1, 0.0, True], "b": "x"}
