"""``heliostat ledger``: compute energy and CO2 against the gain of better pointing.

Subcommands: ``summary`` (the book under each grid preset), ``gain`` (the modelled gain of
a pointing improvement), ``amortise`` (does a training run pay back, in heliostat-years),
``seeds`` (the founding comparison: NAS against heliostat fields), ``add`` (enter a compute
figure by hand), ``export`` (CSV with CodeCarbon's columns).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from heliostat.commands._common import print_json, print_table

DEFAULT_DB = "heliostat-history.sqlite"


def _default_db() -> str:
    return os.environ.get("HELIOSTAT_DB", DEFAULT_DB)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat ledger`` parser and its ``summary``, ``gain``, ``add`` and
    ``export`` subcommands to ``sub``, the CLI's top-level subcommands."""
    p = sub.add_parser(
        "ledger",
        help="energy ledger: compute CO2 against the CO2 better pointing displaces",
        description="Energy ledger: what the computing costs against what the better "
        "pointing gains. See docs/ledger.md.",
    )
    lsub = p.add_subparsers(dest="ledger_command", metavar="SUBCOMMAND")

    s = lsub.add_parser("summary", help="compute CO2 vs displaced CO2, payback, return ratio")
    s.add_argument(
        "--db",
        default=None,
        help=f"history SQLite file (default ${{HELIOSTAT_DB}} or {DEFAULT_DB})",
    )
    s.add_argument(
        "--grid",
        default=None,
        help="grid preset (us, california, renewable-cloud) or kg CO2e/kWh; default: all",
    )
    s.add_argument(
        "--grid-csv",
        metavar="FILE",
        help="hourly carbon intensity (timestamp, gCO2e/kWh), charged at the hour the energy "
        "was used; --grid is the fallback outside it (default us)",
    )
    s.add_argument(
        "--campaign-hours",
        type=float,
        default=None,
        help="wall-clock hours of the campaign: adds a 'whole system' row with the PC's idle "
        "power and the cameras over them, beside the metered marginal compute",
    )
    s.add_argument("--pc-idle-w", type=float, default=30.0, help="PC idle power [W] (30)")
    s.add_argument("--cameras", type=int, default=1, help="cameras (1)")
    s.add_argument("--camera-w", type=float, default=4.0, help="power per camera [W] (4)")
    s.add_argument(
        "--runs-per-year",
        type=float,
        default=1.0,
        help="calibration runs a year (the energy return ratio sets a year of heat against "
        "a year of compute; default 1)",
    )
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=run_summary)

    g = lsub.add_parser("gain", help="thermal gain and CO2 avoided by better pointing")
    g.add_argument(
        "--before-mrad",
        type=float,
        required=True,
        help="radial RMS pointing error of the reflected beam before calibration [mrad] "
        "(not of the mirror normal: a normal error is about half the beam's)",
    )
    g.add_argument(
        "--after-mrad",
        type=float,
        required=True,
        help="radial RMS pointing error of the reflected beam after calibration [mrad]",
    )
    g.add_argument(
        "--point",
        default="heliogen-like",
        choices=["heliogen-like", "plant-like"],
        help="hypothetical reference point used without --site (with --site: only its "
        "absorber's α, ε, h, U)",
    )
    g.add_argument(
        "--site",
        metavar="FIELD_TOML",
        help="the field's own receiver: site, heliostats, mirrors, slant range and receiver "
        "size from a field config",
    )
    g.add_argument(
        "--target",
        help="receiver's target id in the field config (default: 'receiver', else the first)",
    )
    g.add_argument(
        "--fluid-c",
        type=float,
        help="fluid / outlet temperature of the receiver [°C] (default: 150 for a field's "
        "own receiver, the reference point's otherwise)",
    )
    g.add_argument("--n-heliostats", type=int)
    g.add_argument("--mirror-area-m2", type=float)
    g.add_argument("--slant-m", type=float, help="representative slant range [m]")
    g.add_argument("--slope-mrad", type=float, help="mirror slope error per axis [mrad]")
    g.add_argument("--aperture-radius-m", type=float, help="circular aperture radius [m]")
    g.add_argument("--aperture-width-m", type=float, help="rectangular aperture width [m]")
    g.add_argument("--aperture-height-m", type=float, help="rectangular aperture height [m]")
    g.add_argument("--date", default="2025-03-21", help="day of the daily figures")
    g.add_argument(
        "--treatment",
        default="gaussian",
        choices=["gaussian", "fixed"],
        help="pointing error as a Gaussian over time (default) or a fixed offset",
    )
    g.add_argument("--boiler-efficiency", type=float, default=0.9)
    g.add_argument(
        "--dni-scale",
        type=float,
        default=1.0,
        help="factor on clear-sky DNI (e.g. the site's clear-sky fraction)",
    )
    g.add_argument("--db", help="also record the gain in this history file")
    g.add_argument(
        "--method",
        default="",
        choices=["", "classical", "ml"],
        help="calibration method that achieved --after-mrad (for --db)",
    )
    g.add_argument("--json", action="store_true", help="machine-readable output")
    g.set_defaults(func=run_gain)

    a = lsub.add_parser("add", help="add a compute-energy entry by hand")
    a.add_argument("--db", default=None)
    a.add_argument(
        "--stage",
        required=True,
        choices=["vision", "calibration", "bridge", "ml_training", "ml_inference"],
    )
    a.add_argument("--method", required=True, choices=["classical", "ml"])
    e = a.add_mutually_exclusive_group(required=True)
    e.add_argument("--energy-kwh", type=float, help="IT energy [kWh]")
    e.add_argument("--energy-j", type=float, help="IT energy [J]")
    a.add_argument("--source", required=True, help="where the figure comes from")
    a.add_argument("--pue", type=float, default=1.0)
    a.add_argument("--duration-s", type=float, default=0.0)
    a.add_argument("--heliostat-id", default="")
    a.add_argument("--model-id", default="")
    a.add_argument("--n-inferences", type=int, default=0)
    a.add_argument("--expected-inferences", type=int, default=0)
    a.add_argument("--note", default="")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.set_defaults(func=run_add)

    m = lsub.add_parser(
        "amortise",
        help="does a training run pay back? heliostat-years and fields to repay it",
        description="A training run's CO2e against the CO2 the gained heat displaces, for "
        "calibration as a whole and for ML's increment over classical calibration. "
        "Heliostat-years: one heliostat served for a clear-sky year.",
    )
    tr = m.add_mutually_exclusive_group(required=True)
    tr.add_argument("--training-kwh", type=float, help="training facility energy [kWh]")
    tr.add_argument(
        "--training",
        choices=["transformer-base", "bert-base", "nas", "model-card"],
        help="a published run (Strubell et al. 2019 Table 3) or our model card",
    )
    m.add_argument(
        "--grid",
        default=None,
        help="grid preset (us, california, renewable-cloud) or kg CO2e/kWh; default: all",
    )
    m.add_argument(
        "--grid-csv",
        metavar="FILE",
        help="hourly carbon intensity (timestamp, gCO2e/kWh), charged at the hour the energy "
        "was used; --grid is the fallback outside it (default us)",
    )
    m.add_argument(
        "--point",
        default="heliogen-like",
        choices=["heliogen-like", "plant-like"],
        help="hypothetical reference point used without --site",
    )
    m.add_argument("--site", metavar="FIELD_TOML", help="a field config: its own receiver")
    m.add_argument("--target", help="receiver's target id (default: 'receiver', else the first)")
    m.add_argument("--fluid-c", type=float, help="receiver fluid / outlet temperature [°C]")
    m.add_argument(
        "--before-mrad",
        type=float,
        default=3.0,
        help="uncalibrated RMS error of the reflected beam [mrad] (default 3)",
    )
    m.add_argument(
        "--classical-mrad",
        type=float,
        default=0.5,
        help="RMS error of the reflected beam after classical calibration [mrad] (default 0.5)",
    )
    m.add_argument(
        "--ml-mrad",
        type=float,
        default=None,
        help="RMS error of the reflected beam after ML calibration [mrad] "
        "(default: assumed 10%% below classical's, and said so)",
    )
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(func=run_amortise)

    sd = lsub.add_parser(
        "seeds",
        help="the founding comparison: NAS's training CO2 against what heliostat fields displace",
    )
    sd.add_argument("--json", action="store_true", help="machine-readable output")
    sd.set_defaults(func=run_seeds)

    x = lsub.add_parser("export", help="write entries as CSV (CodeCarbon's columns first)")
    x.add_argument("--db", default=None)
    x.add_argument("--csv", required=True, help="output CSV path")
    x.add_argument("--grid", default="us", help="grid preset or kg CO2e/kWh (default: us)")
    x.add_argument(
        "--grid-csv",
        metavar="FILE",
        help="hourly carbon intensity (timestamp, gCO2e/kWh), charged at the hour the energy "
        "was used; --grid is the fallback outside it (default us)",
    )
    x.add_argument("--json", action="store_true", help="machine-readable output")
    x.set_defaults(func=run_export)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _open_existing(db: str | None):
    from heliostat.ledger.book import LedgerBook

    path = db or _default_db()
    if not Path(path).is_file():
        raise FileNotFoundError(f"no history database at {path!r} (give --db FILE)")
    return LedgerBook(path)


