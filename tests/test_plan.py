"""The campaign planner: design criterion, field schedule, plan file, ``heliostat plan``."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heliostat.calibration.fit import COND_WARN, Problem, identifiability, resolve_names
from heliostat.calibration.observations import Observations
from heliostat.campaign import design as D
from heliostat.campaign.plan import PlanSettings, plan_campaign
from heliostat.campaign.plan_file import (
    check_occupancy,
    load_plan,
    plan_from_dict,
    plan_to_dict,
    write_plan,
)
from heliostat.cli import main
from heliostat.config import load_field
from heliostat.errors import InputError
from heliostat.plant import Target
from heliostat.sun import sun_position

FIELD = load_field(Path(__file__).resolve().parent / "data" / "field_small.toml")
TARGET = FIELD.targets["cal1"]
SITE = FIELD.site


def _sun(times) -> np.ndarray:
    sp = sun_position(SITE, pd.DatetimeIndex(times))
    assert np.all(sp.elevation_rad > math.radians(15.0))
    return sp.u_sun_enu


def _jac(hid: str, sun: np.ndarray) -> np.ndarray:
    h = FIELD.heliostats[hid]
    names = resolve_names(h.kinematics.drive)
    off = (TARGET.centre_enu_m - h.position_enu_m)[None]
    return D.pointing_jacobians(h.kinematics, names, off, sun)[0]


# ----------------------------------------------------------------- the criterion
def test_expected_error_of_a_hand_made_design():
    # p = 2, each visit measures both parameters directly (J = I), sigma = 1, M = I and a
    # negligible prior: C = I/n, so E^2 = tr(C M) = 2/n exactly (up to the 1e-12 prior).
    jac = np.repeat(np.eye(2)[None], 8, axis=0)
    cov = D.posterior(jac, 1.0, np.full(2, 1e-12))
    assert D.expected_error_mrad(cov, np.eye(2)) == pytest.approx(math.sqrt(2 / 8), rel=1e-9)


def test_rank_two_update_matches_the_batch_posterior():
    rng = np.random.default_rng(3581253341)
    j = rng.normal(size=(7, 2, 5))
    m = rng.normal(size=(5, 5))
    m = m @ m.T
    prior = np.full(5, 0.3)
    c6 = D.posterior(j[:6], 0.2, prior)
    c7 = D.posterior(j, 0.2, prior)
    # Woodbury (Eq. 3) against a fresh inverse: both are exact; 1e-9 relative covers
    # the round-off of two 5x5 inversions of a matrix with condition < 1e4.
    np.testing.assert_allclose(D.add_visit(c6, j[6], 0.2), c7, rtol=1e-9, atol=1e-12)
    gain = D.expected_error_mrad(c6, m) ** 2 - D.expected_error_mrad(c7, m) ** 2
    assert D.visit_gain(c6, j[6], m, 0.2) == pytest.approx(gain, rel=1e-9)


def test_visits_at_one_sun_position_are_singular_spread_ones_are_not():
    noon = pd.Timestamp("2025-04-01T11:30:00Z")
    same = _jac("H001", _sun([noon] * 12))
    days = [pd.Timestamp(f"2025-{m:02d}-21T00:00Z") for m in (3, 6, 9)]
    spread = _jac(
        "H001", _sun([d + pd.Timedelta(hours=h) for d in days for h in (8.5, 10.5, 12.5, 14.5)])
    )
    names = resolve_names("azel")
    # one sun position gives 2 independent residuals, whatever the number of visits
    assert np.linalg.matrix_rank(same.reshape(-1, len(names)), tol=1e-6 * np.abs(same).max()) == 2
    assert identifiability(same.reshape(-1, len(names)), names)[0] > 1e10
    # spread visits: far from singular (the six angular terms of an az-el drive stay
    # correlated, condition ~600 even over three seasons: above the fit's warning level
    # COND_WARN, but ten orders of magnitude below the singular case)
    assert identifiability(spread.reshape(-1, len(names)), names)[0] < 10 * COND_WARN
    sky = _jac("H001", _sun([d + pd.Timedelta(hours=h) for d in days for h in range(9, 15)]))
    m = D.sky_moment(sky[None])[0]
    prior = D.prior_precision(names)
    e_same = D.expected_error_mrad(D.posterior(same, 0.2, prior), m)
    e_spread = D.expected_error_mrad(D.posterior(spread, 0.2, prior), m)
    # the unobserved directions stay at the 10 mrad prior: E of order mrad, against
    # ~0.2 * sqrt(p / n) = 0.14 mrad for the spread design
    assert e_same > 1.0 and e_spread < 0.3


def test_jacobian_of_the_planner_matches_the_fit_at_the_exact_aim():
    times = pd.date_range("2025-04-01T07:00Z", "2025-04-01T15:00Z", freq="2h")
    sun = _sun(times)
    for hid in ("H001", "AA39"):
        h = FIELD.heliostats[hid]
        names = resolve_names(h.kinematics.drive)
        steps = np.rint(h.kinematics.inverse(TARGET.centre_enu_m[None], sun))
        n = len(sun)
        obs = Observations(
            hid,
            sun,
            steps.astype(np.int64),
            np.tile(TARGET.centre_enu_m, (n, 1)),
            np.tile(TARGET.centre_enu_m, (n, 1)),
            np.tile(TARGET.u_normal_enu, (n, 1)),
            ("cal1",) * n,
            np.full(n, np.nan),
            np.arange(n),
            ("",) * n,
        )
        exact = Problem(h.kinematics, obs, names).jac(np.zeros(len(names))).reshape(n, 2, -1)
        # the planner aims from the pivot, not the mirror centre (offset/range ~ 2e-3
        # rad in the steps): J moves by that order, relative to its largest entry
        np.testing.assert_allclose(_jac(hid, sun), exact, atol=5e-3 * np.abs(exact).max())


def test_greedy_design_beats_visits_in_time_order():
    times = pd.date_range("2025-04-01T05:30Z", "2025-04-01T16:30Z", freq="15min")
    sp = sun_position(SITE, times)
    sun = sp.u_sun_enu[sp.elevation_rad > math.radians(15)]
    j = _jac("H001", sun)
    names = resolve_names("azel")
    m = D.sky_moment(j[None])[0]
    prior = D.prior_precision(names)
    chosen, err = D.greedy_design(j, m, 0.2, prior, 0.15, 200)
    assert err <= 0.15
    # the same number of visits taken evenly through the day does worse
    even = np.linspace(0, len(sun) - 1, len(chosen)).round().astype(int)
    assert D.expected_error_mrad(D.posterior(j[even], 0.2, prior), m) > err


# ----------------------------------------------------------------- the schedule
def _two_target_field():
    t2 = Target.make(
        "cal2",
        tuple(TARGET.centre_enu_m + np.array([8.0, 0.0, 0.0])),
        tuple(TARGET.u_normal_enu),
        TARGET.width_m,
        TARGET.height_m,
    )
    return replace(FIELD, targets={"cal1": TARGET, "cal2": t2})


@pytest.fixture(scope="module")
def plans():
    f = _two_target_field()
    out = {}
    for policy in ("design", "round-robin"):
        s = PlanSettings("2025-04-01", 3, ("cal1", "cal2"), visit_s=300.0, policy=policy)
        out[policy] = (s, plan_campaign(f, s, "field_small.toml"))
    return f, out


def test_schedule_respects_occupancy_and_the_sun_limit(plans):
    f, out = plans
    for s, plan in out.values():
        assert plan.visits
        check_occupancy(plan.visits, s.visit_s)  # raises on any overlap
        start = pd.DatetimeIndex([v.start_utc for v in plan.visits])
        for frac in (0.0, 0.5, 1.0):  # the sun stays above the limit through the visit
            t = start + pd.Timedelta(seconds=frac * s.visit_s)
            assert np.all(sun_position(f.site, t).elevation_rad >= s.min_elevation_rad)
        for v in plan.visits:
            assert v.target_id == plan.heliostats[v.heliostat_id].target_id
            # whole slots from midnight
            assert (v.start_utc - v.start_utc.normalize()).total_seconds() % s.visit_s == 0
        # at most one visit per heliostat per 15-min bin
        bins = [(v.heliostat_id, v.start_utc.floor("15min")) for v in plan.visits]
        assert len(bins) == len(set(bins))
        # both targets are used, each heliostat on one
        assert {h.target_id for h in plan.heliostats.values()} == {"cal1", "cal2"}


def test_every_heliostat_reaches_the_target_error_and_design_needs_fewer_visits(plans):
    _, out = plans
    for _s, plan in out.values():
        assert all(h.done for h in plan.heliostats.values())
        for hid, h in plan.heliostats.items():
            assert h.visits == sum(v.heliostat_id == hid for v in plan.visits)
            assert h.expected_error_mrad <= plan.target_error_mrad
    assert len(out["design"][1].visits) < len(out["round-robin"][1].visits)


def test_a_capacity_share_leaves_the_other_slots_free():
    s = PlanSettings("2025-04-01", 2, ("cal1",), capacity_share=1 / 3)
    plan = plan_campaign(FIELD, s)
    per_bin = pd.Series([v.start_utc.floor("15min") for v in plan.visits]).value_counts()
    # 5 slots of 3 min per 15-min bin, a third of them: at most 2 in any bin (the
    # fractions carry over), and on average at most 5/3 in the bins used
    assert per_bin.max() <= 2
    assert len(plan.visits) <= 5 * len(per_bin) / 3 + 1


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"policy": "random"}, "policy must be one of design, round-robin"),
        ({"visit_s": 420.0}, "bin_s must be a whole number of visits"),
        ({"days": 0}, "days must be an integer"),
        ({"target_error_mrad": math.nan}, "target_error_mrad must be positive"),
        ({"worth": 1.5}, r"worth must lie in \[0, 1\]"),
        ({"target_ids": ()}, "at least one target"),
    ],
)
def test_bad_settings_are_refused_by_name(kw, match):
    base = {"start_date": "2025-04-01", "days": 1, "target_ids": ("cal1",)}
    with pytest.raises(ValueError, match=match):
        PlanSettings(**{**base, **kw})


def test_plan_file_round_trip(plans, tmp_path):
    _, out = plans
    plan = out["design"][1]
    path = tmp_path / "plan.json"
    write_plan(plan, path)
    back = load_plan(path)
    assert plan_to_dict(back) == plan_to_dict(plan)
    assert back.visits[0].start_utc == plan.visits[0].start_utc
    frame = back.schedule_frame("cal2")
    assert set(frame["target_id"]) == {"cal2"}
    assert len(frame) == sum(v.target_id == "cal2" for v in plan.visits)


def test_bad_plan_files_name_the_key(plans, tmp_path):
    _, out = plans
    doc = plan_to_dict(out["design"][1])
    with pytest.raises(InputError, match="key 'format'"):
        plan_from_dict({**doc, "format": "other/1"}, "p.json")
    v0 = doc["visits"][0]
    clash = {**doc, "visits": [v0, {**v0, "heliostat": "other"}]}
    with pytest.raises(InputError, match=r"visits\[1\] and visits\[0\] hold target"):
        plan_from_dict(clash, "p.json")
    with pytest.raises(InputError, match=r"visits\[0\]: key 'start_utc'.*timezone"):
        plan_from_dict({**doc, "visits": [{**v0, "start_utc": "2025-04-01T10:00:00"}]}, "p")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json: not JSON"):
        load_plan(bad)


# ----------------------------------------------------------------- the command
def test_cli_plans_a_small_field(tmp_path, capsys):
    field = Path(__file__).resolve().parent / "data" / "field_small.toml"
    out = tmp_path / "plan.json"
    argv = ["plan", "--field", str(field), "--start", "2025-04-01", "--days", "2"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    plan = load_plan(out)
    assert s["visits"] == len(plan.visits) and s["done"] == 3
    assert set(plan.heliostats) == set(FIELD.heliostats)
    assert main([*argv, "--out", str(out)]) == 0
    assert "all done in" in capsys.readouterr().out
    assert main([*argv, "--targets", "2", "--out", str(out)]) == 2
    assert "--targets 2: the field has 1 target(s)" in capsys.readouterr().err
    assert main([*argv, "--groups", "nope", "--out", str(out)]) == 2
    assert "--groups" in capsys.readouterr().err


# ----------------------------------------------------------------- consumers
def test_campaign_visits_at_the_planned_times(tmp_path):
    """``heliostat campaign --plan``: every observation is a planned visit, taken inside
    its window, keyed by the plan's start; nothing outside the plan is visited."""
    import argparse
    import io
    from contextlib import redirect_stdout

    from heliostat.campaign import History
    from heliostat.commands import campaign as campaign_cmd
    from sim.plant import make_sim_plant

    sp = make_sim_plant(tmp_path / "plant", n=2)
    try:
        plant = sp.plant()
        s = PlanSettings("2025-04-01", 1, (plant.target.id,), visit_s=300.0)
        plan = plan_campaign(plant.field, s)
        path = tmp_path / "plan.json"
        write_plan(plan, path)
        clock = sp.utc_clock("2025-04-01T05:30:00Z")
        p = argparse.ArgumentParser(prog="heliostat")
        campaign_cmd.register(p.add_subparsers(dest="command"))
        argv = ["campaign", "--config", str(sp.plant_toml), "--plan", str(path)]
        args = p.parse_args([*argv, "--max-visits", "5", "--no-corrections", "--json"])
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert campaign_cmd.run(args, clock=clock, source=sp.source(clock)) == 0
        summary = json.loads(buf.getvalue())
        assert summary["visits"] == 5
        with History(plant.history_db, readonly=True) as h:
            obs = h.observations()
        planned = {(v.heliostat_id, v.start_utc) for v in plan.visits}
        first5 = sorted(planned, key=lambda k: k[1])[:5]
        got = [
            (hid, pd.Timestamp(slot), pd.Timestamp(t))
            for hid, slot, t in zip(
                obs["heliostat_id"], obs["slot_utc"], obs["time_utc"], strict=True
            )
        ]
        assert {(hid, slot) for hid, slot, _ in got} == set(first5)
        for _hid, slot, t in got:  # the frame is taken inside the visit's window
            assert slot <= t < slot + pd.Timedelta(seconds=s.visit_s)
        # a dry run lists the next planned visits
        args = p.parse_args([*argv, "--dry-run", "--json"])
        buf = io.StringIO()
        with redirect_stdout(buf):
            assert campaign_cmd.run(args, clock=clock) == 0
        nxt = json.loads(buf.getvalue())["next_planned"]
        assert nxt and all(pd.Timestamp(v["start_utc"]) > first5[-1][1] for v in nxt)
    finally:
        sp.stop()


