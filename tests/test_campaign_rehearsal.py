"""``heliostat campaign --simulate`` (a rehearsal against the plant in a box of
``sim serve``), ``--dry-run --at`` and the reasons a campaign gives for doing nothing.

Ground truth: the hidden true errors the rehearsal draws from its seed (recomputed here),
the sun's elevation from :mod:`heliostat.sun`, and the plant's own files left untouched."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from heliostat.cli import main
from sim.plant import make_sim_plant


@pytest.fixture
def plant_dir(tmp_path):
    """A plant's config folder (plant.toml, field.toml, camera.toml) of 1 heliostat; its
    bus port is a pty that is gone (a rehearsal never opens the plant's ports)."""
    sp = make_sim_plant(tmp_path / "plant", n=1)
    sp.stop()
    return tmp_path / "plant"


def test_a_rehearsed_day_observes_fits_and_beats_the_hidden_truth(plant_dir, capsys):
    from heliostat.campaign import History
    from heliostat.config import load_field
    from heliostat.kinematics import KinematicErrors
    from heliostat.kinematics.pointing import pointing_change
    from sim.serve import draw_or_load_truth

    cfg = str(plant_dir / "plant.toml")
    argv = ["campaign", "--config", cfg, "--simulate", "--start", "2025-04-01T05:30:00Z",
            "--hours", "12", "--seed", "7", "--no-corrections", "--json"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["outcomes"]["observed"] >= 8  # hourly slots with the sun above 15 deg
    assert summary["end_utc"] == "2025-04-01T17:30:00Z"  # the simulated clock, not the host's
    assert "rehearsal of" in err and "against the hidden truth" in err
    reh = plant_dir / "rehearsal"
    assert not (plant_dir / "history.sqlite").exists()  # the plant's history untouched
    assert len(list((reh / "frames" / "H001").glob("*.png"))) == 2 * summary["visits"]
    assert len(list((reh / "incoming").glob("*_on.json"))) == summary["visits"]
    field = load_field(plant_dir / "field.toml")
    truth = draw_or_load_truth(field, None, 7)["H001"]
    with History(reh / "history.sqlite", readonly=True) as h:
        fit = h.last_fit("H001", success_only=True)
    fitted = KinematicErrors.from_dict(fit["drive"], fit["parameters"])
    kin = field.heliostats["H001"].kinematics
    from heliostat.campaign import load_plant

    aim = load_plant(cfg).target.centre_enu_m  # the campaign's aim point
    zero = KinematicErrors.from_dict(fit["drive"], {k: 0.0 for k in fit["parameters"]})
    before = pointing_change(kin, truth, zero, aim).beam_rms_mrad
    after = pointing_change(kin, truth, fitted, aim).beam_rms_mrad
    # one day of observations leaves some parameters poorly identified, but the fitted
    # model must point better than the nominal one against the hidden truth
    assert after < before
    assert f"{after:.4g}" in err  # the table printed after the rehearsal


def test_a_rehearsal_folder_serves_one_simulated_plant(plant_dir, capsys):
    cfg = str(plant_dir / "plant.toml")
    night = ["campaign", "--config", cfg, "--simulate", "--start", "2025-04-01T19:00:00Z",
             "--hours", "2"]  # fmt: skip
    assert main([*night, "--seed", "1"]) == 0
    out, _ = capsys.readouterr()
    # a campaign that does nothing says why, and when it could
    assert "0 visits" in out
    assert "no visits: the sun stayed below the minimum elevation 15 deg" in out
    assert "it next reaches 15 deg at 2025-04-02T06:" in out
    assert main([*night, "--seed", "2"]) == 2
    assert "holds a rehearsal of another simulated plant" in capsys.readouterr().err


def test_dry_run_at_night_says_why_and_when(plant_dir, capsys):
    from heliostat.config import load_field
    from heliostat.sun import sun_position

    cfg = str(plant_dir / "plant.toml")
    assert main(["campaign", "--config", cfg, "--dry-run", "--at", "2025-04-01T02:00:00Z"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("no visits:"))
    assert "the sun is below the minimum elevation 15 deg" in line
    t = pd.Timestamp(line.split("reaches 15 deg at ")[1].split()[0])
    site = load_field(plant_dir / "field.toml").site
    el = np.degrees(
        sun_position(site, pd.DatetimeIndex([t - pd.Timedelta("1min"), t])).elevation_rad
    )
    assert el[0] < 15.0 <= el[1]  # the first minute at or above the threshold
    assert not (plant_dir / "history.sqlite").exists()


def test_dry_run_at_another_time_plans_the_visits(plant_dir, capsys):
    from heliostat.campaign.schedule import on_target_steps
    from heliostat.config import load_field
    from heliostat.sun import sun_position

    cfg = str(plant_dir / "plant.toml")
    at = "2025-04-01T10:10:00Z"
    assert main(["campaign", "--config", cfg, "--dry-run", "--at", at, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["time_utc"] == at and "idle_reason" not in plan
    (row,) = plan["visits"]
    field = load_field(plant_dir / "field.toml")
    u = sun_position(field.site, pd.DatetimeIndex([pd.Timestamp(at)])).u_sun_enu
    h = field.heliostats["H001"]
    target = next(t for t in field.targets.values() if t.markers is not None)
    assert row["action"] == "visit"
    assert tuple(row["on_steps"]) == tuple(
        int(v) for v in on_target_steps(h, target.centre_enu_m, u)
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--at", "2025-04-01T10:00:00Z"], "--at previews a plan: use it with --dry-run"),
        (["--dry-run", "--at", "2025-04-01T10:00:00"], "has no timezone"),
        (["--start", "2025-04-01T10:00:00Z"], "--start is for a rehearsal: add --simulate"),
        (["--simulate", "--dry-run"], "use one of them"),
        (["--simulate", "--served", "nowhere/served.json"], "not found (is `sim serve` running?)"),
        (["--served", "served.json"], "--served is for a rehearsal: add --simulate"),
    ],
)
def test_misused_options_are_one_line_errors(plant_dir, capsys, extra, message):
    assert main(["campaign", "--config", str(plant_dir / "plant.toml"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