def run_summary(args: argparse.Namespace) -> int:
    """Run ``heliostat ledger summary``: compute energy [kWh] and CO2e [kg] by stage
    against the CO2e the recorded gains displace, per grid preset (or ``--grid``).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; this reads ``--db``, ``--grid``, ``--json``.

    Returns
    -------
    int
        Exit code: 0.
    """

    from heliostat.ledger.units import format_energy, format_mass, format_operating_hours

    grid = _grid_from_args(args)
    system_j = 0.0
    if args.campaign_hours is not None:
        from heliostat.ledger.system import SystemPower

        sp = SystemPower(args.pc_idle_w, args.camera_w, args.cameras)
        system_j = sp.energy(args.campaign_hours).joules
    with _open_existing(args.db) as book:
        sums = (
            [book.summary(grid, args.runs_per_year, system_j)]
            if grid is not None
            else book.summaries(args.runs_per_year, system_j)
        )
    if args.json:
        out = [s.as_dict() for s in sums]
        print_json(out[0] if len(out) == 1 else {"summaries": out})
        return 0
    first = True
    for s in sums:
        if first:
            print("Compute by stage (facility energy, training amortised):")
            print_table(
                [
                    {
                        "stage": r["stage"],
                        "method": r["method"],
                        "entries": r["entries"],
                        "energy": format_energy(r["compute_kwh"] * 3.6e6),
                        "sources": r["sources"],
                    }
                    for r in s.by_stage
                ]
            )
            for n in s.notes:
                print(f"note: {n}")
            if system_j > 0:
                print(
                    f"whole system: PC idle {args.pc_idle_w:g} W + {args.cameras} camera(s) × "
                    f"{args.camera_w:g} W over {args.campaign_hours:g} h of campaign = "
                    f"{format_energy(system_j)} (assumed powers), beside the metered compute"
                )
            if s.gain is None:
                print("\nno gain recorded: run `heliostat ledger gain ... --db FILE` first")
            else:
                g = s.gain
                print(
                    f"\nGain ({g.details.get('label', g.point)}, {g.before_mrad:g} -> "
                    f"{g.after_mrad:g} mrad beam RMS, {g.n_heliostats} heliostats): "
                    f"{format_energy(g.thermal_gain_kwh_per_year * 3.6e6)} of heat and "
                    f"{format_mass(g.co2_avoided_kg_per_year)} CO2 displaced per clear-sky "
                    "year (flow-controlled receiver)"
                )
            first = False
        print(f"\nGrid {s.grid.name}: {s.grid.kg_per_kwh:.4g} kg CO2e/kWh ({s.grid.source})")
        if s.payback:
            print_table(
                [
                    {
                        "scope": r.scope,
                        "against": r.against,
                        "compute": format_energy(r.compute_kwh * 3.6e6, r.compute_rel_uncertainty),
                        "compute CO2e": format_mass(r.compute_kg_co2e, r.compute_rel_uncertainty),
                        "displaced per year": format_mass(r.displaced_kg_co2_per_year),
                        "payback (plant operation)": format_operating_hours(
                            r.payback_hours, r.compute_rel_uncertainty
                        ),
                        f"heat/compute per year ({r.runs_per_year:g} run/yr)": (
                            f"{r.energy_return_ratio:.2g}"
                            if math.isfinite(r.energy_return_ratio)
                            else "n/a"
                        ),
                    }
                    for r in s.payback
                ]
            )
    print(
        "\nPayback counts clear-sky operating hours; the ± is the compute meter's "
        "uncertainty only (the gain model's is not included)."
    )
    return 0


