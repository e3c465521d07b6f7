"""``heliostat history`` on a plant-sized history database (JSON on stdout).

Builds a history database of ``--heliostats`` heliostats (``--observations`` each, two
fits each, one correction and its delivery each, a skipped visit for one in ten), then
times:

* ``overview``: the whole-field table of ``heliostat history`` (what it prints with no
  ``--heliostat``), and the CLI end to end (``heliostat history --json``, in-process);
* ``heliostat_record``: one heliostat's record (``heliostat history --heliostat ID``);
* the baseline measured in the same run: the overview built the way it was before,
  per heliostat a listing of every heliostat (the old membership check) and its
  :func:`heliostat_record`, on a sample of ``--sample`` heliostats, its time per
  heliostat scaled to the field (the whole loop would take hours at 10,000).

    .venv/bin/python bench/history.py --heliostats 10000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build(path: Path, n_heliostats: int, n_obs: int, seed: int = 0) -> dict:
    """Write a campaign history of ``n_heliostats``; returns the table sizes."""
    from heliostat.campaign.history import OBS_COLUMNS, History

    rng = np.random.default_rng(seed)
    ids = [f"H{i + 1:05d}" for i in range(n_heliostats)]
    t0 = np.datetime64("2026-03-01T08:00:00")
    with History(path) as h, h.con:
        obs = []
        for k in range(n_obs):
            t = str(t0 + np.timedelta64(k * 3600 * 7, "s")) + "Z"
            az, el = float(rng.uniform(90, 270)), float(rng.uniform(15, 70))
            for hid in ids:
                row = {
                    "heliostat_id": hid,
                    "slot_utc": t,
                    "time_utc": t,
                    "sun_azimuth_deg": az,
                    "sun_elevation_deg": el,
                    "axis1_steps": 1000 + k,
                    "axis2_steps": 40000 + k,
                    "target_id": "cal1",
                    "spot_x_m": 0.01,
                    "spot_y_m": -0.02,
                    "spot_e_m": 0.0,
                    "spot_n_m": 0.0,
                    "spot_u_m": 50.0,
                    "sigma_m": 0.005,
                    "quality_flags": "",
                    "frame": "",
                    "dark_frame": "",
                    "run_id": "bench",
                }
                obs.append(tuple(row[c] for c in OBS_COLUMNS))
        h.con.executemany(
            f"INSERT INTO campaign_observations ({', '.join(OBS_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(OBS_COLUMNS))})",
            obs,
        )
        h.con.executemany(
            "INSERT INTO campaign_visits (heliostat_id, slot_utc, time_utc, outcome, detail)"
            " VALUES (?, '2026-02-01T08:00:00Z', '2026-02-01T08:00:00Z', 'no_spot', '')",
            [(hid,) for hid in ids[::10]],
        )
        params = json.dumps({"axis1_zero_rad": 1e-3, "axis2_zero_rad": -5e-4})
        std = json.dumps({"axis1_zero_rad": 1e-5, "axis2_zero_rad": 1e-5})
        names = json.dumps(["axis1_zero_rad", "axis2_zero_rad"])
        fits = []
        for k, when in enumerate(("2026-03-05T12:00:00Z", "2026-03-09T12:00:00Z")):
            for i, hid in enumerate(ids):
                prev = i + 1 if k else None  # fit ids: the first round is 1..n
                fits.append(
                    (hid, when, "azel", 1, n_obs, 1, names, params, std, 3.0, 0.5, 0.6, prev)
                    + ((0.2, 0.4) if k else (None, None))
                )
        h.con.executemany(
            "INSERT INTO campaign_fits (heliostat_id, time_utc, drive, success, n_points,"
            " last_observation_id, names, parameters, parameter_std, rms_before_mrad,"
            " rms_after_mrad, loo_rms_mrad, previous_fit_id, pointing_change_rms_mrad,"
            " pointing_change_max_mrad) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            fits,
        )
        h.con.executemany(
            "INSERT INTO campaign_corrections (fit_id, heliostat_id, created_utc,"
            " updated_utc, state) VALUES (?, ?, '2026-03-09T13:00:00Z',"
            " '2026-03-09T13:00:00Z', 'sent')",
            [(n_heliostats + i + 1, hid) for i, hid in enumerate(ids)],
        )
        h.con.executemany(
            "INSERT INTO campaign_deliveries (correction_id, heliostat_id, time_utc, port,"
            " address, command_id, state, attempts) VALUES (?, ?, '2026-03-09T13:00:01Z',"
            " '/dev/ttyUSB0', ?, ?, 'confirmed', 1)",
            [(i + 1, hid, 1 + i % 32, 1000 + i) for i, hid in enumerate(ids)],
        )
    return {
        "heliostats": n_heliostats,
        "observations": n_heliostats * n_obs,
        "fits": 2 * n_heliostats,
        "file_mb": round(os.path.getsize(path) / 2**20, 1),
    }


def _time(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heliostats", type=int, default=10_000)
    ap.add_argument("--observations", type=int, default=30, help="per heliostat")
    ap.add_argument("--sample", type=int, default=100, help="heliostats of the baseline")
    args = ap.parse_args(argv)
    from heliostat.campaign.history import History, heliostat_record, overview
    from heliostat.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "history.sqlite"
        t0 = time.perf_counter()
        res: dict = {"db": build(db, args.heliostats, args.observations)}
        res["build_s"] = round(time.perf_counter() - t0, 2)
        with History(db, readonly=True) as h:
            ids = h.heliostat_ids()
            t_over, rows = _time(lambda: overview(h))
            one = ids[len(ids) // 2]
            t_one, _ = _time(lambda: heliostat_record(h, one), repeat=5)
            sample = ids[:: max(1, len(ids) // args.sample)][: args.sample]
            # before: per heliostat, the membership check listed every heliostat
            # (``hid in hist.heliostat_ids()``), then its record was read
            t_base, _ = _time(
                lambda: [(i in h.heliostat_ids(), heliostat_record(h, i)) for i in sample]
            )
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            t_cli, rc = _time(lambda: cli(["history", "--db", str(db), "--json"]))
        n_cli = len(json.loads(buf.getvalue())["heliostats"])
        with contextlib.redirect_stdout(io.StringIO()):
            t_text, _ = _time(lambda: cli(["history", "--db", str(db)]))
    per = t_base / len(sample)
    res.update(
        overview_s=round(t_over, 3),
        overview_rows=len(rows),
        cli_history_json_s=round(t_cli, 3),
        cli_history_text_s=round(t_text, 3),
        cli_rc=rc,
        cli_rows=n_cli,
        heliostat_record_s=round(t_one, 4),
        baseline_per_heliostat_loop_s_per_heliostat=round(per, 5),
        baseline_sample=len(sample),
        # the loop's time per heliostat grows with the field (each record re-lists every
        # heliostat): measured on a sample of this field, scaled to all of it
        baseline_per_heliostat_loop_field_s_scaled=round(per * len(ids), 1),
        speedup_vs_loop=round(per * len(ids) / t_over, 1),
    )
    json.dump(res, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
