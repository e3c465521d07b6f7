"""Campaign planner benchmark: days to calibrate a field, and held-out error on the simulator.

Run:  .venv/bin/python bench/plan.py [--field-size 10000] [--sample 250] [--sim-heliostats 30]
      [--sim-days 4] [--skip-days] [--skip-sim]

Prints one JSON document.

Days to calibrate. A generated mixed field of ``--field-size`` heliostats
(:func:`sim.field.generate_field`, seed 0, Jülich site) with four 6 m × 6 m calibration
targets side by side on the tower (centres 9 m apart, 35 m up), planned from 1 March with
3-minute visits, sun above 15°, 0.2 mrad noise, until every heliostat's expected held-out
error E (:mod:`heliostat.campaign.design`; evaluation sky: the year) is ≤ 0.15 mrad, on 1
target and on 4, with the planner (``design``) and with the naive round-robin (same
stopping rule). To keep the run to minutes the plan is made for a sample of ``--sample``
heliostats (every N/n-th of the layout) that may use n/N of each target's slots, i.e. sees
the whole field's congestion; Jacobians are re-evaluated every 14 days. ``days`` is the
day the last sampled heliostat is done; ``visits_per_heliostat`` the mean. The sample
approximation is checked on a 1,000-heliostat field planned whole (1 target, design).

Simulator check. A generated mixed field of ``--sim-heliostats`` heliostats, one target,
``--sim-days`` days from 1 April: the planner's and round-robin's plans (evaluation sky:
those days) are run through :func:`sim.campaign.simulate_campaign` (clear sky, 0.2 mrad
noise, no frames) with the effects off (truth inside the model: a best case) and all on;
each heliostat is fitted as the campaign runner does (default groups, the suggested
smaller set when the fit asks for it and does no worse); the held-out error is the RMS
over heliostats of the RMS beam error on held-out visits (every 20 min of the same days,
off the plan's times, no measurement noise, same truth and effect draws) of the fitted
model. Target: the planner needs fewer visits for the same or lower held-out error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heliostat.calibration import observations_from_frame  # noqa: E402
from heliostat.calibration.field import Job, run_job  # noqa: E402
from heliostat.calibration.fit import pointing_residuals, resolve_names  # noqa: E402
from heliostat.campaign.plan import PlanSettings, plan_campaign  # noqa: E402
from heliostat.plant import Target  # noqa: E402
from sim.campaign import CampaignSettings, simulate_campaign  # noqa: E402
from sim.effects import Effects  # noqa: E402
from sim.field import draw_truth, generate_field  # noqa: E402

START = "2025-03-01"


def four_target_field(n: int):
    """The generated field with cal1..cal4 on the tower (the receiver dropped)."""
    f = generate_field(n, np.random.default_rng(0))
    cal = f.targets["cal1"]
    targets = {
        f"cal{k + 1}": Target.make(
            f"cal{k + 1}",
            tuple(cal.centre_enu_m + np.array([x, 0.0, 0.0])),
            tuple(cal.u_normal_enu),
            cal.width_m,
            cal.height_m,
            cal.markers,
        )
        for k, x in enumerate((-4.5, 4.5, -13.5, 13.5))
    }
    return replace(f, targets=targets)


def days_to_calibrate(field_size: int, sample: int, worth: float) -> dict:
    full = four_target_field(field_size)
    ids = list(full.heliostats)
    step = max(1, field_size // sample)
    keep = ids[::step]
    f = replace(full, heliostats={h: full.heliostats[h] for h in keep})
    share = len(keep) / field_size
    out: dict = {
        "field_size": field_size,
        "sample": len(keep),
        "capacity_share": share,
        "visit_min": 3,
        "target_error_mrad": 0.15,
        "noise_mrad": 0.2,
        "min_elevation_deg": 15,
        "start": START,
        "evaluation_sky": "year",
        "worth": worth,
        "runs": [],
    }
    for k in (1, 4):
        for policy in ("design", "round-robin"):
            t0 = time.perf_counter()
            s = PlanSettings(
                START,
                3000,
                tuple(f"cal{i + 1}" for i in range(k)),
                policy=policy,
                eval_days=365,
                jacobian_every_days=14,
                capacity_share=share,
                worth=worth,
            )
            p = plan_campaign(f, s)
            sm = p.summary
            out["runs"].append(
                {
                    "targets": k,
                    "policy": policy,
                    "days": sm["days_used"],
                    "done": sm["done"],
                    "planned": sm["planned"],
                    "unreachable": sm["unreachable"],
                    "visits_per_heliostat": round(sm["visits_per_heliostat_mean"], 2),
                    "field_visits_estimate": round(sm["visits"] / share),
                    "expected_error_mrad_max": round(sm["expected_error_mrad_max"], 4),
                    "wall_s": round(time.perf_counter() - t0, 1),
                }
            )
            print(json.dumps(out["runs"][-1]), file=sys.stderr, flush=True)
    return out


def sampling_check(field_size: int, sample: int) -> dict:
    """The sample approximation on a field small enough to plan whole: days and visits
    per heliostat of the full plan against the sample's with the capacity share."""
    full = four_target_field(field_size)
    ids = list(full.heliostats)
    keep = ids[:: max(1, field_size // sample)]
    sub = replace(full, heliostats={h: full.heliostats[h] for h in keep})
    out = {"field_size": field_size, "sample": len(keep), "targets": 1, "policy": "design"}
    for label, f, share in (("full", full, 1.0), ("sampled", sub, len(keep) / field_size)):
        s = PlanSettings(
            START, 3000, ("cal1",), eval_days=365, jacobian_every_days=14, capacity_share=share
        )
        sm = plan_campaign(f, s).summary
        out[label] = {
            "days": sm["days_used"],
            "visits_per_heliostat": round(sm["visits_per_heliostat_mean"], 2),
        }
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def fit_like_runner(kin, obs):
    r = run_job(Job(kin, obs, resolve_names(kin.drive)))
    if r.suggested_names:
        r2 = run_job(Job(kin, obs, tuple(r.suggested_names)))
        if r2.success and (not r.success or r2.loo_rms_mrad <= 1.05 * r.loo_rms_mrad):
            r = r2
    return r


def heldout_schedule(f, days: int, start: str) -> pd.DataFrame:
    t0 = pd.Timestamp(start, tz="UTC")
    times = [t0 + pd.Timedelta(days=d, minutes=10 + 20 * k) for d in range(days) for k in range(72)]
    rows = [(h, t) for t in times for h in f.heliostats]
    return pd.DataFrame(
        {"heliostat_id": [r[0] for r in rows], "time_utc": pd.DatetimeIndex([r[1] for r in rows])}
    )


def simulator_check(n: int, days: int, worth: float) -> dict:
    start = "2025-04-01"
    f = generate_field(n, np.random.default_rng(1))
    truth = draw_truth(f, np.random.default_rng(2))
    out: dict = {
        "heliostats": n,
        "days": days,
        "start": start,
        "noise_mrad": 0.2,
        "worth": worth,
        "runs": [],
    }
    plans = {}
    for policy in ("design", "round-robin"):
        s = PlanSettings(start, days, ("cal1",), policy=policy, worth=worth)
        plans[policy] = plan_campaign(f, s)
    for label, eff in (("none", Effects.none()), ("all", Effects.realistic())):
        base = CampaignSettings(
            start_date=start,
            days=days,
            noise_mrad=0.2,
            cloudiness=0.0,
            frame_heliostats=0,
            min_elevation_deg=14.9,
            effects=eff,
        )
        held = simulate_campaign(
            f,
            truth,
            replace(base, noise_mrad=0.0),
            7,
            schedule=heldout_schedule(f, days, start),
        ).observations
        held_obs, _ = observations_from_frame(held, f)
        for policy, plan in plans.items():
            res = simulate_campaign(f, truth, base, 7, schedule=plan.schedule_frame("cal1"))
            obs, _ = observations_from_frame(res.observations, f)
            per = []
            fails = 0
            for hid, h in f.heliostats.items():
                if hid not in obs or hid not in held_obs:
                    fails += 1
                    continue
                r = fit_like_runner(h.kinematics, obs[hid])
                if not r.success:
                    fails += 1
                    continue
                e = pointing_residuals(h.kinematics, held_obs[hid], r.errors)
                per.append(float(np.sqrt(np.mean(e**2))))
            out["runs"].append(
                {
                    "effects": label,
                    "policy": policy,
                    "visits": len(res.observations),
                    "planned_visits": len(plan.visits),
                    "plan_days_used": plan.summary["days_used"],
                    "expected_error_mrad_max": round(plan.summary["expected_error_mrad_max"], 4),
                    "heldout_rms_mrad": round(math.sqrt(np.mean(np.square(per))), 4),
                    "heldout_worst_mrad": round(max(per), 4),
                    "failed_fits": fails,
                }
            )
            print(json.dumps(out["runs"][-1]), file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--field-size", type=int, default=10000)
    ap.add_argument("--sample", type=int, default=250)
    ap.add_argument("--sim-heliostats", type=int, default=30)
    ap.add_argument("--sim-days", type=int, default=4)
    ap.add_argument("--worth", type=float, default=0.5)
    ap.add_argument("--skip-days", action="store_true")
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--skip-sampling-check", action="store_true")
    a = ap.parse_args()
    out: dict = {"bench": "plan"}
    if not a.skip_sim:
        out["simulator"] = simulator_check(a.sim_heliostats, a.sim_days, a.worth)
    if not a.skip_days:
        out["days_to_calibrate"] = days_to_calibrate(a.field_size, a.sample, a.worth)
    if not a.skip_sampling_check:
        out["sampling_check"] = sampling_check(1000, a.sample)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