def _grid_from_args(args: argparse.Namespace):
    """``--grid-csv`` (with ``--grid`` as its fallback, default us), else ``--grid``, else
    None (every preset)."""
    from heliostat.ledger.carbon import grid_intensity

    if getattr(args, "grid_csv", None):
        from heliostat.ledger.grid_series import read_grid_csv

        return read_grid_csv(args.grid_csv, grid_intensity(args.grid or "us"))
    return grid_intensity(args.grid) if args.grid else None


def _point_from_args(args: argparse.Namespace):
    from heliostat import optics
    from heliostat.ledger import gain as gm

    cfg = None
    if args.site:
        from heliostat.config import load_field

        cfg = load_field(args.site)
    point = gm.gain_point(
        cfg,
        args.target,
        args.point,
        label=Path(args.site).name if args.site else "",
        fluid_c=args.fluid_c,
    )
    ch: dict = {}
    if args.n_heliostats is not None:
        ch["n_heliostats"] = args.n_heliostats
    if args.mirror_area_m2 is not None:
        ch["mirror_area_m2"] = args.mirror_area_m2
    if args.slant_m is not None:
        ch["slant_m"] = args.slant_m
    if args.slope_mrad is not None:
        if not args.slope_mrad >= 0:
            raise ValueError(f"--slope-mrad must be >= 0, got {args.slope_mrad}")
        ch["slope_rad"] = args.slope_mrad * 1e-3
    if args.aperture_radius_m is not None:
        ap = optics.CircularAperture(args.aperture_radius_m)
        ch["aperture"] = ap
        ch["absorber"] = gm.replace(ch.get("absorber", point.absorber), area_m2=ap.area_m2)
    elif args.aperture_width_m is not None or args.aperture_height_m is not None:
        if args.aperture_width_m is None or args.aperture_height_m is None:
            raise ValueError("give both --aperture-width-m and --aperture-height-m")
        ap = optics.RectangularAperture(args.aperture_width_m, args.aperture_height_m)
        ch["aperture"] = ap
        ch["absorber"] = gm.replace(ch.get("absorber", point.absorber), area_m2=ap.area_m2)
    return gm.with_changes(point, **ch) if ch else point


