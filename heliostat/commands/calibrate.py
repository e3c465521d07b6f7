"""``heliostat calibrate``: fit each heliostat's error model and write its corrections."""

from __future__ import annotations

import argparse
import math
import sys

from heliostat.commands._common import id_sort_key, print_json, print_table
from heliostat.errors import InputError

#: Up to this many heliostats, the text output gives each one's chosen set and reason;
#: above, a count per chosen set (``--json`` has every heliostat's).
MAX_REASON_LINES = 20
#: The point the pointing error is measured from (the residual of
#: :mod:`heliostat.calibration.fit`).
ERROR_POINT = "mirror centre (pivot + PAINT's concentrator translation)"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat calibrate`` parser to ``sub``, the CLI's top-level subcommands."""
    p = sub.add_parser(
        "calibrate",
        help="fit heliostat error models from observations (CSV or PAINT files)",
        description="Fit each heliostat's kinematic error parameters to its calibration "
        "observations (robust least squares), report the pointing error before and after "
        "and its leave-one-out estimate, and optionally write the corrections file "
        "(docs/corrections.md). Each heliostat's parameter set is chosen by nested "
        "cross-validation unless --params or --no-select fixes it. Rejected rows are "
        "listed on stderr; the rest go on.",
    )
    p.add_argument("observations", nargs="?", metavar="OBS.csv", help="observations.csv")
    p.add_argument("--field", metavar="FIELD_TOML", help="field.toml (with OBS.csv)")
    p.add_argument(
        "--paint",
        metavar="DIR",
        help="PAINT files instead: one heliostat's folder or a root holding many (PAINT's "
        "download layout, flat, or ARTIST's tutorial layout); one row per heliostat",
    )
    p.add_argument(
        "--history",
        metavar="DB",
        help="the observations of a history database instead (with --field), streamed: "
        "--chunk heliostats read, fitted and written out at a time, for fields too large "
        "to hold (--json then prints one JSON line per heliostat)",
    )
    p.add_argument(
        "--chunk",
        type=int,
        default=10_000,
        metavar="N",
        help="heliostats per chunk read from --history (default 10000)",
    )
    p.add_argument(
        "--spot",
        type=str.lower,
        choices=("helios", "utis"),
        default="helios",
        help="PAINT focal-spot method, case-insensitive (default: HeliOS)",
    )
    p.add_argument(
        "--params",
        metavar="GROUPS",
        help="parameter groups or names to fit, a fixed set (default: chosen per "
        "heliostat by nested cross-validation); separated by commas or spaces, 'all' for "
        "every group; DRIVE:NAME applies to that drive only, a name of another drive is "
        "ignored for a heliostat (a drive none of whose names is given is chosen as by "
        "default), e.g. 'azel:zero_offsets azel:first_axis_tilt linear:zero_offsets'",
    )
    p.add_argument(
        "--no-select",
        action="store_true",
        help="fit the drive's default groups as they are (no choice by cross-validation)",
    )
    p.add_argument(
        "--residual", choices=("angle", "plane"), default="angle", help="residual (fit.py)"
    )
    p.add_argument(
        "--loo",
        choices=("refit", "hat", "none"),
        default="refit",
        help="leave-one-out method (refit: exact; hat: closed form, for large fields)",
    )
    p.add_argument("--kfold", type=int, default=5, metavar="K", help="k-fold CV (0: skip)")
    p.add_argument(
        "--workers", type=int, default=1, metavar="N", help="parallel processes (default 1)"
    )
    p.add_argument("--backend", choices=("process", "dask"), default="process")
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of a running Dask scheduler (e.g. tcp://host:8786): fit on that "
        "cluster instead of local processes (the [dist] extra); progress on stderr",
    )
    p.add_argument("--sun-tolerance-deg", type=float, default=None, metavar="DEG")
    p.add_argument("--out", metavar="JSON", help="write the corrections file here")
    p.add_argument(
        "--at",
        action="append",
        metavar="ISO",
        help="UTC time for a setpoint in the corrections file (repeat for several)",
    )
    p.add_argument("--target", metavar="ID", help="target for --at setpoints (default: first)")
    p.add_argument("--aim", default="0,0", metavar="X,Y", help="aim point on the target [m]")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def _dask_client(address: str):
    """A ``distributed.Client`` on the scheduler at ``address``; one-line errors when
    Dask is missing or the scheduler does not answer."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError(
            "--scheduler needs Dask distributed: pip install 'heliostat-calibration[dist]'"
        ) from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"--scheduler {address}: no Dask scheduler answered ({exc})") from None


def _check_params(spec: str | None) -> None:
    """Refuse a ``--params`` name that is a group or parameter of no known drive (or, as
    ``DRIVE:NAME``, not of that drive)."""
    from heliostat.kinematics import drive_names, error_names, group_names

    if spec is None:
        return
    known = {"all"}
    for d in drive_names():
        mine = set(group_names(d)) | set(error_names(d))
        known |= mine | {f"{d}:{n}" for n in mine}
    for t in _tokens(spec):
        if t not in known:
            groups = "; ".join(f"{d}: {', '.join(group_names(d))}" for d in drive_names())
            raise ValueError(
                f"--params: {t!r} is neither a parameter group nor a parameter of any drive; "
                f"groups by drive: {groups}"
            )


def _tokens(spec: str) -> list[str]:
    """``--params`` names: separated by commas and/or white space."""
    return spec.replace(",", " ").split()


def _names(drive: str, spec: str | None) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """The parameter names ``spec`` (``--params``) fixes for a ``drive`` heliostat (None:
    none of its names is this drive's, so the set is chosen as by default), and the names
    in it that belong to other drives only (ignored here). A name written ``DRIVE:NAME``
    applies to that drive's heliostats only (silently skipped for others). Names of no
    drive are refused by :func:`_check_params`."""
    from heliostat.kinematics import error_names, group_names, names_for_groups

    if spec is None:
        return None, ()
    tokens = _tokens(spec)
    tokens = [
        t.split(":", 1)[1] if t.startswith(f"{drive}:") else t
        for t in tokens
        if ":" not in t or t.startswith(f"{drive}:")
    ]
    if tokens == ["all"]:
        tokens = list(group_names(drive))
    groups = [t for t in tokens if t in group_names(drive)]
    singles = [t for t in tokens if t not in groups and t in error_names(drive)]
    ignored = tuple(t for t in tokens if t not in groups and t not in singles)
    if not groups and not singles:
        return None, ignored
    wanted = set(names_for_groups(drive, groups)) | set(singles)
    return tuple(n for n in error_names(drive) if n in wanted), ignored


def run(args: argparse.Namespace) -> int:
    """Run ``heliostat calibrate``: fit each heliostat's error model from an observations
    CSV (or PAINT records) and print the fit (RMS and leave-one-out errors [mrad]);
    with ``--out`` write the corrections file.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; this reads ``--aim``, ``--at``, ``--backend``,
        ``--field``, ``--json``, ``--kfold``, ``--loo``, ``--no-select``, ``OBS.csv``,
        ``--out``, ``--paint``, ``--params``, ``--residual``, ``--scheduler``, ``--spot``,
        ``--sun-tolerance-deg``, ``--target``, ``--workers``.

    Returns
    -------
    int
        Exit code: 0 when every fit succeeded, 1 when one failed.
    """
    from heliostat.calibration.corrections import (
        corrected_setpoints,
        corrections_document,
        heliostat_entry,
        parse_aim,
        write_corrections,
    )
    from heliostat.calibration.field import MIN_RECORDS_TO_SELECT, calibrate_field, too_few_records
    from heliostat.calibration.fit import FitResult
    from heliostat.calibration.observations import SUN_TOLERANCE_DEG, read_observations

    history = getattr(args, "history", None)
    if sum(x is not None for x in (args.paint, args.observations, history)) != 1:
        raise ValueError("give one of OBS.csv (with --field), --paint DIR or --history DB")
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    _check_params(args.params)
    tol = args.sun_tolerance_deg if args.sun_tolerance_deg is not None else SUN_TOLERANCE_DEG
    if history is not None:
        return _run_history(args, tol)
    notes: list[FitResult] = []
    if args.paint is not None:
        field, obs, rejected, label, notes = _read_paint(args)
        source = args.paint
    else:
        if args.field is None:
            raise ValueError("OBS.csv needs --field FIELD_TOML")
        from heliostat.config import load_field

        field, source = load_field(args.field), args.field
        obs, rejected = read_observations(args.observations, field, tol)
        label = lambda r: f"{args.observations} row {r.row}: {r.reason}"  # noqa: E731
    for r in rejected:
        print(f"heliostat calibrate: rejected {label(r)}", file=sys.stderr)
    if not obs and not notes:
        raise ValueError("no valid observations to fit")
    jobs = []
    ignored: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for hid, o in obs.items():
        kin = field.heliostat(hid).kinematics
        job, names, other = _job(args, kin, o)
        if other:
            ignored.setdefault((kin.drive, other), []).append(hid)
        select = job.select
        few = None
        if select and len(o) < MIN_RECORDS_TO_SELECT or args.paint and not select:
            few = too_few_records(job, explicit=names is not None)
        if few is not None:
            notes.append(few)
        else:
            jobs.append(job)
    from heliostat.progress import Progress

    with Progress("fits") as progress:
        if getattr(args, "scheduler", None):
            with _dask_client(args.scheduler) as client:
                results = calibrate_field(jobs, backend="dask", client=client, progress=progress)
        else:
            backend = "sequential" if args.workers == 1 or len(jobs) < 2 else args.backend
            results = calibrate_field(
                jobs, backend=backend, max_workers=args.workers, progress=progress
            )
    for (drive, other), hids in ignored.items():
        print(
            f"heliostat calibrate: note: --params {','.join(other)} not of drive {drive!r}: "
            f"ignored for {_name_list(hids)}",
            file=sys.stderr,
        )
    # One row per heliostat, sorted by id.
    ordered = sorted([*results.values(), *notes], key=lambda r: id_sort_key(r.heliostat_id))
    results = {r.heliostat_id: r for r in ordered}
    summaries = [r.summary() for r in ordered]
    if args.paint:
        for sm in summaries:
            sm["error_measured_from"] = ERROR_POINT

    if args.out and field is not None:
        target = field.target(args.target) if args.target else next(iter(field.targets.values()))
        aim = parse_aim(args.aim)
        entries = []
        for r in results.values():
            if not r.success:
                print(
                    f"heliostat calibrate: {r.heliostat_id}: fit failed, not written: {r.reason}",
                    file=sys.stderr,
                )
                continue
            sp = None
            if args.at:
                kin = field.heliostat(r.heliostat_id).kinematics
                sp = corrected_setpoints(kin, r.errors, field.site, args.at, target, aim)
            entries.append(heliostat_entry(r, sp))
        write_corrections(args.out, corrections_document(entries, source))
        print(
            f"heliostat calibrate: corrections of {len(entries)} heliostat(s) written to "
            f"{args.out}",
            file=sys.stderr,
        )

    if args.json:
        print_json(summaries)
    else:
        print_table(
            [
                {
                    "heliostat": s["heliostat"],
                    "ok": "yes" if s["success"] else "FAILED",
                    "n_points": s["n_points"],
                    "outliers": s["n_outliers"],
                    "rms_before_mrad": s["rms_before_mrad"],
                    "rms_after_mrad": s["rms_after_mrad"],
                    "loo_rms_mrad": s["loo_rms_mrad"],
                    "n_params": len(s["parameters"]) if s["success"] else "-",
                    "nested_rms_mrad": float(
                        (s["parameter_selection"] or {}).get("nested_rms_mrad", math.nan)
                    ),
                }
                for s in summaries
            ]
        )
        many = len(summaries) > MAX_REASON_LINES
        for s in summaries:
            sel = s["parameter_selection"]
            if sel is not None and not many:
                print(f"{s['heliostat']}: parameters: {sel['reason']}")
            if args.paint:
                print(f"{s['heliostat']}: pointing errors measured from the {ERROR_POINT}")
            for w in s["warnings"]:
                if not w.startswith(POORLY_IDENTIFIABLE):
                    print(f"{s['heliostat']}: warning: {w}")
            if not s["success"]:
                print(f"{s['heliostat']}: {s['reason']}")
        if many:
            print(chosen_sets_line(ordered))
        weak = poorly_identifiable_line(ordered)
        if weak:
            print(weak)
        print(summary_line(ordered))
    return 0 if all(s["success"] for s in summaries) else 1


def _job(args, kin, obs):
    """One heliostat's fit job from the options: ``--params`` names for its drive (the
    others' are returned to be reported as ignored), else its set chosen by nested
    cross-validation unless ``--no-select``. Returns ``(job, names or None, other)``."""
    from heliostat.calibration.field import Job
    from heliostat.calibration.fit import resolve_names

    names, other = _names(kin.drive, args.params)
    select = names is None and not args.no_select
    job = Job(
        kin,
        obs,
        names or resolve_names(kin.drive),
        args.residual,
        args.loo,
        args.kfold or None,
        select,
    )
    return job, names, other


def _run_history(args: argparse.Namespace, tol: float) -> int:
    """``heliostat calibrate --history DB``: the history's observations streamed
    (:meth:`~heliostat.campaign.history.History.iter_observations`, ``--chunk``
    heliostats at a time) through :func:`~heliostat.calibration.field.calibrate_stream`;
    each chunk's fits go out (``--out`` corrections file, ``--json`` lines) before the
    chunk after next is read. Returns the exit code (1 when a fit failed)."""
    import json
    from types import SimpleNamespace

    from heliostat.calibration.corrections import (
        corrected_setpoints,
        corrections_document,
        heliostat_entry,
        parse_aim,
    )
    from heliostat.calibration.field import calibrate_stream, too_few_to_choose
    from heliostat.campaign.history import History
    from heliostat.config import load_field
    from heliostat.corrections_format import CorrectionsStream

    if args.field is None:
        raise ValueError("--history needs --field FIELD_TOML")
    if args.chunk < 1:
        raise ValueError(f"--chunk must be at least 1, got {args.chunk}")
    field = load_field(args.field)
    target = field.target(args.target) if args.target else next(iter(field.targets.values()))
    aim = parse_aim(args.aim)
    brief: list[SimpleNamespace] = []  # what the summary line needs, not the fits

    def emit(r, out: CorrectionsStream | None) -> None:
        sel = r.selection or {}
        brief.append(
            SimpleNamespace(
                heliostat_id=r.heliostat_id,
                success=r.success,
                reason=r.reason,
                rms_after_mrad=r.rms_after_mrad,
                loo_rms_mrad=r.loo_rms_mrad,
                selection={"nested_rms_mrad": sel["nested_rms_mrad"]}
                if "nested_rms_mrad" in sel
                else None,
            )
        )
        if args.json:
            print(json.dumps(r.summary()))
        if not r.success:
            print(f"heliostat calibrate: {r.heliostat_id}: fit failed: {r.reason}", file=sys.stderr)
        elif out is not None:
            sp = None
            if args.at:
                kin = field.heliostat(r.heliostat_id).kinematics
                sp = corrected_setpoints(kin, r.errors, field.site, args.at, target, aim)
            out.add(heliostat_entry(r, sp))

    def run_stream(hist: History, out: CorrectionsStream | None) -> None:
        def chunks():
            for obs, rejected in hist.iter_observations(field, args.chunk, tol):
                for rj in rejected:
                    print(
                        f"heliostat calibrate: rejected {args.history} observation id "
                        f"{rj.row}: {rj.reason}",
                        file=sys.stderr,
                    )
                jobs = []
                for hid, o in obs.items():
                    job, _, _ = _job(args, field.heliostat(hid).kinematics, o)
                    few = too_few_to_choose(job)
                    if few is not None:
                        emit(few, out)
                    else:
                        jobs.append(job)
                yield jobs

        def write(results) -> None:
            for r in results.values():
                emit(r, out)
            print(f"heliostat calibrate: {len(brief)} heliostat(s) fitted", file=sys.stderr)

        if getattr(args, "scheduler", None):
            with _dask_client(args.scheduler) as client:
                calibrate_stream(chunks(), write, "dask", client=client)
        else:
            backend = "sequential" if args.workers == 1 else args.backend
            calibrate_stream(chunks(), write, backend, args.workers)

    with History(args.history, readonly=True) as hist:
        if args.out:
            head = corrections_document([], args.field)
            with CorrectionsStream(args.out, head) as out:
                run_stream(hist, out)
            print(
                f"heliostat calibrate: corrections of {out.count} heliostat(s) written to "
                f"{args.out}",
                file=sys.stderr,
            )
        else:
            run_stream(hist, None)
    if not brief:
        raise ValueError(f"{args.history}: no valid observations to fit")
    if not args.json:
        print(summary_line(brief))
    return 0 if all(b.success for b in brief) else 1


def _name_list(ids: list[str], most: int = 20) -> str:
    """``ids`` sorted and joined, cut after ``most`` with a count of the rest."""
    ids = sorted(ids, key=id_sort_key)
    more = f" and {len(ids) - most} more" if len(ids) > most else ""
    return ", ".join(ids[:most]) + more


def failure_kind(reason: str) -> str:
    """A short label for why a fit failed (for the summary line)."""
    if reason.startswith("refused"):
        return "files refused"
    if "too few" in reason:
        return "too few records"
    if "did not converge" in reason:
        return "did not converge"
    if "no beam" in reason:
        return "no beam"
    return "other"


def summary_line(results) -> str:
    """One line for a fitted field: fitted and failed counts (failures by kind), and the
    median and 95th percentile of the RMS after the fit, of the leave-one-out RMS and of
    the nested cross-validated RMS (heliostats whose set was chosen) over the fitted
    heliostats. [mrad]"""
    import numpy as np

    ok = [r for r in results if r.success]
    bad = [r for r in results if not r.success]
    line = f"summary: {len(ok)} of {len(results)} heliostat(s) fitted"
    if bad:
        kinds: dict[str, list[str]] = {}
        for r in bad:
            kinds.setdefault(failure_kind(r.reason), []).append(r.heliostat_id)
        line += (
            f", {len(bad)} failed ("
            + "; ".join(f"{k}: {_name_list(v, 5)}" for k, v in sorted(kinds.items()))
            + ")"
        )
    nested = [(r.selection or {}).get("nested_rms_mrad") for r in ok]
    for label, v in (
        ("RMS after fit", [r.rms_after_mrad for r in ok]),
        ("LOO RMS", [r.loo_rms_mrad for r in ok]),
        ("nested CV RMS", [math.nan if x is None else x for x in nested]),
    ):
        v = np.array(v, dtype=float)
        v = v[np.isfinite(v)]
        if v.size:
            line += f"; {label} median {np.median(v):.3g}, p95 {np.percentile(v, 95):.3g} mrad"
    return line


def chosen_sets_line(results) -> str:
    """One line counting the heliostats per chosen parameter set (by drive)."""
    count: dict[tuple[str, int, str], int] = {}
    for r in results:
        if r.success and r.selection is not None:
            key = (r.drive, len(r.names), ",".join(r.names))
            count[key] = count.get(key, 0) + 1
    if not count:
        return "parameter sets: all fixed"
    parts = [
        f"{d} {p} ({names}): {n}"
        for (d, p, names), n in sorted(count.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]
    return "parameter sets chosen by nested cross-validation: " + "; ".join(parts)


#: How :func:`heliostat.calibration.fit.fit_heliostat`'s identifiability warning begins.
POORLY_IDENTIFIABLE = "parameters poorly identifiable"


def poorly_identifiable_line(results) -> str | None:
    """One warning naming the heliostats whose parameters are poorly identifiable, with a
    ``--params`` that every one of them can identify: per drive, the names all their
    suggested sets share (None when no heliostat is flagged)."""
    from heliostat.kinematics import error_names

    flagged = [
        r
        for r in results
        if r.success and any(w.startswith(POORLY_IDENTIFIABLE) for w in r.warnings)
    ]
    if not flagged:
        return None
    common: dict[str, set[str]] = {}
    for r in flagged:
        if r.suggested_names:
            s = set(r.suggested_names)
            common[r.drive] = common[r.drive] & s if r.drive in common else s
    # A name stays plain when every drive of the field that has it is suggested it;
    # otherwise it is qualified DRIVE:NAME so that it reaches only that drive.
    drives = {r.drive for r in results if r.drive}
    names = []
    for d, s in common.items():
        for n in error_names(d):
            if n not in s:
                continue
            others = [o for o in drives if n in error_names(o)]
            plain = all(n in common.get(o, ()) for o in others)
            names.append(n if plain else f"{d}:{n}")
    line = (
        f"warning: {len(flagged)} heliostat(s) with parameters poorly identifiable from "
        f"their sun positions: {_name_list([r.heliostat_id for r in flagged])}"
    )
    if names:
        line += (
            f"; suggested: --params {','.join(dict.fromkeys(names))} (a name applies to "
            "the heliostats of its drive; --json lists each heliostat's own set)"
        )
    return line


def _read_paint(args: argparse.Namespace):
    """Read ``--paint`` (one heliostat or a root of many): field, observations by
    heliostat, rejected records, their labeller, and failed rows for heliostats whose
    files were refused."""
    from heliostat.calibration.fit import FitResult
    from heliostat.calibration.paint import load_paint_root
    from heliostat.config import FieldConfig
    from heliostat.errors import InputError
    from heliostat.kinematics import KinematicErrors

    archive = load_paint_root(args.paint, args.spot)
    for path in archive.unassigned:
        print(
            f"heliostat calibrate: {path}: under no heliostat's folder, not used", file=sys.stderr
        )
    for hid in archive.without_records:
        print(f"heliostat calibrate: {hid}: no calibration records, not fitted", file=sys.stderr)
    notes = [
        FitResult(hid, "", (), KinematicErrors.zeros("linear"), {}, False, f"refused: {why}")
        for hid, why in archive.refused
    ]
    camps = archive.campaigns
    if not camps and not notes:
        raise InputError(f"{args.paint}: no heliostat with calibration records found")
    site = camps[0].field.site if camps else None
    targets, heliostats = {}, {}
    for c in camps:
        if c.field.site != site:
            raise InputError(
                f"{c.tower}: another plant reference point than {camps[0].tower}: "
                "calibrate each plant's heliostats separately"
            )
        targets.update(c.field.targets)
        heliostats.update(c.field.heliostats)
    field = FieldConfig(site, targets, heliostats, source=str(args.paint)) if camps else None
    obs = {c.heliostat_id: c.observations for c in camps if c.observations is not None}
    rejected, files = [], []
    for c in camps:
        for r in c.rejected:
            rejected.append(r.__class__(len(files) + r.row, r.reason))
        files.extend(c.files)
    label = lambda r: f"{files[r.row]}: " + r.reason.split(": ", 1)[-1]  # noqa: E731
    return field, obs, rejected, label, notes
