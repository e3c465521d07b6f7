"""``heliostat camera calibrate``: intrinsics and lens distortion from board images."""

from __future__ import annotations

import argparse
from pathlib import Path

from heliostat.commands._common import print_json

#: camera.toml keys a calibration sets; the others (pose, target, corners) are kept.
_INTRINSIC_KEYS = ("width_px", "height_px", "fx_px", "fy_px", "cx_px", "cy_px", "dist_coeffs")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat camera`` parser and its ``calibrate`` subcommand to ``sub``."""
    p = sub.add_parser("camera", help="set up the field camera (intrinsics, distortion)")
    csub = p.add_subparsers(dest="camera_command", metavar="ACTION")
    c = csub.add_parser(
        "calibrate",
        help="intrinsics and distortion from chessboard/ChArUco images",
        description="Find the board in each image, fit the pinhole matrix and OpenCV "
        "distortion (k1, k2, p1, p2, k3; Zhang's method, cv2.calibrateCamera) and write them "
        "to camera.toml with the reprojection error. An existing --out file keeps its other "
        "keys (pose, target, corners). Take 10-20 images with the board tilted in "
        "different directions and reaching every part of the frame, at the focus and "
        "zoom the camera will use.",
    )
    c.add_argument("images", nargs="+", metavar="IMAGE", help="board images (PNG, TIFF, ...)")
    c.add_argument(
        "--board",
        required=True,
        help="chessboard:COLSxROWS:SQUARE_M (inner corners, e.g. chessboard:9x6:0.025) or "
        "charuco:COLSxROWS:SQUARE_M:MARKER_M[:DICT] (squares; default DICT_5X5_100)",
    )
    c.add_argument("--out", metavar="CAMERA_TOML", help="write (or update) this camera.toml")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=_calibrate)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _calibrate(args) -> int:
    import numpy as np

    from heliostat.errors import InputError
    from heliostat.progress import Progress
    from heliostat.vision.intrinsics import Board, calibrate, find_board
    from heliostat.vision.io import load_image

    board = Board.parse(args.board)
    views, used, missed = [], [], []
    size = None
    with Progress("board") as progress:
        for k, path in enumerate(args.images):
            img = load_image(path)
            shape = (int(img.shape[1]), int(img.shape[0]))
            if size is None:
                size = shape
            elif shape != size:
                raise InputError(
                    f"{path}: {shape[0]}x{shape[1]} px, but {args.images[0]} is "
                    f"{size[0]}x{size[1]} px: one camera, one resolution"
                )
            found = find_board(img, board)
            if found is None:
                missed.append(path)
            else:
                views.append(found)
                used.append(path)
            progress(k + 1, len(args.images))
    assert size is not None  # nargs="+"
    if len(views) < 4 and missed:
        raise InputError(
            f"the board ({args.board}) was found in {len(views)} of {len(args.images)} "
            f"image(s) (not in {', '.join(missed[:5])}{' ...' if len(missed) > 5 else ''}); "
            "check --board (a chessboard counts inner corners) and that the whole board is "
            "in view"
        )
    r = calibrate(views, size)
    worst = int(np.argmax(r.per_view_rms_px))
    doc = {
        "board": args.board,
        "images": len(args.images),
        "views": r.n_views,
        "corners": r.n_points,
        "not_found": missed,
        "width_px": r.width_px,
        "height_px": r.height_px,
        "fx_px": r.k_px[0, 0],
        "fy_px": r.k_px[1, 1],
        "cx_px": r.k_px[0, 2],
        "cy_px": r.k_px[1, 2],
        "dist_coeffs": r.dist_coeffs.tolist(),
        "std_fx_fy_cx_cy_px": r.std_k_px.tolist(),
        "std_dist_coeffs": r.std_dist.tolist(),
        "reprojection_rms_px": r.rms_px,
        "per_view_rms_px": dict(zip(used, r.per_view_rms_px.tolist(), strict=True)),
        "out": args.out,
    }
    if args.out:
        write_intrinsics(args.out, r, bit_depth=16 if img.dtype.itemsize > 1 else 8)
    if args.json:
        print_json(doc)
        return 0
    sx = r.std_k_px
    print(
        f"board {args.board}: found in {r.n_views} of {len(args.images)} image(s), "
        f"{r.n_points} corners" + (f"; not found in {', '.join(missed)}" if missed else "")
    )
    print(
        f"fx {doc['fx_px']:.2f} ± {sx[0]:.2f} px   fy {doc['fy_px']:.2f} ± {sx[1]:.2f} px   "
        f"cx {doc['cx_px']:.2f} ± {sx[2]:.2f} px   cy {doc['cy_px']:.2f} ± {sx[3]:.2f} px"
    )
    terms = zip(("k1", "k2", "p1", "p2", "k3"), r.dist_coeffs, r.std_dist, strict=True)
    print("distortion " + "  ".join(f"{n} {v:+.5f} ± {s:.5f}" for n, v, s in terms))
    print(
        f"reprojection error {r.rms_px:.3f} px RMS (worst view {used[worst]}: "
        f"{r.per_view_rms_px[worst]:.3f} px)"
    )
    if args.out:
        print(f"written to {args.out}")
    return 0


def write_intrinsics(path: str | Path, r, bit_depth: int = 8) -> None:
    """Write a calibration's intrinsics to ``path``: a new camera.toml, or an existing one
    with its intrinsic keys replaced and the others (pose, target, corners, bit depth,
    black level) kept.

    Raises
    ------
    InputError
        An existing file that is not a camera.toml (checked by loading it first).
    """
    from heliostat.config import _load_toml, dumps_toml, load_camera

    p = Path(path)
    cam: dict = {}
    if p.exists():
        load_camera(p)  # refuse to edit a file that is not a valid camera.toml
        cam = dict(_load_toml(p).data["camera"])
    cam.setdefault("bit_depth", bit_depth)
    cam.update(
        width_px=r.width_px,
        height_px=r.height_px,
        fx_px=float(r.k_px[0, 0]),
        fy_px=float(r.k_px[1, 1]),
        cx_px=float(r.k_px[0, 2]),
        cy_px=float(r.k_px[1, 2]),
        dist_coeffs=[float(v) for v in r.dist_coeffs],
        reprojection_rms_px=round(float(r.rms_px), 4),
    )
    ordered = {k: cam[k] for k in _INTRINSIC_KEYS} | {
        k: v for k, v in cam.items() if k not in _INTRINSIC_KEYS
    }
    p.write_text(
        f"# intrinsics by `heliostat camera calibrate` ({r.n_views} views, {r.n_points} "
        f"corners, {r.rms_px:.3f} px RMS)\n" + dumps_toml({"camera": ordered})
    )