def run_gain(args: argparse.Namespace) -> int:
    """Run ``heliostat ledger gain``: the modelled gain of improving the pointing from
    ``--before-mrad`` to ``--after-mrad`` (radial RMS [mrad]): intercept, target
    temperature [°C], thermal energy [kWh] and CO2e avoided [kg]; ``--db`` records it.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; this reads ``--after-mrad``, ``--before-mrad``,
        ``--boiler-efficiency``, ``--date``, ``--db``, ``--dni-scale``, ``--json``,
        ``--method``, ``--treatment``.

    Returns
    -------
    int
        Exit code: 0.
    """

    from heliostat.ledger.gain import pointing_gain

    point = _point_from_args(args)
    res = pointing_gain(
        point,
        args.before_mrad,
        args.after_mrad,
        date=args.date,
        treatment=args.treatment,
        boiler_efficiency=args.boiler_efficiency,
        dni_scale=args.dni_scale,
    )
    if args.db:
        from heliostat.ledger.book import GainRecord, LedgerBook

        with LedgerBook(args.db) as book:
            book.add_gain(GainRecord.from_result(res, args.method))
    d = res.as_dict()
    if args.json:
        print_json(d)
        return 0
    print(gain_text(d))
    return 0


def gain_text(d: dict) -> str:
    """The readable form of a gain (:meth:`GainResult.as_dict`): which receiver each figure
    is, human units, clear sky said."""
    import io

    from heliostat.ledger.units import format_energy, format_mass

    def format_table(rows, cols) -> str:
        buf = io.StringIO()
        print_table(rows, cols, stream=buf)
        return buf.getvalue().rstrip("\n")

    lines = [
        f"{d['label']} ({d['site']}, {d['n_heliostats']} heliostats), "
        f"{d['before_mrad']:g} -> {d['after_mrad']:g} mrad RMS of the reflected beam "
        f"({d['treatment']}), clear-sky {d['date']}, noon {d['noon_utc']}",
        format_table(
            [
                {
                    "quantity": "intercept",
                    "before": f"{d['intercept_before']:.4f}",
                    "after": f"{d['intercept_after']:.4f}",
                },
                {
                    "quantity": "power on the receiver [kW]",
                    "before": f"{d['power_before_w'] / 1e3:.4g}",
                    "after": f"{d['power_after_w'] / 1e3:.4g}",
                },
                {
                    "quantity": "receiver temperature, no flow control [°C]",
                    "before": f"{d['t_before_c']:.1f}",
                    "after": f"{d['t_after_c']:.1f}",
                },
                {
                    "quantity": "stagnation temperature [°C]",
                    "before": f"{d['stagnation_before_c']:.1f}",
                    "after": f"{d['stagnation_after_c']:.1f}",
                },
                {
                    "quantity": f"heat, flow-controlled at {d['t_hold_c']:g} °C [kWh/day]",
                    "before": f"{d['thermal_before_kwh_per_day']:.4g}",
                    "after": f"{d['thermal_after_kwh_per_day']:.4g}",
                },
            ],  # fmt: skip
            ["quantity", "before", "after"],
        ),
        f"No flow control (fixed U, fluid at T_f): ΔT {d['delta_t_k']:.3g} K at noon.",
        f"Flow-controlled (held at {d['t_hold_c']:g} °C): "
        f"+{format_energy(d['thermal_gain_kwh_per_day'] * 3.6e6)} of heat per day "
        f"({format_energy(d['thermal_gain_kwh_per_day_per_heliostat'] * 3.6e6)} per "
        f"heliostat), +{format_energy(d['thermal_gain_kwh_per_year'] * 3.6e6)} per clear-sky "
        f"year; CO2 displaced {format_mass(d['co2_avoided_kg_per_day'])}/day, "
        f"{format_mass(d['co2_avoided_kg_per_year'])} per clear-sky year (gas at "
        f"{d['gas_kg_co2_per_kwh']} kg/kWh, boiler {d['boiler_efficiency']:g}).",
    ]
    if d.get("hypothetical"):
        lines.append(
            "Hypothetical reference point (sizes chosen by us, not a plant's data); give "
            "--site FIELD_TOML for a field's own receiver."
        )
    return "\n".join(lines)


