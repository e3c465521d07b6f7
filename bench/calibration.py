"""Calibration benchmark: accuracy against simulator truth, and speed.

Run:  .venv/bin/python bench/calibration.py [--seeds 40] [--field-size 10000] [--sample 200]
      [--effects-seeds 10] [--skip-accuracy] [--skip-effects] [--skip-speed] [--select]
      [--stream-size 173500 --chunk 10000]
      [--build-db 173500 --db PATH --chunk 10000] [--stream-from-db PATH --chunk 10000]

Prints one JSON document.

Accuracy. For each seed a heliostat of ``tests/data/field_small.toml`` (az-el H001 and
linear AA39) gets true errors (``sim.observe.draw_true_errors``, angular terms 1-3 mrad,
strokes 0.5 mm, translations zero so the true parameter set is exactly the default groups)
and a campaign of 30 observations over 5 days (6 a day, 07:00-15:20 UTC, from 1 March),
beam-direction noise 0.2 mrad per axis. The pointing error is measured on held-out sun
positions (the same 5 days, every 20 min from 06:10 to 16:50 UTC, sun above 10°, none of
the campaign times): the fitted model's inverse aims at the target centre, the true model
reflects the sun, and the error is the angle between that beam and the direction from the
true mirror centre to the aim point; RMS over held-out times, then RMS over seeds.

The floor: ordinary least squares (no robust stage, no outlier rejection) over exactly the
true parameter set on the clean campaign, i.e. the fit with perfect knowledge of which
parameters matter and of the noise model. (The pipeline can beat it: an identifiable
subset of the true set points as well with less variance.) Cross-check: the analytic
expectation of the same quantity from the Jacobian at the truth, E|e|² = tr(J_h (JᵀJ)⁻¹ J_hᵀ σ²)/M
(J: campaign, J_h: held-out beam directions, σ = 0.2 mrad).

The pipeline: ``calibrate_heliostat`` defaults (parameter set chosen by nested
cross-validation, robust first stage, outlier rejection, final least squares; before
issue 17 it was ``fit_heliostat`` of the default set), on the clean campaign and on the
campaign with 5 % gross outliers (2 of 30 rows with 5-30 mrad extra beam error in a
random direction).

Effects (the floor, issue 17). The same two heliostats on the realistic simulator
(:mod:`sim.effects`, :mod:`sim.floor`): true errors as ``heliostat sim`` draws them
(``draw_true_errors`` defaults, translations included), a clean-sky campaign of 4 days
every 1.5 h (sun above 10°, 0.2 mrad noise), held out the 2 following days every 20 min
(sun above 15°). Per drive type and per effect switched on alone, plus none and all: RMS
over seeds of the held-out RMS beam error of the nominal model, our pipeline
(``calibrate_heliostat`` defaults; a fitted backlash aimed for each held-out move's
direction, as the world moves visit to visit) and the oracle (MAP fit of the true model
family, :func:`sim.floor.fit_oracle`), with the held-out visits' wind jitter and encoder
quantisation (``*_mrad``, what a plant measures) and without them (``*_static_mrad``,
the part a calibration can act on); ``pipeline_over_oracle`` is the ratio of the static
figures, ``pipeline_over_oracle_measured`` that of the measured ones. Targets of issue
17 (0.2 mrad noise, all effects): ≤ 0.6 mrad, aiming at ≤ 0.3, and within 15 % of the
oracle.

Speed (issue 19). ``--field-size N`` heliostats (``--heliostat``: AA39's linear drive,
default, or H001's az-el drive, moved to pivots
within ±40 m E, ±20 m N, each with its own true errors; the campaign above, image-free,
generated for the whole field at once: :func:`sim.observe.simulate_field_observations`)
are fitted as a field by ``calibrate_field`` (batched fits, robust stage, hat-matrix
LOO; ``--workers`` processes, 1 = in this process): ``field_wall_s``, ``field_cpu_s``
(this process and its workers), ``peak_rss_mb`` (the largest resident set of this
process or of any worker). The baseline is the per-heliostat loop (``fit_heliostat`` +
hat LOO, one process) on the first ``--sample`` heliostats in the same run;
``speedup_vs_loop`` = the loop's time per heliostat × N / ``field_wall_s``. Agreement:
the largest parameter difference between the two on the sample, in standard errors.

Selection (``--select``). The same field, calibrated as ``heliostat calibrate`` does
by default: each heliostat's parameter set chosen by nested cross-validation
(``calibrate_heliostat``: candidate ladder, hat-matrix leave-one-out, sky check, 5 outer
folds, robust final fit), batched by ``calibrate_field``
(:mod:`heliostat.calibration.selection_batch`). Same keys as the fixed-set figure; the
loop is ``calibrate_heliostat`` on the first ``--sample`` heliostats; ``same_set_as_loop``
counts the sample's heliostats given the same set, with the largest parameter difference
in standard errors and the largest relative difference of the nested error. ``--loo
refit --kfold 5`` adds the final fits' refit cross-validation of the CLI's defaults
(batched too: :mod:`heliostat.calibration.crossval_batch`).

Streaming (issue 19, Ivanpah's 173,500 heliostats): ``--stream-size N`` heliostats in
chunks of ``--chunk``, each generated, fitted (``calibrate_stream``, one process pool)
and written as JSON lines before the next: ``stream_wall_s``, ``stream_cpu_s``,
``peak_rss_mb``.

From the history database (issue 19): ``--build-db N --db PATH`` writes N heliostats'
image-free observations (the streaming chunks' simulation, 30 rows each) into a new
history database with ``History.add_observations`` (one transaction per chunk) and their
pivots beside it (``PATH.pivots.npz``), reporting ``build_s``; ``--stream-from-db PATH``
then reads it with ``History.iter_observations`` (one query per chunk of whole
heliostats), fits through ``calibrate_stream`` and writes JSON lines: ``fit_wall_s``,
``fit_cpu_s``, ``peak_rss_mb`` (ru_maxrss of this process or a worker) and
``peak_pss_total_mb`` (the process tree's summed PSS). Separate runs, so that the fit's
peak memory is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heliostat.calibration import (  # noqa: E402
    calibrate_field,
    calibrate_heliostat,
    candidate_sets,
    fit_heliostat,
    observations_from_frame,
)
from heliostat.calibration.field import Job  # noqa: E402
from heliostat.calibration.fit import Problem, resolve_names  # noqa: E402
from heliostat.config import load_field  # noqa: E402
from heliostat.frames import angle_between, reflect  # noqa: E402
from heliostat.sun import sun_position  # noqa: E402
from sim.observe import draw_true_errors, perturb_directions, simulate_observations  # noqa: E402

FIELD = load_field(Path(__file__).resolve().parents[1] / "tests/data/field_small.toml")
TARGET = FIELD.targets["cal1"]
DAYS = pd.date_range("2025-03-01T00:00Z", periods=5, freq="1D")
CAMPAIGN = [d + pd.Timedelta(minutes=m) for d in DAYS for m in np.linspace(420, 920, 6)]
HELDOUT = [
    d + pd.Timedelta(minutes=float(m))
    for d in DAYS
    for m in np.arange(370, 1010, 20)
    if not np.any(np.isclose(m, np.linspace(420, 920, 6)))
]
NOISE_MRAD = 0.2


def campaign(hid: str, rng: np.random.Generator, outliers: int = 0):
    """(truth, observations) for one heliostat; ``outliers`` rows get a gross error."""
    hel = FIELD.heliostats[hid]
    truth = draw_true_errors(hel.kinematics.drive, rng, translation_m=0.0)
    df = simulate_observations(hel, truth, TARGET, FIELD.site, CAMPAIGN, rng, NOISE_MRAD)
    if outliers:
        rows = rng.choice(len(df), outliers, replace=False)
        for i in rows:
            c = hel.kinematics.forward([[df.axis1_steps[i], df.axis2_steps[i]]], truth)
            c = c.centre_enu_m[0]
            p = df.loc[i, ["spot_e_m", "spot_n_m", "spot_u_m"]].to_numpy(float)
            d = perturb_directions((p - c)[None], rng.uniform(5, 30) * 1e-3 / 1.2533, rng)[0]
            t = np.dot(TARGET.centre_enu_m - c, TARGET.u_normal_enu) / np.dot(
                d, TARGET.u_normal_enu
            )
            df.loc[i, ["spot_e_m", "spot_n_m", "spot_u_m"]] = c + t * d
    obs, rejected = observations_from_frame(df, FIELD)
    if rejected:
        raise RuntimeError(f"simulated rows rejected: {rejected[:3]}")
    return truth, obs[hid]


def heldout_error_mrad(hid: str, truth, fitted) -> float:
    """RMS pointing error on the held-out sun positions, aiming with ``fitted``. [mrad]"""
    kin = FIELD.heliostats[hid].kinematics
    sp = sun_position(FIELD.site, HELDOUT)
    keep = sp.elevation_rad > np.radians(10.0)
    sun = sp.u_sun_enu[keep]
    aim = np.broadcast_to(TARGET.centre_enu_m, sun.shape)
    steps = kin.inverse(aim, sun, fitted)
    pose = kin.forward(steps, truth)
    beam = reflect(pose.u_normal_enu, sun)
    err = angle_between(beam, aim - pose.centre_enu_m)
    return float(1e3 * np.sqrt(np.mean(err**2)))


def analytic_floor_mrad(hid: str, truth, obs) -> float:
    """Expected held-out error of unbiased OLS on the true parameter set. [mrad]"""
    kin = FIELD.heliostats[hid].kinematics
    names = resolve_names(kin.drive)
    x = truth.to_vector(names)
    j = Problem(kin, obs, names, truth).jac(x) * 1e-3  # rad / rad
    cov = (NOISE_MRAD * 1e-3) ** 2 * np.linalg.inv(j.T @ j)
    sp = sun_position(FIELD.site, HELDOUT)
    sun = sp.u_sun_enu[sp.elevation_rad > np.radians(10.0)]
    steps = kin.inverse(np.broadcast_to(TARGET.centre_enu_m, sun.shape), sun, truth)
    # Beam direction at fixed steps as a function of the parameters (held-out Jacobian).
    h = 1e-7
    cols = []
    for k in range(len(names)):
        e_p = truth.with_vector(names, x + h * np.eye(len(names))[k])
        e_m = truth.with_vector(names, x - h * np.eye(len(names))[k])
        bp = reflect(kin.forward(steps, e_p).u_normal_enu, sun)
        bm = reflect(kin.forward(steps, e_m).u_normal_enu, sun)
        cols.append((bp - bm) / (2 * h))
    jh = np.stack(cols, axis=-1)  # (M, 3, p)
    var = np.einsum("mip,pq,miq->m", jh, cov, jh)
    return float(1e3 * np.sqrt(np.mean(var)))


def accuracy(seeds: int) -> dict:
    out = {}
    for hid in ("H001", "AA39"):
        floor, floor_an, clean, dirty, n_out, n_flag = [], [], [], [], [], []
        for seed in range(seeds):
            rng = np.random.default_rng(1000 + seed)
            truth, obs = campaign(hid, rng)
            kin = FIELD.heliostats[hid].kinematics
            names = resolve_names(kin.drive)
            oracle = fit_heliostat(kin, obs, names, robust=False)
            floor.append(heldout_error_mrad(hid, truth, oracle.errors))
            floor_an.append(analytic_floor_mrad(hid, truth, obs))
            clean.append(heldout_error_mrad(hid, truth, calibrate_heliostat(kin, obs).fit.errors))
            rng = np.random.default_rng(1000 + seed)
            truth2, obs2 = campaign(hid, rng, outliers=2)
            r = calibrate_heliostat(kin, obs2).fit
            dirty.append(heldout_error_mrad(hid, truth2, r.errors))
            n_flag.append(r.n_outliers)
            n_out.append(2)

        def rms(v):
            return float(np.sqrt(np.mean(np.square(v))))

        out[hid] = {
            "drive": FIELD.heliostats[hid].kinematics.drive,
            "seeds": seeds,
            "floor_oracle_ols_mrad": rms(floor),
            "floor_analytic_mrad": rms(floor_an),
            "pipeline_clean_mrad": rms(clean),
            "pipeline_5pct_outliers_mrad": rms(dirty),
            "ratio_clean": rms(clean) / rms(floor),
            "ratio_outliers": rms(dirty) / rms(floor),
            "outliers_flagged_mean": float(np.mean(n_flag)),
            "outliers_injected": 2,
        }
    return out


def effects_table(seeds: int) -> dict:
    """Held-out error per drive and effect configuration (see the module doc)."""
    from sim.effects import EFFECT_NAMES, Effects
    from sim.floor import heldout_errors, make_case

    configs = {"none": Effects.none(), "all": Effects.realistic()}
    configs.update({n: Effects.from_names([n]) for n in EFFECT_NAMES})
    out: dict = {}
    for hid in ("H001", "AA39"):
        drive = FIELD.heliostats[hid].kinematics.drive
        rows = {}
        for name, eff in configs.items():
            acc: dict[str, list[float]] = {}
            for seed in range(seeds):
                rng = np.random.default_rng(5000 + seed)
                truth = draw_true_errors(drive, rng)
                r = heldout_errors(make_case(FIELD, hid, truth, eff, 5000 + seed), seed)
                for k, v in r.items():
                    acc.setdefault(k, []).append(v)
            row = {
                k: float(np.sqrt(np.mean(np.square(v)))) if k.endswith("_mrad") else
                float(np.mean(v))
                for k, v in acc.items()
            }  # fmt: skip
            row["pipeline_over_oracle"] = row["pipeline_static_mrad"] / row["oracle_static_mrad"]
            row["pipeline_over_oracle_measured"] = row["pipeline_mrad"] / row["oracle_mrad"]
            rows[name] = row
        out[drive] = {"heliostat": hid, "seeds": seeds, "noise_mrad": 0.2, "effects": rows}
    return out


def _rusage() -> tuple[float, float, float]:
    """CPU seconds of this process and of its finished children, and the peak RSS of
    either (ru_maxrss is in KiB on Linux). [s, s, MiB]"""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return (
        me.ru_utime + me.ru_stime,
        kids.ru_utime + kids.ru_stime,
        max(me.ru_maxrss, kids.ru_maxrss) / 1024.0,
    )


def _field(hid: str, field_size: int, seed: int) -> tuple[list, list, float]:
    """``field_size`` heliostats like ``hid`` with their image-free campaign observations
    (:func:`sim.observe.simulate_field_observations`), and the time it took. [s]"""
    from sim.observe import simulate_field_observations

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    # ~5 % of the drawn pivots leave the actuators' travel on some campaign time: draw
    # extra and keep N.
    kins, _, obs = simulate_field_observations(
        FIELD.heliostats[hid], int(field_size * 1.1) + 10, TARGET, FIELD.site, CAMPAIGN, rng,
        NOISE_MRAD,
    )  # fmt: skip
    return kins[:field_size], obs[:field_size], time.perf_counter() - t0


def _time_field(jobs, sample: int, workers: int) -> tuple[list, dict, dict]:
    """The per-heliostat loop (:func:`run_job`) on the first ``sample`` jobs and
    :func:`calibrate_field` on all of them, in the same run: (loop results, field results
    by heliostat, figures: ``field`` wall/CPU/peak RSS and ``loop`` per heliostat and the
    speed-ups)."""
    from heliostat.calibration.field import run_job

    n_loop = min(sample, len(jobs))
    c0, t0 = time.process_time(), time.perf_counter()
    loop = [run_job(j) for j in jobs[:n_loop]]
    loop_s = (time.perf_counter() - t0) / n_loop
    loop_cpu_s = (time.process_time() - c0) / n_loop
    backend = "process" if workers > 1 else "sequential"
    cpu_me0, cpu_kids0, _ = _rusage()
    t0 = time.perf_counter()
    res = calibrate_field(jobs, backend=backend, max_workers=workers)
    wall = time.perf_counter() - t0
    cpu_me1, cpu_kids1, rss = _rusage()
    cpu = (cpu_me1 - cpu_me0) + (cpu_kids1 - cpu_kids0)
    field = {
        "workers": workers,
        "backend": backend,
        "cpu_count": os.cpu_count(),
        "field_wall_s": wall,
        "field_cpu_s": cpu,
        "field_cpu_parent_s": cpu_me1 - cpu_me0,
        "peak_rss_mb": rss,
    }
    figures = {
        "loop_sample": n_loop,
        "loop_s_per_heliostat": loop_s,
        "loop_cpu_s_per_heliostat": loop_cpu_s,
        "loop_field_s_extrapolated": loop_s * len(jobs),
        "speedup_vs_loop": loop_s * len(jobs) / wall,
        "cpu_speedup_vs_loop": loop_cpu_s * len(jobs) / cpu,
    }
    return loop, res, {"field": field, "loop": figures}


def field_speed(field_size: int, sample: int, workers: int, hid: str = "AA39") -> dict:
    from heliostat.calibration.batch import fit_batch

    kins, obs, gen_s = _field(hid, field_size, seed=7)
    names = resolve_names(kins[0].drive)
    jobs = [Job(k, o, names, "angle", "hat", None) for k, o in zip(kins, obs, strict=True)]
    t0 = time.perf_counter()
    fit_batch(kins[:2], obs[:2], names)  # load (or compile) the kernel once
    load_s = time.perf_counter() - t0
    loop, res, t = _time_field(jobs, sample, workers)
    diff = []
    for r in loop:
        b = res[r.heliostat_id]
        if r.success and b.success:
            std = np.array([r.std[n] for n in names])
            diff.append(np.max(np.abs(b.errors.to_vector(names) - r.errors.to_vector(names)) / std))
    return {
        "heliostat_template": hid,
        "drive": kins[0].drive,
        "field_size": len(jobs),
        "n_points": len(obs[0]),
        "n_parameters": len(names),
        "generate_s": gen_s,
        "kernel_load_s": load_s,
        **t["field"],
        "field_success": int(sum(r.success for r in res.values())),
        **t["loop"],
        "batch_vs_loop_max_param_diff_std": float(max(diff)) if diff else None,
        "load_average_1min_after": os.getloadavg()[0],
        "note": "field measured, not extrapolated (the loop is measured on the sample and "
        "scaled). The machine is shared: a 1-min load average above the core count means "
        "the run did not have the cores to itself; field_cpu_s is the fairer figure then",
    }


def select_speed(
    field_size: int,
    sample: int,
    workers: int,
    hid: str = "AA39",
    loo: str = "hat",
    kfold: int | None = None,
) -> dict:
    """The default calibration, which chooses each heliostat's parameter set by nested
    cross-validation (``calibrate_heliostat``), for a field: ``calibrate_field`` of
    selecting jobs (batched, :func:`heliostat.calibration.selection_batch.calibrate_batch`)
    against ``calibrate_heliostat`` looped over the first ``sample`` heliostats in the
    same run. ``loo``, ``kfold``: the final fit's cross-validation (``heliostat calibrate``'s
    defaults are ``refit`` and 5)."""
    from heliostat.calibration.selection_batch import calibrate_batch

    kins, obs, gen_s = _field(hid, field_size, seed=11)
    names = resolve_names(kins[0].drive)
    jobs = [Job(k, o, names, "angle", loo, kfold, True) for k, o in zip(kins, obs, strict=True)]
    t0 = time.perf_counter()
    calibrate_batch(kins[:2], obs[:2])  # load (or compile) the kernel once
    load_s = time.perf_counter() - t0
    loop, res, t = _time_field(jobs, sample, workers)
    same, diff, nested, cv = 0, [], [], []
    for r in loop:
        b = res[r.heliostat_id]
        same += b.names == r.names
        if b.names == r.names and r.success and b.success:
            std = np.array([r.std[n] for n in r.names])
            d = np.abs(b.errors.to_vector(r.names) - r.errors.to_vector(r.names)) / std
            diff.append(float(np.nanmax(d)))
            nb, ns = (x.selection["nested_rms_mrad"] for x in (b, r))
            if math.isfinite(ns):
                nested.append(abs(nb / ns - 1.0))
            for key in ("loo_rms_mrad", "kfold_rms_mrad"):
                vb, vs = getattr(b, key), getattr(r, key)
                if math.isfinite(vs):
                    cv.append(abs(vb / vs - 1.0))
    chosen: dict[str, int] = {}
    for r in res.values():
        key = f"{len(r.names)} parameters"
        chosen[key] = chosen.get(key, 0) + 1
    return {
        "heliostat_template": hid,
        "drive": kins[0].drive,
        "field_size": len(jobs),
        "n_points": len(obs[0]),
        "candidate_sets": len(candidate_sets(kins[0].drive)),
        "loo": loo,
        "kfold": kfold,
        "generate_s": gen_s,
        "kernel_load_s": load_s,
        **t["field"],
        "field_success": int(sum(r.success for r in res.values())),
        "chosen_set_sizes": chosen,
        **t["loop"],
        "same_set_as_loop": f"{same} of {len(loop)}",
        "batch_vs_loop_max_param_diff_std": max(diff) if diff else None,
        "batch_vs_loop_max_nested_rms_rel_diff": max(nested) if nested else None,
        "batch_vs_loop_max_cv_rms_rel_diff": max(cv) if cv else None,
        "load_average_1min_after": os.getloadavg()[0],
        "note": "the default calibration (parameter set chosen per heliostat, nested "
        "cross-validation, robust final fit, hat-matrix leave-one-out); field measured, the "
        "loop measured on the sample and scaled",
    }


def stream_speed(n_total: int, chunk: int, workers: int, hid: str = "AA39") -> dict:
    """``n_total`` heliostats in chunks of ``chunk``: each chunk generated (the stand-in
    for reading it from the history database), fitted by ``calibrate_stream`` and written
    as JSON lines before the next is made, so memory holds one chunk."""

    from heliostat.calibration.batch import fit_batch
    from sim.observe import simulate_field_observations

    hel = FIELD.heliostats[hid]
    names = resolve_names(hel.kinematics.drive)
    gen = {"s": 0.0, "n": 0}

    def chunks():
        left, i = n_total, 0
        while left > 0:
            t0 = time.perf_counter()
            rng = np.random.default_rng([11, i])
            want = min(chunk, left)
            kins, _, obs = simulate_field_observations(
                hel, int(want * 1.1) + 10, TARGET, FIELD.site, CAMPAIGN, rng, NOISE_MRAD
            )
            jobs = [
                Job(k, dataclasses.replace(o, heliostat_id=f"S{i:03d}-{o.heliostat_id}"), names)
                for k, o in zip(kins[:want], obs[:want], strict=True)
            ]
            gen["s"] += time.perf_counter() - t0
            gen["n"] += len(jobs)
            left -= len(jobs)
            i += 1
            yield jobs

    fit_batch([hel.kinematics], [next(chunks())[0].observations], names)  # kernel load
    gen["s"], gen["n"] = 0.0, 0
    r = _stream_fits(chunks(), workers)
    n, wall = r["heliostats"], r["wall_s"]
    return {
        "heliostats": n,
        "chunk": chunk,
        "workers": workers,
        "stream_wall_s": wall,
        "stream_cpu_s": r["cpu_s"],
        "generate_s": gen["s"],
        "peak_rss_mb": r["peak_rss_mb"],
        "success": r["success"],
        "failures_first": r["failures_first"],
        "written_mb": r["written_mb"],
        "load_average_1min_after": os.getloadavg()[0],
        "note": "chunks are generated by the simulator in this process (generate_s of the "
        "wall time), standing in for reading them from the history database",
    }


def _stream_fits(chunks, workers: int, tree_memory: bool = False) -> dict:
    """Fit a stream of job chunks (:func:`calibrate_stream`, process pool) writing each
    result as a JSON line to a scratch file; wall and CPU time (this process and its
    workers), peak RSS, optionally the peak summed PSS, successes, the first failures."""
    import tempfile

    from heliostat.calibration.field import calibrate_stream

    ok = {"n": 0}
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "fits.jsonl"
        with open(out, "w") as f:

            def write(results):
                for r in results.values():
                    ok["n"] += r.success
                    if not r.success and len(failed) < 5:
                        failed.append(f"{r.heliostat_id}: {r.reason}")
                    f.write(json.dumps(r.summary()) + "\n")

            cpu_me0, cpu_kids0, _ = _rusage()
            t0 = time.perf_counter()
            mem = _TreeMemory() if tree_memory else contextlib.nullcontext()
            with mem:
                n = calibrate_stream(chunks, write, "process", workers)
            wall = time.perf_counter() - t0
            cpu_me1, cpu_kids1, rss = _rusage()
        written = out.stat().st_size
    return {
        "heliostats": n,
        "wall_s": wall,
        "cpu_s": (cpu_me1 - cpu_me0) + (cpu_kids1 - cpu_kids0),
        "peak_rss_mb": rss,
        "peak_pss_total_mb": mem.peak_mb if tree_memory else None,
        "success": ok["n"],
        "failures_first": failed,
        "written_mb": written / 2**20,
    }


class _TreeMemory:
    """Peak of the summed proportional set size (PSS: shared pages split between the
    processes sharing them) of this process and its children, sampled every
    ``every_s`` from /proc (Linux; None elsewhere). [MiB]"""

    def __init__(self, every_s: float = 0.5) -> None:
        import threading

        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._every = every_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _pss_mb(pid: int) -> float:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def _sample(self) -> float:
        me = os.getpid()
        total = self._pss_mb(me)
        with open(f"/proc/{me}/task/{me}/children") as f:
            for pid in f.read().split():
                try:
                    total += self._pss_mb(int(pid))
                except OSError:  # gone meanwhile
                    pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            v = self._sample()
            self.peak_mb = v if self.peak_mb is None else max(self.peak_mb, v)

    def __enter__(self) -> _TreeMemory:
        if Path("/proc/self/smaps_rollup").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _stream_field(hid: str, ids, pos):
    """A field config of ``hid``'s template moved to the pivots ``pos`` (H, 3) [m]."""
    from heliostat.config import FieldConfig

    hel = FIELD.heliostats[hid]
    kin0 = hel.kinematics
    heliostats = {
        str(i): dataclasses.replace(
            hel, id=str(i), kinematics=dataclasses.replace(kin0, position_enu_m=tuple(p))
        )
        for i, p in zip(ids, pos.tolist(), strict=True)
    }
    return FieldConfig(FIELD.site, FIELD.targets, heliostats, source="bench stream field")


