"""``heliostat config check``: validate configuration files up front."""

from __future__ import annotations

import argparse
import sys

from heliostat.commands._common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat config`` parser (with ``config check``) to ``sub``, the CLI's
    top-level subcommands."""
    p = sub.add_parser(
        "config", help="validate configuration files", description="Configuration file tools."
    )
    csub = p.add_subparsers(dest="config_command", metavar="CONFIG_COMMAND")
    c = csub.add_parser(
        "check",
        help="validate field.toml / camera.toml files",
        description="Read and validate each file; print what it holds or the "
        "first error, naming the file and key. Exit 2 if any file is invalid.",
    )
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.set_defaults(func=run_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _kind(path: str) -> str:
    from heliostat.config import _load_toml

    t = _load_toml(path)
    if t.has("camera"):
        return "camera"
    return "plant" if t.has("plant") else "field"


def check_file(path: str) -> dict:
    """Validate one file; return a summary dict with ``ok`` and ``error`` or contents."""
    from heliostat.config import ConfigError, load_camera, load_field

    try:
        kind = _kind(path)
        if kind == "plant":
            from heliostat.campaign.config import load_plant

            pc = load_plant(path)
            return {
                "file": path,
                "ok": True,
                "kind": kind,
                "summary": f"field {pc.field_path} ({len(pc.field.heliostats)} heliostats), "
                f"camera {pc.camera_path}, target {pc.target.id}, history {pc.history_db}",
            }
        if kind == "camera":
            cam = load_camera(path)
            pose = "set" if cam.r_enu_cam is not None else "unset"
            return {
                "file": path,
                "ok": True,
                "kind": kind,
                "summary": f"{cam.width_px}x{cam.height_px} px, {cam.bit_depth}-bit, "
                f"target {cam.target or '-'}, pose {pose}",
            }
        f = load_field(path)
        drives: dict[str, int] = {}
        for h in f.heliostats.values():
            drives[h.kinematics.drive] = drives.get(h.kinematics.drive, 0) + 1
        return {
            "file": path,
            "ok": True,
            "kind": kind,
            "summary": f"site {f.site.name or '-'}; {len(f.heliostats)} heliostats "
            f"({', '.join(f'{n} {d}' for d, n in drives.items())}); "
            f"{len(f.targets)} target(s); {len(f.buses)} bus(es); "
            f"max correction {f.safety.max_correction_mrad:g} mrad",
        }
    except ConfigError as exc:
        return {"file": path, "ok": False, "error": str(exc)}


def run_check(args: argparse.Namespace) -> int:
    """Run ``heliostat config check``: validate each ``field.toml`` / ``camera.toml`` /
    ``plant.toml`` and print one line (or a JSON record) per file.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; this reads ``FILE...``, ``--json``.

    Returns
    -------
    int
        Exit code: 0 when every file is valid, 2 when one is not.

    Notes
    -----
    A file's problem is reported in its record (and on stderr), not raised.
    """

    results = [check_file(p) for p in args.files]
    if args.json:
        print_json(results)
    else:
        for r in results:
            if r["ok"]:
                print(f"ok     {r['file']} ({r['kind']}): {r['summary']}")
            else:
                print(f"error  {r['error']}", file=sys.stderr)
    return 0 if all(r["ok"] for r in results) else 2