def run_amortise(args: argparse.Namespace) -> int:
    """Run ``heliostat ledger amortise``: payback [operating h], heliostat-years and
    field-years for a training run, whole calibration and ML's increment, per grid.

    Returns
    -------
    int
        Exit code: 0.
    """
    from heliostat.ledger import amortise as am
    from heliostat.ledger.carbon import GRID_PRESETS, Energy
    from heliostat.ledger.gain import gain_point, pointing_gain
    from heliostat.ledger.units import format_energy, format_mass, format_operating_hours

    if args.training_kwh is not None:
        if not (math.isfinite(args.training_kwh) and args.training_kwh >= 0):
            raise ValueError(f"--training-kwh must be >= 0, got {args.training_kwh}")
        run = am.TrainingRun("given", Energy.from_kwh(args.training_kwh), "given by the user")
    else:
        run = am.training_run(args.training)
    series = _grid_from_args(args)
    grids = [series] if series is not None else list(GRID_PRESETS.values())
    cfg = None
    if args.site:
        from heliostat.config import load_field

        cfg = load_field(args.site)
    point = gain_point(
        cfg,
        args.target,
        args.point,
        label=Path(args.site).name if args.site else "",
        fluid_c=args.fluid_c,
    )
    ml_assumed = args.ml_mrad is None
    ml = 0.9 * args.classical_mrad if ml_assumed else args.ml_mrad
    whole = pointing_gain(point, args.before_mrad, args.classical_mrad)
    inc = pointing_gain(point, args.classical_mrad, ml)
    rows = am.amortise(run, grids, whole, inc)
    if args.json:
        print_json(
            {
                "training": {
                    "name": run.name,
                    "kwh": run.energy.kwh,
                    "source": run.source,
                    "rel_uncertainty": run.rel_uncertainty,
                },
                "point": point.label,
                "hypothetical_point": point.hypothetical,
                "before_mrad": args.before_mrad,
                "classical_mrad": args.classical_mrad,
                "ml_mrad": ml,
                "ml_mrad_assumed": ml_assumed,
                "annual_basis": "clear-sky year",
                "rows": am.as_dicts(rows),
            }
        )
        return 0
    rel = run.rel_uncertainty
    if series is not None and hasattr(series, "mean_kg_per_kwh"):
        print(
            f"Grid {series.name}: a training run has no hour here, so it is charged at the "
            f"series' mean, {series.mean_kg_per_kwh:.4g} kg CO2e/kWh"
        )
    print(f"Training: {run.name}, {format_energy(run.energy.joules, rel)} ({run.source})")
    print(
        f"Gain at {point.label} ({point.n_heliostats} heliostats), flow-controlled receiver, "
        f"clear-sky year: calibration {args.before_mrad:g} -> {args.classical_mrad:g} mrad "
        f"displaces {format_mass(whole.co2_avoided_kg_per_year)}/year; ML over classical "
        f"{args.classical_mrad:g} -> {ml:.3g} mrad displaces "
        f"{format_mass(inc.co2_avoided_kg_per_year)}/year"
        + (" (ML's error assumed 10 % below classical's: give --ml-mrad)" if ml_assumed else "")
    )
    print_table(
        [
            {
                "grid": r.grid,
                "scope": r.scope,
                "training CO2e": format_mass(r.training_kg_co2e, rel),
                "payback (one field, operating hours)": format_operating_hours(
                    r.payback_hours, rel
                ),
                "heliostat-years to repay": _count(r.heliostat_years),
                "field-years to repay": _count(r.field_years),
            }
            for r in rows
        ]
    )
    return 0