def build_db(path: str, n_total: int, chunk: int, hid: str = "AA39") -> dict:
    """Write ``n_total`` heliostats' image-free observations (the campaign above, 30 per
    heliostat) into a new history database at ``path``, ``chunk`` heliostats per
    transaction (:meth:`History.add_observations`), and their pivots beside it
    (``PATH.pivots.npz``; the fit's field config is the template moved there)."""
    from heliostat.campaign.history import History, ObservationRecord
    from sim.observe import simulate_field_observations

    p = Path(path)
    if p.exists():
        raise SystemExit(f"{p} exists: remove it or stream it with --stream-from-db")
    hel = FIELD.heliostats[hid]
    all_ids: list[str] = []
    all_pos: list[tuple] = []
    gen_s = write_s = 0.0
    rows = 0
    t_start = time.perf_counter()
    with History(p) as hist:
        left, i = n_total, 0
        while left > 0:
            t0 = time.perf_counter()
            rng = np.random.default_rng([11, i])
            want = min(chunk, left)
            kins, _, obs = simulate_field_observations(
                hel, int(want * 1.1) + 10, TARGET, FIELD.site, CAMPAIGN, rng, NOISE_MRAD
            )
            recs = []
            for k, o in zip(kins[:want], obs[:want], strict=True):
                h = f"S{i:03d}-{o.heliostat_id}"
                all_ids.append(h)
                all_pos.append(k.position_enu_m)
                u = o.u_sun_enu
                az = np.degrees(np.arctan2(u[:, 0], u[:, 1])) % 360.0
                el = np.degrees(np.arcsin(np.clip(u[:, 2], -1.0, 1.0)))
                for j in range(len(o)):
                    e, nn, uu = o.spot_enu_m[j].tolist()
                    recs.append(
                        ObservationRecord(
                            h, o.times_utc[j], o.times_utc[j], float(az[j]), float(el[j]),
                            int(o.steps[j, 0]), int(o.steps[j, 1]), o.target_ids[j],
                            math.nan, math.nan, e, nn, uu, float(o.sigma_m[j]),
                        )
                    )  # fmt: skip
            t1 = time.perf_counter()
            hist.add_observations(recs)
            write_s += time.perf_counter() - t1
            gen_s += t1 - t0
            rows += len(recs)
            left -= want
            i += 1
    np.savez(str(p) + ".pivots.npz", ids=np.array(all_ids), pos=np.array(all_pos))
    _, _, rss = _rusage()
    return {
        "db": str(p),
        "heliostats": len(all_ids),
        "rows": rows,
        "chunk": chunk,
        "build_s": time.perf_counter() - t_start,
        "simulate_and_records_s": gen_s,
        "add_observations_s": write_s,
        "db_mb": (p.stat().st_size + sum(
            q.stat().st_size for q in p.parent.glob(p.name + "-wal") if q.exists()
        )) / 2**20,
        "peak_rss_mb": rss,
    }  # fmt: skip


