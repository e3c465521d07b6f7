"""``heliostat detect``: find the sun spot on the target in camera frames."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from heliostat.commands._common import _jsonable, print_table
from heliostat.vision.methods import BACKGROUNDS, DEFAULT_METHOD, METHODS, method_names

#: Fields of a result printed per image (besides ``image`` and ``flags``).
_FIELDS = (
    "ok",
    "x_m",
    "y_m",
    "u_px",
    "v_px",
    "e_m",
    "n_m",
    "u_m",
    "sigma_m",
    "size_x_m",
    "size_y_m",
    "peak_dn",
    "integrated_dn",
    "snr",
    "n_pixels",
    "saturated_fraction",
    "touches_edge",
    "n_candidates",
    "background_dn",
    "noise_dn",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat detect`` parser to ``sub``, the CLI's top-level subcommands."""
    p = sub.add_parser(
        "detect",
        help="find the sun spot on the target in camera frames",
        description="Register the target (surveyed corners, or the ArUco markers of the "
        "field's target), then find the sun spot in each image and report its flux "
        "centroid in the target plane (and ENU with --field). An image that fails gets an "
        "'error' and the others still run (exit code 1 if any failed). With --observations "
        "the spot columns of an observations.csv are filled from its frames instead.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="frames (PNG, TIFF, .npy, ...)")
    p.add_argument("--camera", metavar="CAMERA_TOML", help="camera.toml (intrinsics, distortion)")
    p.add_argument(
        "--corners",
        metavar='"x,y x,y x,y x,y"',
        help="surveyed target-corner pixels, order upper-left, upper-right, lower-right, "
        "lower-left",
    )
    p.add_argument("--target-size", nargs=2, type=float, metavar=("W", "H"), help="target size [m]")
    p.add_argument(
        "--marks",
        action="store_true",
        help="the corners (--corners, camera.toml corners_px, or the camera pose's projection "
        "of the --target) are a rough guess: find the target's own L/T corner marks near them "
        "and refine to sub-pixel (docs/vision.md, 'Registration by corner marks')",
    )
    p.add_argument(
        "--mark-kinds",
        metavar="K,K,K,K",
        help="with --marks: the mark kind at UL,UR,LR,LL, each L or T (default: found from "
        "the image)",
    )
    p.add_argument(
        "--field",
        metavar="FIELD_TOML",
        help="field.toml: the camera's target (size, markers, pose for ENU output)",
    )
    p.add_argument("--target", metavar="ID", help="target id in --field (default: camera's)")
    p.add_argument("--dark", metavar="DARK", help="sun-off frame at the same exposure")
    p.add_argument(
        "--method",
        choices=method_names(),
        default=DEFAULT_METHOD,
        help="spot detector: " + "; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()),
    )
    p.add_argument(
        "--background",
        choices=BACKGROUNDS,
        default="auto",
        help="background model of the classical detector: 'dark-board' (a board dark in "
        "the frame, or a sun-off frame given with --dark subtracted), 'sunlit' (a sunlit "
        "target: panels, seams, marks and shadow edges modelled around the spot, a sun-off "
        "frame or --empty-target used as the empty target; docs/vision-sunlit.md), 'auto' "
        "(default): sunlit when the target's median pixel in the sun-off frame (else in "
        "the frame) is above 15 %% of full scale, else dark-board",
    )
    p.add_argument(
        "--empty-target",
        metavar="IMG",
        help="with the sunlit model: the same target with the sun on and no spot, taken "
        "by the same camera at another moment (same size; exposure and shadows may "
        "differ): the board's texture divides out",
    )
    p.add_argument(
        "--centroid",
        choices=("core", "whole"),
        default="core",
        help="with the sunlit model: which part of the spot the centroid is of: 'core' "
        "(default: the light above half its peak, as a plant's threshold-and-moments "
        "measurement; robust to the board's residue in the halo) or 'whole' (nearly all "
        "the light, halo included: a flux measurement); docs/vision-sunlit.md",
    )
    p.add_argument("--flat", metavar="FLAT", help="sun-off frame exposed for the target")
    p.add_argument(
        "--black-level",
        type=float,
        default=None,
        metavar="DN",
        help="sensor offset [DN] (default: the camera's black_level_dn, else 0)",
    )
    p.add_argument("--bit-depth", type=int, metavar="BITS", help="ADC bits (default: camera's)")
    p.add_argument(
        "--expected",
        nargs=2,
        type=float,
        metavar=("X", "Y"),
        help="commanded aim point in the target plane [m]: pick the spot nearest to it",
    )
    p.add_argument(
        "--observations",
        metavar="OBS_CSV",
        help="fill the spot columns of this observations.csv from its frames",
    )
    p.add_argument("--out", metavar="CSV", help="with --observations: write here (default stdout)")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per image; with --observations one JSON document (the counts, "
        "and the filled rows when there is no --out)",
    )
    p.set_defaults(func=run)


def _parse_corners(text: str) -> list[list[float]]:
    pts = text.replace(";", " ").split()
    try:
        corners = [[float(v) for v in pt.split(",")] for pt in pts]
    except ValueError:
        corners = []
    if len(corners) != 4 or any(len(c) != 2 for c in corners):
        raise ValueError(f'--corners: expected four "u,v" pixel pairs (UL UR LR LL), got {text!r}')
    return corners


def _setup(args: argparse.Namespace):
    """Camera, target and a registration factory from the arguments."""
    import numpy as np

    from heliostat.config import load_camera, load_field
    from heliostat.vision import register_aruco, register_corners

    camera = load_camera(args.camera) if args.camera else None
    if args.black_level is None:
        args.black_level = camera.black_level_dn if camera is not None else 0.0
    target = None
    if args.field:
        field = load_field(args.field)
        tid = args.target or (camera.target if camera is not None else "")
        if not tid:
            if len(field.targets) != 1:
                raise ValueError(
                    f"{args.field}: several targets; name one with --target or in camera.toml"
                )
            tid = next(iter(field.targets))
        target = field.target(tid)
    if args.target_size:
        w_m, h_m = args.target_size
    elif target is not None:
        w_m, h_m = target.width_m, target.height_m
    else:
        w_m = h_m = None
    k = camera.k_px if camera is not None else None
    dist = camera.dist_coeffs if camera is not None else None
    markers = target.markers if target is not None else None
    corners = None
    if args.corners:
        corners = np.array(_parse_corners(args.corners))
    elif camera is not None and camera.corners_px is not None:
        corners = camera.corners_px
    elif (
        markers is None
        and target is not None
        and camera is not None
        and camera.position_enu_m is not None
        and camera.r_enu_cam is not None
    ):
        # No marks to find: the target corners projected through the surveyed pose.
        corners = camera.project(target.corners_enu_m())
    if corners is not None:
        if w_m is None:
            raise ValueError("corner registration needs the target size: --target-size W H")
        if args.marks:
            layout = target.corner_marks if target is not None else None
            return camera, target, _marks_factory(args, corners, w_m, h_m, k, dist, layout)
        by_size: dict[tuple[int, int], Any] = {}

        def from_corners(img):
            size = (
                (camera.width_px, camera.height_px)
                if camera is not None
                else (int(img.shape[1]), int(img.shape[0]))
            )
            if size not in by_size:
                by_size[size] = register_corners(
                    corners, w_m, h_m, size, k_px=k, dist_coeffs=dist, markers=markers
                )
            return by_size[size]

        return camera, target, from_corners
    if args.marks:
        raise ValueError(
            "--marks needs a rough guess of the corners: --corners, camera.toml corners_px, "
            "or a camera pose with --field (and --target)"
        )
    if markers is None or w_m is None:
        raise ValueError(
            "no registration: give --corners with --target-size, a camera.toml with "
            "corners_px or a pose (with --field), or --field whose target carries ArUco "
            "markers"
        )
    cache: dict[str, Any] = {}

    def aruco(img):
        if "reg" not in cache:
            cache["reg"] = register_aruco(img, markers, w_m, h_m, k_px=k, dist_coeffs=dist)
        return cache["reg"]

    return camera, target, aruco


def _marks_factory(args, rough, w_m, h_m, k, dist, layout=None):
    """Registration by the target's corner marks near the rough corners, done once on the
    first frame it is given (the sun-off frame when there is one); the marks' fit goes
    into each JSON row. ``layout``: the target's ``corner_marks`` from field.toml
    (default: the Jülich marks); ``--mark-kinds`` overrides its kinds."""
    import dataclasses

    from heliostat.vision.marks import MarkLayout, register_marks

    layout = layout or MarkLayout()
    if args.mark_kinds:
        kinds = tuple(x.strip().upper() for x in args.mark_kinds.replace(",", " ").split())
        layout = dataclasses.replace(layout, kinds=kinds)
    cache: dict[str, Any] = {}

    def from_marks(img):
        if "reg" not in cache:
            m = register_marks(img, rough, w_m, h_m, layout=layout, k_px=k, dist_coeffs=dist)
            cache["reg"] = m.registration
            from_marks.mark_info = {  # type: ignore[attr-defined]
                "mark_corners_px": m.corners_px.round(3).tolist(),
                "mark_kinds": [c.kind for c in m.corners],
                "mark_scores": [round(c.match_score, 3) for c in m.corners],
                "mark_residual_px": [round(c.residual_px, 3) for c in m.corners],
                "mark_shift_px": [round(c.shift_px, 2) for c in m.corners],
            }
        return cache["reg"]

    from_marks.mark_info = {}  # type: ignore[attr-defined]
    return from_marks


def _row(image: str, res) -> dict[str, Any]:
    row: dict[str, Any] = {"image": image}
    for f in _FIELDS:
        row[f] = getattr(res, f)
    row["flags"] = list(res.flags)
    return row


def _camera_size(camera) -> tuple[int, int] | None:
    """(width, height) frames must have, from camera.toml (None without one). [px]"""
    return (camera.width_px, camera.height_px) if camera is not None else None


def run(args: argparse.Namespace) -> int:
    """Run ``heliostat detect``: the sun spot in each image (pixels, target-plane [m], ENU
    [m], quality flags), or with ``--observations`` the spot columns of an observations
    file filled from its frames.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; this reads ``--bit-depth``, ``--black-level``,
        ``--dark``, ``--expected``, ``--flat``, ``IMAGE...``, ``--json``, ``--method``,
        ``--observations``.

    Returns
    -------
    int
        Exit code: 0 when every spot was found, 1 when one was not.
    """

    from heliostat.progress import Progress
    from heliostat.vision.classical import prepare_flat
    from heliostat.vision.io import load_image
    from heliostat.vision.methods import detector_for, first_use_note
    from heliostat.vision.sunlit import CENTROID_LEVELS, SunlitOptions

    detect_spot = detector_for(args.method)
    sunlit_opts = SunlitOptions(rel_threshold=CENTROID_LEVELS[args.centroid])
    if args.empty_target and args.background == "dark-board":
        raise ValueError("--empty-target: only used with --background sunlit or auto")
    if args.observations:
        return _run_observations(args)
    if not args.images:
        raise ValueError("no images given (or use --observations OBS_CSV)")
    camera, target, reg_for = _setup(args)
    size = _camera_size(camera)
    dark = load_image(args.dark, expected_size_px=size) if args.dark else None
    empty = load_image(args.empty_target, expected_size_px=size) if args.empty_target else None
    flat_img = load_image(args.flat, expected_size_px=size) if args.flat else None
    ref = flat_img if flat_img is not None else dark
    bits = args.bit_depth or (camera.bit_depth if camera is not None else None)
    if ref is not None:
        # Register once on a sun-off frame (markers unobstructed by the spot).
        reg_for(ref)
    flat = None
    rows: list[dict[str, Any]] = []
    failed = 0
    progress = Progress("detect", first_note=first_use_note(args.method))
    try:
        for k, path in enumerate(args.images):
            progress(k, len(args.images))
            try:
                img = load_image(path, expected_size_px=size)
                reg = reg_for(img)
                if flat is None and flat_img is not None:
                    flat = prepare_flat(flat_img, reg, black_level_dn=args.black_level)
                # the classical method chooses its background model (heliostat.vision.auto)
                extra = (
                    dict(background=args.background, empty_target=empty, options=sunlit_opts)
                    if args.method == "classical"
                    else {}
                )
                res = detect_spot(
                    img,
                    reg,
                    dark=dark,
                    flat=flat,
                    black_level_dn=args.black_level,
                    bit_depth=bits,
                    expected_xy_m=args.expected,
                    target=target,
                    **extra,
                )
                row = _row(path, res)
                row.update(getattr(reg_for, "mark_info", {}))
            except (ValueError, OSError, KeyError) as exc:
                failed += 1
                row = {"image": path, "error": str(exc)}
            rows.append(row)
            if args.json:
                print(json.dumps(_jsonable(row)), flush=True)
        progress(len(args.images), len(args.images))
    finally:
        progress.close()
    if not args.json:
        table = []
        for r in rows:
            if "error" in r:
                table.append({"image": r["image"], "flags": "ERROR: " + r["error"]})
            else:
                table.append(
                    {
                        "image": r["image"],
                        "x_m": r["x_m"],
                        "y_m": r["y_m"],
                        "u_px": r["u_px"],
                        "v_px": r["v_px"],
                        "snr": r["snr"],
                        "flags": ",".join(r["flags"]),
                    }
                )
        print_table(table, ["image", "x_m", "y_m", "u_px", "v_px", "snr", "flags"])
    return 1 if failed else 0


def _run_observations(args: argparse.Namespace) -> int:
    import pandas as pd

    from heliostat.errors import InputError
    from heliostat.paths import join_inside
    from heliostat.vision.io import load_image
    from heliostat.vision.pipeline import dark_path, fill_observations

    obs_path = Path(args.observations)
    try:
        obs = pd.read_csv(obs_path, dtype={"frame": str, "quality_flags": str})
    except FileNotFoundError:
        raise ValueError(f"{obs_path}: file not found") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{obs_path}: not a readable CSV: {exc}") from None
    base = obs_path.parent
    frames = [f for f in obs.get("frame", pd.Series(dtype=str)).fillna("") if str(f).strip()]
    if not frames:
        raise ValueError(f"{obs_path}: no rows with a frame")
    camera, target, reg_for = _setup(args)
    size = _camera_size(camera)
    # Register on the first readable sun-off (else sun-on) frame.
    ref = None
    for f in frames:
        try:
            inside = join_inside(base, f, f"{obs_path}: frame")
        except InputError:
            continue  # reported per row by fill_observations
        for cand in (dark_path(inside), inside):
            if cand.is_file():
                try:
                    ref = load_image(cand, expected_size_px=size)
                    break
                except ValueError:
                    continue
        if ref is not None:
            break
    if ref is None:
        raise ValueError(f"{obs_path}: none of the frames could be read")
    reg = reg_for(ref)
    bits = args.bit_depth or (camera.bit_depth if camera is not None else None)
    flat = None
    if args.flat:
        from heliostat.vision.classical import prepare_flat

        flat = prepare_flat(
            load_image(args.flat, expected_size_px=size), reg, black_level_dn=args.black_level
        )
    from functools import partial

    from heliostat.progress import Progress
    from heliostat.vision.methods import detector_for, first_use_note

    with Progress("detect", first_note=first_use_note(args.method)) as progress:
        out, outcomes = fill_observations(
            obs,
            base,
            reg,
            target=target,
            black_level_dn=args.black_level,
            bit_depth=bits,
            flat=flat,
            aim_xy_m=args.expected,
            detector=detector_for(args.method),
            load=partial(load_image, expected_size_px=size),
            progress=progress,
        )
    if args.out:
        out.to_csv(args.out, index=False)
    elif not args.json:
        out.to_csv(sys.stdout, index=False)
    failed = [o for o in outcomes if o.error]
    for o in failed:
        print(f"heliostat detect: {o.path}: {o.error}", file=sys.stderr)
    counts = {
        "frames": len(outcomes),
        "spots": sum(1 for o in outcomes if o.result and o.result.ok),
        "no_spot": sum(1 for o in outcomes if o.result and not o.result.ok),
        "failed": len(failed),
    }
    if args.json:
        doc: dict[str, Any] = {**counts, "out": args.out}
        if not args.out:
            doc["observations"] = json.loads(out.to_json(orient="records"))
        print(json.dumps(_jsonable(doc)))
    else:
        where = f"written to {args.out}" if args.out else "printed above"
        print(
            f"heliostat detect: {counts['frames']} frame(s): {counts['spots']} spot(s), "
            f"{counts['no_spot']} without a spot, {counts['failed']} failed; {where}",
            file=sys.stderr,
        )
    return 1 if failed else 0