def _count(x: float) -> str:
    """A count of years for people: 2 significant figures, "never" for inf."""
    if not math.isfinite(x):
        return "never"
    return f"{float(f'{x:.2g}'):,.0f}" if x >= 100 else f"{x:.2g}"


def run_seeds(args: argparse.Namespace) -> int:
    """Run ``heliostat ledger seeds``: Strubell et al.'s NAS run under three grids against
    the CO2 a Heliogen-like field and a 10,000-heliostat plant displace a clear-sky year.

    Returns
    -------
    int
        Exit code: 0.
    """
    from heliostat.ledger.amortise import seeds
    from heliostat.ledger.units import format_mass

    d = seeds()
    if args.json:
        print_json(d)
        return 0
    print(f"Training: NAS, {d['training']['kwh']:,.0f} kWh ({d['training']['source']})")
    print_table(
        [
            {
                "electricity": r["grid"],
                "lb CO2e/kWh": f"{r['lb_co2e_per_kwh']:g}",
                "NAS training CO2e": f"{r['t_co2e']:.3g} t",
            }
            for r in d["runs"]
        ]
    )
    print(
        f"\nAgainst (hypothetical reference fields, clear-sky year; calibration gain "
        f"{d['before_mrad']:g} -> {d['after_mrad']:g} mrad of the reflected beam):"
    )
    rows = []
    for f in d["fields"]:
        gain_t = f["displaced_t_per_year_calibration_gain"]
        rows.append(
            {
                "field": f["field"],
                "all its heat displaces": format_mass(1e3 * f["displaced_t_per_year_all_heat"])
                + "/yr",
                "its calibration gain displaces": format_mass(1e3 * gain_t) + "/yr",
                "years of that gain to repay NAS ("
                + " / ".join(r["grid"] for r in d["runs"])
                + ")": " / ".join(
                    _count(r["t_co2e"] / gain_t if gain_t > 0 else math.inf) for r in d["runs"]
                ),
            }
        )
    print_table(rows)
    return 0


def run_add(args: argparse.Namespace) -> int:
    """Run ``heliostat ledger add``: record one compute entry (energy [kWh] or [J], stage,
    method) in the ledger book.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; this reads ``--db``, ``--duration-s``, ``--energy-j``,
        ``--energy-kwh``, ``--expected-inferences``, ``--heliostat-id``, ``--method``,
        ``--model-id``, ``--n-inferences``, ``--note``, ``--pue``, ``--source``,
        ``--stage``.

    Returns
    -------
    int
        Exit code: 0.
    """

    from heliostat.ledger.book import LedgerBook, LedgerEntry
    from heliostat.ledger.carbon import Energy

    energy = (
        Energy.from_kwh(args.energy_kwh)
        if args.energy_kwh is not None
        else Energy.from_joules(args.energy_j)
    )
    entry = LedgerEntry(
        stage=args.stage,
        method=args.method,
        energy_j=energy.joules,
        source=args.source,
        pue=args.pue,
        duration_s=args.duration_s,
        heliostat_id=args.heliostat_id,
        model_id=args.model_id,
        n_inferences=args.n_inferences,
        expected_inferences=args.expected_inferences,
        note=args.note,
    )
    db = args.db or _default_db()
    with LedgerBook(db) as book:
        book.add(entry)
    if args.json:
        from dataclasses import asdict

        print_json({"added": asdict(entry), "db": db})
    else:
        print(
            f"added a {entry.stage}/{entry.method} entry of {energy.joules / 3.6e6:.6g} kWh to {db}"
        )
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Run ``heliostat ledger export``: write the ledger's entries with their CO2e [kg]
    (``--grid`` preset) to a CSV file.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; this reads ``--csv``, ``--db``, ``--grid``.

    Returns
    -------
    int
        Exit code: 0.
    """

    with _open_existing(args.db) as book:
        n = book.export_csv(args.csv, _grid_from_args(args))
    if args.json:
        print_json({"rows": n, "csv": args.csv})
    else:
        print(f"wrote {n} rows to {args.csv}")
    return 0