def test_sim_campaign_takes_the_plan(tmp_path, capsys):
    field = Path(__file__).resolve().parent / "data" / "field_small.toml"
    plan_path = tmp_path / "plan.json"
    argv = ["plan", "--field", str(field), "--start", "2025-04-01", "--days", "2"]
    assert main([*argv, "--out", str(plan_path)]) == 0
    capsys.readouterr()
    plan = load_plan(plan_path)
    out = tmp_path / "sim"
    sim = ["sim", "campaign", "--field", str(field), "--out", str(out), "--json"]
    assert (
        main([*sim, "--plan", str(plan_path), "--frame-heliostats", "0", "--cloudiness", "0"]) == 0
    )
    man = json.loads(capsys.readouterr().out)
    assert man["plan"] == {"file": "plan.json", "policy": "design", "visits": len(plan.visits)}
    assert man["settings"]["start_date"] == "2025-04-01" and man["settings"]["days"] == 2
    obs = pd.read_csv(out / "observations.csv")
    # clear sky, reachable, sun above the plan's limit: every planned visit is observed,
    # at its start time
    want = sorted((v.heliostat_id, v.start_utc) for v in plan.visits)
    got = sorted(zip(obs["heliostat_id"], pd.to_datetime(obs["time_utc"], utc=True), strict=True))
    assert got == want
    # a plan for another target is refused with the reason
    doc = plan_to_dict(plan)
    doc["targets"] = ["cal9"]
    doc["visits"] = [{**v, "target": "cal9"} for v in doc["visits"]]
    plan_path.write_text(json.dumps(doc))
    assert main([*sim, "--plan", str(plan_path)]) == 2
    assert "target 'cal9' is not in the field" in capsys.readouterr().err
