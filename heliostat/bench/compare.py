"""Classical versus learned: spot accuracy, pointing, compute energy, gain and payback.

:func:`run_comparison` measures, on data the learned models never saw:

* **spot error** — a held-out set of simulated frames (the training draw's distribution,
  its own seed, hard cases included) with exact ground truth (flux centroid of the
  on-target part), classical :func:`~heliostat.vision.classical.detect_spot` against
  :func:`~heliostat.ml.spot_model.detect_spot_onnx`, both with the dark frame and the
  same commanded aim (truth + N(0, 0.2 m) per axis, as a plant knows it); error in
  the target plane [mm] and in the image [px]. With a campaign folder holding frames,
  also on those frames against the simulator's beam truth (``true_spot_*``);
* **pointing after calibration** — a held-out simulated campaign (or ``--campaign`` /
  PAINT data): per heliostat the first ``train_points`` observations calibrate, the rest
  are held out; geometric error model alone vs the hybrid (:mod:`heliostat.ml.hybrid`);
  RMS beam error on the held-out points [mrad];
* **compute energy** — the ledger's :class:`~heliostat.ledger.EnergyMeter` around the
  detection loop (per frame) and around each heliostat's calibration (per calibration);
  the training energy from the model card, amortised over ``uses`` frames;
* **gain** — the ledger's gain model (:func:`~heliostat.ledger.gain.pointing_gain`) from
  the uncalibrated held-out error to each method's: target ΔT at noon and thermal energy;
* **CO2 payback** under each grid preset: hours of plant operation until the CO2 the
  extra heat displaces equals the CO2 of the computing.

The verdict is what the figures say: the learned detector becomes the recommended default
only if it is more accurate (median and 95th percentile) on the held-out frames.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from heliostat.calibration import Observations, fit_heliostat
from heliostat.ml.hybrid import beam_residuals_mrad, fit_hybrid, hybrid_residuals_mrad
from heliostat.ml.registry import load_card
from heliostat.vision.io import dark_path

__all__ = ["CompareSettings", "run_comparison", "summary_rows"]


@dataclass(frozen=True, slots=True)
class CompareSettings:
    """What the comparison runs.

    Attributes
    ----------
    frames : int
        Held-out simulated frames for the spot comparison.
    frame_seed : int
        Their seed (the training draw uses 20251126, the card's test set 777).
    campaign_seed : int
        Seed of the held-out simulated campaign (field, truth, clouds, noise).
    heliostats, days : int
        Size of the simulated campaign.
    train_points : int
        Calibration points per heliostat; later points are held out. [1]
    uses : int
        Frames over which the training energy is amortised (stated in the output). [1]
    point : str
        Operating point of the gain model (``heliogen-like`` or ``plant-like``).
    """

    frames: int = 100
    frame_seed: int = 4242
    campaign_seed: int = 11
    heliostats: int = 8
    days: int = 6
    train_points: int = 30
    uses: int = 1_000_000
    point: str = "heliogen-like"


def _stats(e: np.ndarray) -> dict:
    e = np.asarray(e, float)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return {"n": 0, "median": math.nan, "mean": math.nan, "p95": math.nan, "rms": math.nan}
    return {
        "n": int(e.size),
        "median": float(np.median(e)),
        "mean": float(np.mean(e)),
        "p95": float(np.percentile(e, 95)),
        "rms": float(np.sqrt(np.mean(e**2))),
    }


def _meter():
    from heliostat.ledger import EnergyMeter

    return EnergyMeter(poll_interval_s=None)


# ----------------------------------------------------------------------------- spots
#: 1-sigma per-axis uncertainty of the commanded aim point handed to both detectors: about
#: a heliostat's pointing error before calibration (2 mrad at 100 m). [m]
AIM_SIGMA_M = 0.2

_AIM_NOTE = (
    "both detectors get expected_xy_m = truth + N(0, {sigma} m) per axis (seeded rng "
    "{seed}): the commanded aim a plant always knows, to about a heliostat's pointing "
    "error (2 mrad at 100 m); the classical detector picks the candidate nearest to it, "
    "the ONNX detector ignores it"
)


def _aims(samples, seed) -> list:
    """Commanded aim per sample: its truth + N(0, AIM_SIGMA_M) per axis (None without a
    finite truth: no aim can be made up from it)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        d = rng.normal(0.0, AIM_SIGMA_M, 2)  # drawn for every sample: stable pairing
        xy = np.asarray(s.xy_m, dtype=float)
        out.append(xy + d if np.all(np.isfinite(xy)) else None)
    return out


def _run_detector(name, samples, registration, bit_depth, target=None, aims=None):
    from heliostat.ml.spot_model import detect_spot_onnx
    from heliostat.vision.classical import detect_spot

    fn = detect_spot if name == "classical" else detect_spot_onnx
    if name == "ml":  # load and verify the model outside the metered block
        from heliostat.ml.registry import load_session

        load_session("spot_cnn")
    if aims is None:
        aims = [None] * len(samples)
    meter = _meter()
    out = []
    with meter:
        for s, aim in zip(samples, aims, strict=True):
            out.append(fn(s.image, registration, dark=s.dark, bit_depth=bit_depth,
                          target=target, expected_xy_m=aim))  # fmt: skip
    m = meter.measurement
    n = max(len(samples), 1)
    return out, {
        "energy_per_frame_j": m.energy.joules / n,
        "time_per_frame_s": m.duration_s / n,
        "energy_source": m.source,
        "energy_rel_uncertainty": m.rel_uncertainty,
    }


def _spot_errors(results, samples, registration) -> tuple[np.ndarray, np.ndarray, int]:
    mm = np.full(len(samples), np.nan)
    px = np.full(len(samples), np.nan)
    fails = 0
    for i, (r, s) in enumerate(zip(results, samples, strict=True)):
        if not r.ok or not np.all(np.isfinite(s.xy_m)):
            fails += int(not r.ok)
            continue
        mm[i] = 1e3 * math.hypot(r.x_m - s.xy_m[0], r.y_m - s.xy_m[1])
        uv = registration.plane_to_pixel([[r.x_m, r.y_m]])[0]
        px[i] = math.hypot(uv[0] - s.uv_px[0], uv[1] - s.uv_px[1])
    return mm, px, fails


def spot_comparison(settings: CompareSettings, progress=None) -> dict:
    """Classical vs learned detector on held-out simulated frames."""
    from heliostat.ml.training.data import DataSpec, make_scene, render_samples

    spec = replace(DataSpec(), n=settings.frames, seed=settings.frame_seed)
    scene = make_scene(spec)
    samples = list(render_samples(spec, scene))
    aim_seed = [settings.frame_seed, 1]
    aims = _aims(samples, aim_seed)
    out: dict = {
        "data": {
            "frames": len(samples),
            "seed": spec.seed,
            "camera_px": [spec.width_px, spec.height_px],
            "truth": "simulator flux centroid of the on-target part (FrameTruth)",
            "expected_position": _AIM_NOTE.format(sigma=AIM_SIGMA_M, seed=aim_seed),
        }
    }
    errors = {}
    for name in ("classical", "ml"):
        res, energy = _run_detector(
            name, samples, scene.registration, scene.camera.bit_depth, aims=aims
        )
        mm, px, fails = _spot_errors(res, samples, scene.registration)
        errors[name] = mm
        by_case = {}
        for c in ("round", "faceted", "streaky", "edge", "cloud", "second_spot", "saturated"):
            sel = np.array([c in s.cases for s in samples])
            if sel.any():
                by_case[c] = _stats(mm[sel])
        out[name] = {
            "error_mm": _stats(mm),
            "error_px": _stats(px),
            "failed": fails,
            "by_case_mm": by_case,
            **energy,
        }
        if progress:
            progress(f"spots: {name} done")
    out["_errors_mm"] = {k: v.tolist() for k, v in errors.items()}
    return out


def campaign_frames_comparison(campaign_dir: Path) -> dict | None:
    """Both detectors on a campaign folder's frames, against ``true_spot_*`` (beam)."""
    import pandas as pd

    from heliostat.config import load_camera, load_field
    from heliostat.vision.target import register_corners

    obs_csv = campaign_dir / "observations.csv"
    cam_toml = campaign_dir / "camera.toml"
    if not (obs_csv.exists() and cam_toml.exists()):
        return None
    df = pd.read_csv(obs_csv, dtype=str, keep_default_na=False)
    df = df[df["frame"] != ""]
    if not len(df):
        return None
    import cv2

    field = load_field(campaign_dir / "field.toml")
    cam = load_camera(cam_toml)
    target = field.target(df["target_id"].iloc[0])
    reg = register_corners(
        cam.project(target.corners_enu_m()), target.width_m, target.height_m,
        (cam.width_px, cam.height_px), k_px=cam.k_px, dist_coeffs=cam.dist_coeffs,
        markers=target.markers,
    )  # fmt: skip

    @dataclass
    class _S:
        image: np.ndarray
        dark: np.ndarray
        xy_m: np.ndarray
        uv_px: np.ndarray
        cases: tuple = ()

    samples = []
    for _, row in df.iterrows():
        p = campaign_dir / row["frame"]
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        dark = cv2.imread(str(dark_path(p)), cv2.IMREAD_UNCHANGED)
        if img is None or dark is None:
            continue
        xy = np.array([float(row["true_spot_x_m"]), float(row["true_spot_y_m"])])
        uv = reg.plane_to_pixel([xy])[0]
        samples.append(_S(img, dark, xy, uv))
    if not samples:
        return None
    aim_seed = [len(samples), 2]
    aims = _aims(samples, aim_seed)
    out: dict = {
        "frames": len(samples),
        "truth": "true_spot_x/y_m (central-ray hit)",
        "expected_position": _AIM_NOTE.format(sigma=AIM_SIGMA_M, seed=aim_seed),
    }
    for name in ("classical", "ml"):
        res, energy = _run_detector(name, samples, reg, cam.bit_depth, target, aims=aims)
        mm, px, fails = _spot_errors(res, samples, reg)
        out[name] = {"error_mm": _stats(mm), "error_px": _stats(px), "failed": fails, **energy}
    return out


# ----------------------------------------------------------------------------- pointing
def _simulated_campaign(settings: CompareSettings):
    from heliostat.calibration import observations_from_frame
    from sim.campaign import CampaignSettings, simulate_campaign
    from sim.field import draw_truth, generate_field

    ss = np.random.SeedSequence(settings.campaign_seed).spawn(3)
    field = generate_field(settings.heliostats, np.random.default_rng(ss[0]))
    truth = draw_truth(field, np.random.default_rng(ss[1]))
    cs = CampaignSettings(days=settings.days, frame_heliostats=0)
    res = simulate_campaign(field, truth, cs, int(ss[2].generate_state(1)[0]))
    obs, _ = observations_from_frame(res.observations.astype(str), field)
    return field, obs, f"simulated: seed {settings.campaign_seed}, {settings.heliostats} " \
        f"heliostats, {settings.days} days"  # fmt: skip


def _rms(r: np.ndarray) -> float:
    r = np.asarray(r).reshape(-1, 2)
    return float(np.sqrt(np.mean(np.sum(r**2, 1)))) if len(r) else math.nan


def pointing_comparison(field, obs: dict[str, Observations], train_points: int) -> dict:
    """Geometric vs hybrid calibration, RMS beam error on held-out points. [mrad]"""
    rows = []
    pooled = {"nominal": [], "classical": [], "ml": []}
    e_cal = {"classical": [], "ml": []}
    for hid, o in obs.items():
        n = len(o)
        n_tr = min(train_points, (2 * n) // 3)
        if n_tr < 8 or n - n_tr < 3:
            rows.append({"heliostat": hid, "note": f"only {n} observations: skipped"})
            continue
        tr, te = o.subset(np.arange(n_tr)), o.subset(np.arange(n_tr, n))
        kin = field.heliostats[hid].kinematics
        m = _meter()
        with m:
            geo = fit_heliostat(kin, tr)
        e_cal["classical"].append(m.measurement.energy.joules)
        with m:
            hyb = fit_hybrid(kin, tr)
            hybrid_residuals_mrad(kin, te, hyb)  # the ONNX evaluation is part of the cost
        e_cal["ml"].append(m.measurement.energy.joules)
        if not geo.success:
            rows.append({"heliostat": hid, "note": f"geometric fit failed: {geo.reason}"})
            continue
        r_nom = beam_residuals_mrad(kin, te, None)
        r_geo = beam_residuals_mrad(kin, te, geo.errors)
        r_hyb = hybrid_residuals_mrad(kin, te, hyb)
        pooled["nominal"].append(r_nom)
        pooled["classical"].append(r_geo)
        pooled["ml"].append(r_hyb)
        rows.append({
            "heliostat": hid,
            "drive": kin.drive,
            "n_train": n_tr,
            "n_heldout": n - n_tr,
            "nominal_mrad": _rms(r_nom),
            "geometric_mrad": _rms(r_geo),
            "hybrid_mrad": _rms(r_hyb),
            "correction_used": hyb.use_correction,
            "reason": hyb.reason,
        })  # fmt: skip
    agg = {k: _rms(np.concatenate(v)) if v else math.nan for k, v in pooled.items()}
    used = [r for r in rows if "hybrid_mrad" in r]
    worse = [r["heliostat"] for r in used if r["hybrid_mrad"] > r["geometric_mrad"] + 1e-9]
    better = [r["heliostat"] for r in used if r["hybrid_mrad"] < r["geometric_mrad"] - 1e-9]
    return {
        "heldout_rms_mrad": agg,
        "heliostats": rows,
        "hybrid_worse_on": worse,
        "hybrid_better_on": better,
        "energy_per_calibration_j": {
            k: float(np.mean(v)) if v else math.nan for k, v in e_cal.items()
        },
    }


# ----------------------------------------------------------------------------- gain
def gain_and_payback(spots: dict, pointing: dict, settings: CompareSettings) -> dict:
    """Ledger gain model and CO2 payback per grid preset for each method."""
    from heliostat.ledger import GRID_PRESETS
    from heliostat.ledger.book import increment_payback_hours
    from heliostat.ledger.carbon import Energy
    from heliostat.ledger.gain import gain_point, pointing_gain

    # No field given: the named reference point, hypothetical (the rule of gain_point,
    # shared with the demo and `ledger gain`).
    point = gain_point(None, reference=settings.point)
    rms = pointing["heldout_rms_mrad"]
    card = load_card("spot_cnn")
    train_j = float(card["training"]["energy_j"])
    data_j = float(card["training_data"]["generation"]["energy_j"])
    offline_j = train_j + data_j
    frames = settings.train_points  # one frame per calibration point
    out: dict = {
        "operating_point": point.label,
        "hypothetical_point": point.hypothetical,
        "n_heliostats_in_point": point.n_heliostats,
        "before_mrad": rms["nominal"],
        "training_energy_j": train_j,
        "training_data_energy_j": data_j,
        "amortised_over_uses": settings.uses,
        "training_energy_per_use_j": offline_j / settings.uses,
        "frames_per_calibration": frames,
    }
    gains = {}
    for name in ("classical", "ml"):
        g = pointing_gain(point, rms["nominal"], rms[name])
        gains[name] = g
        per_cal = (
            frames * spots[name]["energy_per_frame_j"]
            + pointing["energy_per_calibration_j"][name]
            + (frames * offline_j / settings.uses if name == "ml" else 0.0)
        )
        out[name] = {
            "after_mrad": rms[name],
            "delta_t_k": g.delta_t_k,  # receiver without flow control
            "thermal_gain_kwh_per_day": g.thermal_gain_kwh_per_day,
            "thermal_gain_kwh_per_year": g.thermal_gain_kwh_per_year,
            "compute_j_per_heliostat_calibration": per_cal,
            "payback_hours": {},
        }
        per_h_kg = g.co2_avoided_kg_per_year / point.n_heliostats / g.operating_hours_per_year
        for gname, grid in GRID_PRESETS.items():
            kg = grid.emissions(Energy(per_cal)).kg_co2e
            out[name]["payback_hours"][gname] = kg / per_h_kg if per_h_kg > 0 else math.inf
    # The learned method's increment over the classical one.
    d_gain = (
        (gains["ml"].co2_avoided_kg_per_year - gains["classical"].co2_avoided_kg_per_year)
        / point.n_heliostats
        / max(gains["ml"].operating_hours_per_year, 1e-9)
    )
    d_j = out["ml"]["compute_j_per_heliostat_calibration"] - out["classical"][
        "compute_j_per_heliostat_calibration"]  # fmt: skip
    # ML is charged against its increment over classical calibration, in all four
    # quadrants (less compute and no less heat pays back at once, not "never").
    inc = {
        gname: increment_payback_hours(grid.emissions(Energy(d_j)).kg_co2e, d_gain)
        for gname, grid in GRID_PRESETS.items()
    }
    out["ml_increment"] = {
        "extra_compute_j_per_heliostat_calibration": d_j,
        "extra_thermal_kwh_per_year": gains["ml"].thermal_gain_kwh_per_year
        - gains["classical"].thermal_gain_kwh_per_year,
        "payback_hours": {k: v[0] for k, v in inc.items()},
        "verdict": {k: v[1] for k, v in inc.items()},
    }
    return out


# ----------------------------------------------------------------------------- driver
def run_comparison(
    settings: CompareSettings = CompareSettings(),  # noqa: B008 - frozen
    campaign_dir: str | Path | None = None,
    paint_dirs=(),
    progress=None,
) -> dict:
    """Run every part of the comparison; returns one JSON-ready dict."""
    t0 = time.perf_counter()
    spots = spot_comparison(settings, progress)
    result: dict = {"settings": {
        k: getattr(settings, k) for k in CompareSettings.__slots__  # type: ignore[attr-defined]
    }, "spots": spots}  # fmt: skip
    if campaign_dir is not None:
        from heliostat.calibration import read_observations
        from heliostat.config import load_field

        cdir = Path(campaign_dir)
        if not (cdir / "field.toml").exists() or not (cdir / "observations.csv").exists():
            raise FileNotFoundError(f"{cdir}: expected field.toml and observations.csv there")
        field = load_field(cdir / "field.toml")
        obs, _ = read_observations(cdir / "observations.csv", field)
        source = str(cdir)
        result["campaign_frames"] = campaign_frames_comparison(cdir)
    else:
        field, obs, source = _simulated_campaign(settings)
    if progress:
        progress("pointing ...")
    pointing = pointing_comparison(field, obs, settings.train_points)
    pointing["source"] = source
    result["pointing"] = pointing
    result["paint"] = []
    for d in paint_dirs:
        from heliostat.calibration.paint import load_paint_dir

        pc = load_paint_dir(d)
        if pc.observations is None:
            result["paint"].append({"source": str(d), "note": "no valid records"})
            continue
        pp = pointing_comparison(pc.field, {pc.heliostat_id: pc.observations},
                                 settings.train_points)  # fmt: skip
        pp["source"] = str(d)
        result["paint"].append(pp)
    result["gain"] = gain_and_payback(spots, pointing, settings)
    ce, me = spots["classical"]["error_mm"], spots["ml"]["error_mm"]
    ml_spot_wins = me["median"] < ce["median"] and me["p95"] < ce["p95"]
    rms = pointing["heldout_rms_mrad"]
    result["verdict"] = {
        "spot_detector": "ml" if ml_spot_wins else "classical",
        "default_method": "onnx" if ml_spot_wins else "classical",
        "pointing_model": "hybrid" if rms["ml"] < rms["classical"] else "geometric",
        "hybrid_not_worse": bool(rms["ml"] <= rms["classical"] + 1e-9),
        "text": (
            _spot_text(ce, me, ml_spot_wins)
            + "; "
            + _pointing_text(rms, pointing)
        ),
    }  # fmt: skip
    result["wall_time_s"] = time.perf_counter() - t0
    return result


def _spot_text(ce: dict, me: dict, ml_wins: bool) -> str:
    fig = (f"median {ce['median']:.2f} vs {me['median']:.2f} mm, p95 {ce['p95']:.1f} vs "
           f"{me['p95']:.1f} mm (classical vs ML)")  # fmt: skip
    if ml_wins:
        return f"the learned spot detector is more accurate ({fig}): switch the default to onnx"
    if me["median"] < ce["median"] or me["p95"] < ce["p95"]:
        better = "more precise" if ce["median"] <= me["median"] else "more robust"
        return (
            f"neither detector wins both: classical is {better}, ML is "
            f"{'more robust' if better == 'more precise' else 'more precise'} ({fig}); "
            "the default stays classical (ML must win median and p95)"
        )
    return f"the classical spot detector is more accurate ({fig}): the default stays classical"


def _pointing_text(rms: dict, pointing: dict) -> str:
    used = [r for r in pointing["heliostats"] if r.get("correction_used")]
    n = len([r for r in pointing["heliostats"] if "hybrid_mrad" in r])
    tail = f" (learned correction used on {len(used)} of {n} heliostats)"
    if rms["ml"] < rms["classical"] - 1e-9:
        return (
            f"hybrid pointing model is better on held-out data ({rms['ml']:.3f} vs "
            f"geometric {rms['classical']:.3f} mrad){tail}"
        )
    if rms["ml"] > rms["classical"] + 1e-9:
        return (
            f"hybrid pointing model is WORSE than the geometric model on held-out data "
            f"({rms['ml']:.3f} vs {rms['classical']:.3f} mrad){tail}: use the geometric "
            "model"
        )
    return (
        f"hybrid pointing model equals the geometric model on held-out data "
        f"({rms['ml']:.3f} mrad){tail}: nothing learnable beyond the error model"
    )


def summary_rows(result: dict) -> list[dict]:
    """The readable table: one row per figure, classical and ML side by side."""
    s, p, g = result["spots"], result["pointing"], result["gain"]
    rows = []

    def add(metric, unit, c, m):
        rows.append({"metric": metric, "unit": unit, "classical": c, "ml": m})

    for k in ("median", "p95", "rms"):
        add(f"spot error {k}", "mm", s["classical"]["error_mm"][k], s["ml"]["error_mm"][k])
    add("spot error median", "px", s["classical"]["error_px"]["median"],
        s["ml"]["error_px"]["median"])  # fmt: skip
    add("spot failures", "frames", s["classical"]["failed"], s["ml"]["failed"])
    for case in ("second_spot", "edge", "saturated", "cloud", "streaky", "faceted"):
        if case in s["classical"]["by_case_mm"]:
            add(f"  {case} p95", "mm", s["classical"]["by_case_mm"][case]["p95"],
                s["ml"]["by_case_mm"][case]["p95"])  # fmt: skip
    cf = result.get("campaign_frames")
    if cf:
        add("campaign frames error median", "mm", cf["classical"]["error_mm"]["median"],
            cf["ml"]["error_mm"]["median"])  # fmt: skip
    rms = p["heldout_rms_mrad"]
    add("pointing held-out RMS (uncalibrated)", "mrad", rms["nominal"], rms["nominal"])
    add("pointing held-out RMS after calibration", "mrad", rms["classical"], rms["ml"])
    for pp in result.get("paint", []):
        if "heldout_rms_mrad" in pp:
            add("PAINT held-out RMS", "mrad", pp["heldout_rms_mrad"]["classical"],
                pp["heldout_rms_mrad"]["ml"])  # fmt: skip
    add("compute energy per frame", "J", s["classical"]["energy_per_frame_j"],
        s["ml"]["energy_per_frame_j"])  # fmt: skip
    add("compute time per frame", "ms", 1e3 * s["classical"]["time_per_frame_s"],
        1e3 * s["ml"]["time_per_frame_s"])  # fmt: skip
    add("compute energy per calibration", "J", p["energy_per_calibration_j"]["classical"],
        p["energy_per_calibration_j"]["ml"])  # fmt: skip
    add("training energy (data + training)", "J", 0.0,
        g["training_energy_j"] + g["training_data_energy_j"])  # fmt: skip
    add(f"  amortised over {g['amortised_over_uses']:g} uses", "J/use", 0.0,
        g["training_energy_per_use_j"])  # fmt: skip
    add("compute per heliostat calibration (all in)", "J",
        g["classical"]["compute_j_per_heliostat_calibration"],
        g["ml"]["compute_j_per_heliostat_calibration"])  # fmt: skip
    add(f"receiver dT at noon, no flow control ({g['operating_point']})", "K",
        g["classical"]["delta_t_k"], g["ml"]["delta_t_k"])  # fmt: skip
    add("heat gained, flow-controlled receiver, clear-sky year", "kWh/yr",
        g["classical"]["thermal_gain_kwh_per_year"],
        g["ml"]["thermal_gain_kwh_per_year"])  # fmt: skip
    for grid in g["classical"]["payback_hours"]:
        add(f"CO2 payback vs no calibration ({grid})", "h", g["classical"]["payback_hours"][grid],
            g["ml"]["payback_hours"][grid])  # fmt: skip
    inc = g["ml_increment"]
    add("ML over classical: extra thermal energy", "kWh/yr", "", inc["extra_thermal_kwh_per_year"])
    add("ML over classical: extra compute per calibration", "J", "",
        inc["extra_compute_j_per_heliostat_calibration"])  # fmt: skip
    for grid, h in inc["payback_hours"].items():
        add(f"ML over classical: payback ({grid})", "h", "",
            h if math.isfinite(h) and h > 0 else inc["verdict"][grid])  # fmt: skip
    return rows


def write_plots(result: dict, out_dir: str | Path) -> list[str]:
    """Spot-error CDF, held-out pointing per heliostat, energy bars (PNG, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    errs = result["spots"].get("_errors_mm", {})
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, e in errs.items():
        e = np.sort(np.asarray(e, float)[np.isfinite(np.asarray(e, float))])
        if e.size:
            ax.step(e, np.arange(1, e.size + 1) / e.size, where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("spot centroid error [mm]")
    ax.set_ylabel("fraction of frames")
    ax.set_title("Held-out simulated frames")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    files.append(str(out / "spot_error_cdf.png"))
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    rows = [r for r in result["pointing"]["heliostats"] if "hybrid_mrad" in r]
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4))
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["geometric_mrad"] for r in rows], 0.4, label="geometric")
        ax.bar(x + 0.2, [r["hybrid_mrad"] for r in rows], 0.4, label="hybrid (ML)")
        ax.set_xticks(x, [r["heliostat"] for r in rows], rotation=45)
        ax.set_ylabel("held-out RMS beam error [mrad]")
        ax.legend()
        fig.tight_layout()
        files.append(str(out / "pointing_heldout.png"))
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)

    g = result["gain"]
    s = result["spots"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    labels = ["per frame", "per calibration"]
    for ax, (lab, key) in zip(axes, [(labels[0], "frame"), (labels[1], "cal")], strict=True):
        if key == "frame":
            vals = [s["classical"]["energy_per_frame_j"], s["ml"]["energy_per_frame_j"]]
        else:
            vals = [g["classical"]["compute_j_per_heliostat_calibration"],
                    g["ml"]["compute_j_per_heliostat_calibration"]]  # fmt: skip
        ax.bar(["classical", "ml"], vals, color=["tab:blue", "tab:orange"])
        ax.set_title(f"compute energy {lab} [J]")
    fig.tight_layout()
    files.append(str(out / "energy.png"))
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return files