def stream_from_db(path: str, chunk: int, workers: int, hid: str = "AA39") -> dict:
    """Fit every heliostat of the history database at ``path`` (:func:`build_db`) as a
    stream: :meth:`History.iter_observations` reads ``chunk`` heliostats per query,
    ``calibrate_stream`` fits them (one pool, the next chunk read while the current one
    is fitted) and the fits go out as JSON lines chunk by chunk."""

    from heliostat.calibration.batch import fit_batch
    from heliostat.calibration.field import make_jobs
    from heliostat.campaign.history import History

    t0 = time.perf_counter()
    piv = np.load(str(path) + ".pivots.npz")
    field = _stream_field(hid, piv["ids"], piv["pos"])
    field_s = time.perf_counter() - t0
    kin0 = FIELD.heliostats[hid].kinematics
    read = {"s": 0.0, "rows": 0, "rejected": 0}
    with History(path, readonly=True) as hist:

        def chunks():
            it = hist.iter_observations(field, chunk)
            while True:
                t1 = time.perf_counter()
                try:
                    obs, rejected = next(it)
                except StopIteration:
                    return
                jobs = make_jobs({h: field.heliostats[h].kinematics for h in obs}, obs)
                read["s"] += time.perf_counter() - t1
                read["rows"] += sum(len(o) for o in obs.values())
                read["rejected"] += len(rejected)
                yield jobs

        first = hist.observations(str(piv["ids"][0]))  # kernel load outside the timing
        o1 = observations_from_frame(first, field)[0]
        fit_batch([kin0], list(o1.values()), resolve_names(kin0.drive))
        r = _stream_fits(chunks(), workers, tree_memory=True)
        n, wall = r["heliostats"], r["wall_s"]
    return {
        "db": str(path),
        "heliostats": n,
        "rows_read": read["rows"],
        "rows_rejected": read["rejected"],
        "chunk": chunk,
        "workers": workers,
        "field_config_s": field_s,
        "fit_wall_s": wall,
        "fit_cpu_s": r["cpu_s"],
        "read_and_validate_s": read["s"],
        "peak_rss_mb": r["peak_rss_mb"],
        "peak_pss_total_mb": r["peak_pss_total_mb"],
        "success": r["success"],
        "failures_first": r["failures_first"],
        "written_mb": r["written_mb"],
        "load_average_1min_after": os.getloadavg()[0],
        "note": "fit_wall_s: read (one query per chunk), validated, fitted and written; "
        "read_and_validate_s is the parent's share of it (overlapping the workers' fits); "
        "peak_rss_mb: the largest of this process and its workers (ru_maxrss); "
        "peak_pss_total_mb: the peak of their summed PSS (shared pages counted once), "
        "sampled every 0.5 s",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--field-size", type=int, default=10_000)
    ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--effects-seeds", type=int, default=10)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-effects", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument(
        "--select",
        action="store_true",
        help="also time the default, selecting calibration of the --field-size field",
    )
    ap.add_argument(
        "--loo",
        choices=("hat", "refit"),
        default="hat",
        help="leave-one-out of --select's final fits (heliostat calibrate's default: refit)",
    )
    ap.add_argument(
        "--kfold", type=int, default=0, help="k-fold of --select's final fits (CLI default: 5)"
    )
    ap.add_argument(
        "--stream-size", type=int, default=0, metavar="N", help="stream N heliostats (0: skip)"
    )
    ap.add_argument("--chunk", type=int, default=10_000, help="heliostats per streamed chunk")
    ap.add_argument(
        "--build-db",
        type=int,
        default=0,
        metavar="N",
        help="write N heliostats' observations into a new history database --db and stop",
    )
    ap.add_argument("--db", metavar="PATH", help="history database for --build-db")
    ap.add_argument(
        "--stream-from-db",
        metavar="PATH",
        help="stream and fit every heliostat of a history database made by --build-db",
    )
    ap.add_argument(
        "--heliostat",
        choices=("AA39", "H001"),
        default="AA39",
        help="template of the speed field: AA39 (linear drive) or H001 (az-el)",
    )
    a = ap.parse_args()
    out = {"bench": "calibration"}
    if a.build_db:
        if not a.db:
            ap.error("--build-db needs --db PATH")
        out["build_db"] = build_db(a.db, a.build_db, a.chunk, a.heliostat)
        print(json.dumps(out, indent=2))
        return
    if a.stream_from_db:
        out["stream_from_db"] = stream_from_db(a.stream_from_db, a.chunk, a.workers, a.heliostat)
        print(json.dumps(out, indent=2))
        return
    if not a.skip_accuracy:
        out["accuracy"] = accuracy(a.seeds)
    if not a.skip_effects:
        out["effects"] = effects_table(a.effects_seeds)
    if not a.skip_speed:
        out["speed"] = field_speed(a.field_size, a.sample, a.workers, a.heliostat)
    if a.select:
        out["select_speed"] = select_speed(
            a.field_size, a.sample, a.workers, a.heliostat, a.loo, a.kfold or None
        )
    if a.stream_size:
        out["stream"] = stream_speed(a.stream_size, a.chunk, a.workers, a.heliostat)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
