"""``heliostat bench compare``: classical vs learned methods, measured.

Spot error (mm, px) on held-out simulated frames, pointing error after calibration on a
held-out campaign (mrad), compute energy per frame and per calibration (the ledger's
meter), training energy amortised over a stated number of uses, target ΔT and thermal
energy (the ledger's gain model) and CO2 payback under each grid preset. A table, the
same in JSON (``--json``), and plots in ``--out``. See ``docs/ml.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from heliostat.commands._common import _jsonable, print_json, print_table


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat bench`` parser (with ``bench compare``) to ``sub``, the CLI's
    top-level subcommands."""
    p = sub.add_parser(
        "bench",
        help="benchmarks: classical vs learned methods, PAINT's calibration benchmark",
        description="Benchmarks of the calibration methods. See docs/ml.md.",
    )
    bsub = p.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    c = bsub.add_parser(
        "compare",
        help="classical vs ML: spot and pointing error, compute energy, gain, CO2 payback",
        description="Compare the classical spot detector and geometric calibration with the "
        "learned detector (ONNX) and the hybrid pointing model on held-out data. "
        "Without --campaign a held-out campaign is simulated.",
    )
    c.add_argument("--campaign", metavar="DIR", help="campaign folder (heliostat sim campaign)")
    c.add_argument(
        "--paint", metavar="DIR", action="append", default=[],
        help="a PAINT heliostat folder to compare the pointing models on (repeatable)",
    )  # fmt: skip
    c.add_argument("--frames", type=int, default=100, help="held-out simulated frames")
    c.add_argument("--seed", type=int, default=11, help="seed of the simulated campaign")
    c.add_argument(
        "--train-points", type=int, default=30,
        help="calibration points per heliostat; the rest are held out",
    )  # fmt: skip
    c.add_argument(
        "--uses", type=int, default=1_000_000,
        help="frames the training energy is amortised over",
    )  # fmt: skip
    c.add_argument(
        "--point", default="heliogen-like", choices=("heliogen-like", "plant-like"),
        help="operating point of the gain model",
    )  # fmt: skip
    c.add_argument(
        "--real", metavar="DIR",
        help="real-data folder (../shared/real): also compare the sunlit classical detector "
        "and the real-background model on its TEST composites and real samples",
    )  # fmt: skip
    c.add_argument("--real-frames", type=int, default=200, help="TEST composites with --real")
    c.add_argument(
        "--real-only", action="store_true", help="with --real: skip the simulated comparison"
    )
    c.add_argument("--out", default="bench-compare", help="folder for plots and compare.json")
    c.add_argument("--no-plots", action="store_true", help="skip the plots")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=run_compare)
    pp = bsub.add_parser(
        "paint",
        help="PAINT's calibration benchmark: fit on a split's training records, test error",
        description="Split each heliostat's PAINT records as paint-csp's DatasetSplitter does, "
        "choose and fit the error parameters on the training records, and report the "
        "pointing error on the test records (mrad, beam angle from the mirror centre) per "
        "heliostat and over the field. With --artist-python, ARTIST's kinematic "
        "reconstruction runs on the same split in that interpreter. See docs/paint.md.",
    )
    pp.add_argument("root", metavar="ROOT", help="folder of PAINT records (any layout)")
    pp.add_argument(
        "--split", required=True, choices=("azimuth", "solstice", "balanced", "high_variance")
    )
    pp.add_argument("--train-size", type=int, default=10, help="training records per heliostat")
    pp.add_argument("--val-size", type=int, default=3, help="validation records per heliostat")
    pp.add_argument("--spot", default="helios", choices=("helios", "utis"))
    pp.add_argument(
        "--artist-python", metavar="PATH",
        help="interpreter of a venv holding artist-csp: also run ARTIST's kinematic "
        "reconstruction on the same split",
    )  # fmt: skip
    pp.add_argument(
        "--artist-epochs", type=int, default=300, help="ARTIST optimiser iterations"
    )  # fmt: skip
    pp.add_argument("--json", action="store_true", help="machine-readable output")
    pp.set_defaults(func=run_paint)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_paint(args: argparse.Namespace) -> int:
    """Run ``heliostat bench paint`` (:func:`heliostat.bench.paint.run_bench`): a table per
    heliostat and method, the field's median, or JSON."""
    from heliostat.bench.paint import run_bench

    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    r = run_bench(
        args.root, args.split, args.train_size, args.val_size, spot=args.spot,
        artist_python=args.artist_python,
        artist_options={"epochs": args.artist_epochs}, progress=progress,
    )  # fmt: skip
    if args.json:
        print_json(
            {
                "split": r.split,
                "training_size": r.training_size,
                "validation_size": r.validation_size,
                "error_definition": "reflected-beam angle against the ray from the mirror "
                "centre to the measured spot, RMS over the test records [mrad]",
                "heliostats": [row.summary() for row in r.rows],
                "field": r.field,
                "dropped_too_few_records": list(r.dropped),
                "refused": [{"heliostat": h, "reason": why} for h, why in r.refused],
                "notes": list(r.notes),
            }
        )
        return 0
    table = [
        {
            "heliostat": row.heliostat_id,
            "method": row.method,
            "train/val/test": f"{row.n_train}/{row.n_validation}/{row.n_test}",
            "params": len(row.parameters),
            "test_rms_mrad": row.test_rms_mrad,
            "test_max_mrad": row.test_max_mrad,
            "train_rms_mrad": row.train_rms_mrad,
            "uncal_mrad": row.uncalibrated_test_rms_mrad,
            "time_s": row.time_s,
            "note": row.note,
        }
        for row in r.rows
    ]
    print_table(table)
    for method, f in r.field.items():
        print(
            f"field, {method}: {f['fitted']}/{f['heliostats']} fitted, test RMS median "
            f"{f['test_rms_mrad_median']:.3g} mrad (mean {f['test_rms_mrad_mean']:.3g}, over "
            f"all test records {f['test_rms_mrad_pooled']:.3g}), "
            f"{f['time_s_per_heliostat_median']:.3g} s per heliostat"
        )
    print(
        f"split {r.split} ({r.training_size} train, {r.validation_size} validation, the rest "
        "test; paint-csp's definitions); error: reflected-beam angle from the mirror centre "
        "to the measured spot [mrad]"
    )
    if r.dropped:
        print(f"too few records for this split: {', '.join(r.dropped)}")
    for h, why in r.refused:
        print(f"refused {h}: {why}")
    for n in r.notes:
        print(n)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Run ``heliostat bench compare``: classical vs learned spot detection and pointing,
    with compute energy [J], gain and CO2 payback [h], as a table or JSON, plus plots in
    ``--out``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; this reads ``--campaign``, ``--frames``, ``--json``,
        ``--no-plots``, ``--out``, ``--paint``, ``--point``, ``--seed``,
        ``--train-points``, ``--uses``.

    Returns
    -------
    int
        Exit code: 0 when the comparison ran.
    """

    from heliostat.bench.compare import CompareSettings, run_comparison, summary_rows, write_plots

    if args.frames < 1:
        raise ValueError(f"--frames: expected at least 1, got {args.frames}")
    if args.train_points < 8:
        raise ValueError(f"--train-points: expected at least 8, got {args.train_points}")
    if args.uses < 1:
        raise ValueError(f"--uses: expected at least 1, got {args.uses}")
    settings = CompareSettings(
        frames=args.frames,
        campaign_seed=args.seed,
        train_points=args.train_points,
        uses=args.uses,
        point=args.point,
    )

    def progress(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    if args.real_only and not args.real:
        raise ValueError("--real-only: needs --real DIR")
    if args.real and args.real_frames < 1:
        raise ValueError(f"--real-frames: expected at least 1, got {args.real_frames}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.real_only:
        return _run_real_only(args, out, progress)
    result = run_comparison(settings, args.campaign, args.paint, progress)
    if not args.no_plots:
        result["plots"] = write_plots(result, out)
    result["table"] = summary_rows(result)
    if args.real:
        result["real"] = _real(args, out, progress)
        from heliostat.bench.real_vision import real_rows

        result["table"] += real_rows(result["real"])
    (out / "compare.json").write_text(
        json.dumps(_jsonable({k: v for k, v in result.items()}), indent=2) + "\n",
        encoding="utf-8",
    )
    public = {k: v for k, v in result.items()}
    public["spots"] = {k: v for k, v in result["spots"].items() if not k.startswith("_")}
    if args.json:
        print_json(public)
        return 0
    print_table(result["table"], ["metric", "unit", "classical", "ml"])
    print()
    print("verdict:", result["verdict"]["text"])
    print(f"training energy amortised over {args.uses:,} frames; per-frame energy measured "
          f"with {result['spots']['classical']['energy_source']}")  # fmt: skip
    print(f"written: {out / 'compare.json'}" + (
        "".join(f", {p}" for p in result.get("plots", []))))  # fmt: skip
    return 0


def _real(args: argparse.Namespace, out: Path, progress) -> dict:
    from heliostat.bench.real_vision import RealVisionSettings, real_comparison

    s = RealVisionSettings(frames=args.real_frames, empty_frames=max(1, args.real_frames // 10))
    return real_comparison(args.real, s, None if args.no_plots else out, progress)


def _run_real_only(args: argparse.Namespace, out: Path, progress) -> int:
    """``--real DIR --real-only``: the real-background comparison alone."""
    from heliostat.bench.real_vision import real_rows

    result = {"real": _real(args, out, progress)}
    result["table"] = real_rows(result["real"])
    (out / "compare.json").write_text(json.dumps(_jsonable(result), indent=2) + "\n",
                                      encoding="utf-8")  # fmt: skip
    if args.json:
        print_json(result)
        return 0
    print_table(result["table"], ["metric", "unit", "classical", "ml"])
    print("classical = heliostat.vision.sunlit (no sun-off frame), ml = spot_real (ONNX)")
    written = [str(out / "compare.json")] + (
        [result["real"]["overlay_png"]] if "overlay_png" in result["real"] else []
    )
    print("written: " + ", ".join(written))
    return 0
