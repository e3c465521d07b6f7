"""``heliostat sim serve``: the plant in a box (controllers, camera, clock; one process)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from heliostat.commands._common import print_json
from heliostat.commands.sim_controllers import _on_sigterm, _Terminated, add_fault_args

#: Files ``sim serve`` writes into ``--out`` that name its ports; removed when it stops.
STATE_FILE = "served.json"
SERVED_FIELD = "served-field.toml"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat sim serve`` parser to ``sub``, ``heliostat sim``'s subcommands."""
    p = sub.add_parser(
        "serve",
        help="the plant in a box: controllers (pty, Modbus RTU over TCP, Modbus TCP), "
        "a camera feeding a watched folder, a simulated clock",
        description="Serve a field's emulated controllers (one pty per bus; with --tcp "
        "Modbus RTU framing over TCP, what pyserial's socket:// URL opens; with "
        "--modbus-tcp plain Modbus TCP for mbpoll and SCADA systems), a camera writing "
        "frames with their ground truth into a watched folder, and a simulated clock, "
        "until Ctrl-C or SIGTERM. Writes served.json and served-field.toml (the field "
        "with the served ports) into --out and removes them, and the ports' "
        "announcement, when it stops. See docs/testing.md.",
    )
    p.add_argument("--field", required=True, help="field.toml")
    p.add_argument(
        "--tcp",
        metavar="HOST:PORT",
        help="also serve Modbus RTU over TCP (bus i on PORT+i; PORT 0: any free port)",
    )
    p.add_argument(
        "--modbus-tcp",
        metavar="HOST:PORT",
        help="also serve Modbus TCP (MBAP; bus i on PORT+i; PORT 0: any free port)",
    )
    p.add_argument(
        "--control",
        metavar="HOST:PORT",
        default="127.0.0.1:0",
        help="control endpoint (JSON lines: the clock, camera triggers) a campaign in "
        "another process follows (`campaign --simulate --served`); default any free "
        "loopback port, written to served.json",
    )
    p.add_argument("--out", default="sim-serve", help="folder for frames and state files")
    p.add_argument("--truth", help="truth.json of the field (default: drawn from --seed)")
    p.add_argument("--camera", help="camera.toml (default: a camera placed before the target)")
    p.add_argument("--target", default="", help="target id (default: the first with markers)")
    p.add_argument(
        "--style",
        choices=("auto", "aruco", "sunlit"),
        default="auto",
        help="target look: ArUco board or a real sunlit board (auto: sunlit when the "
        "target has no markers)",
    )
    p.add_argument("--start", help="simulated start time, ISO 8601 UTC (default: now)")
    p.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per real second (0: frozen)"
    )
    p.add_argument(
        "--frame-interval-s",
        type=float,
        default=10.0,
        help="a free-running camera frame every this many real seconds (0: none) [s]",
    )
    add_fault_args(p)
    p.add_argument("--json", action="store_true", help="print the endpoints as JSON")
    p.set_defaults(func=_run)


def build_server(
    args, field_cfg=None, camera_cfg=None, frames_dir=None, clock=None, trigger_dir=None
):
    """The :class:`sim.serve.PlantServer` the options describe (not started)."""
    import pandas as pd

    from heliostat.commands.sim_controllers import faults_from_args
    from heliostat.config import load_camera, load_field
    from sim.campaign import pick_target
    from sim.modbus_tcp import parse_host_port
    from sim.serve import PlantServer, ServeClock, draw_or_load_truth

    faults = faults_from_args(args)
    field_cfg = field_cfg or load_field(args.field)
    target = pick_target(field_cfg, args.target)
    if camera_cfg is None and getattr(args, "camera", None):
        camera_cfg = load_camera(args.camera)
    if camera_cfg is None:
        from sim.camera import place_camera

        camera_cfg = place_camera(field_cfg, target, width_px=640, height_px=512)
    if camera_cfg.position_enu_m is None or camera_cfg.r_enu_cam is None:
        raise ValueError(f"camera {getattr(args, 'camera', '')!r}: the simulator needs its pose")
    style = getattr(args, "style", "auto")
    if style == "auto":
        style = "aruco" if target.markers is not None else "sunlit"
    boards = None
    if style == "sunlit":
        from sim.real_texture import load_board_image, target_image_paths

        boards = [load_board_image(f) for f in target_image_paths()]
    if clock is None:
        start = getattr(args, "start", None)
        t0 = pd.Timestamp.now(tz="UTC").floor("s") if not start else _utc(start, "--start")
        speed = getattr(args, "speed", 1.0)
        clock = ServeClock(t0, speed)
    tcp = parse_host_port(args.tcp, "--tcp") if getattr(args, "tcp", None) else None
    mtcp = getattr(args, "modbus_tcp", None)
    mtcp = parse_host_port(mtcp, "--modbus-tcp") if mtcp else None
    control = getattr(args, "control", None)
    control = parse_host_port(control, "--control") if control else None
    return PlantServer(
        field_cfg,
        draw_or_load_truth(field_cfg, getattr(args, "truth", None), args.seed),
        camera_cfg,
        target,
        frames_dir,
        clock,
        faults=faults,
        seed=args.seed,
        watchdog_s=args.watchdog_s,
        timing=not args.no_timing,
        tcp=tcp,
        modbus_tcp=mtcp,
        boards=boards,
        trigger_dir=trigger_dir,
        control=control,
    )


def _utc(text: str, option: str):
    from heliostat.sun import utc_time

    return utc_time(text, option)


def _run(args) -> int:
    from heliostat.config import dumps_toml, field_to_dict

    if args.frame_interval_s < 0:
        raise ValueError(f"--frame-interval-s must be >= 0, got {args.frame_interval_s!r}")
    out = Path(args.out)
    frames = out / "frames"
    server = build_server(args, frames_dir=frames, trigger_dir=out / "triggered")
    state = out / STATE_FILE
    served_field = out / SERVED_FIELD
    # SIGTERM's default action skips ``finally`` (ports would stay announced): make it a
    # clean stop, as Ctrl-C is.
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        eps = server.start()
        out.mkdir(parents=True, exist_ok=True)
        kind = "rtu_tcp" if args.tcp else "pty"
        served_field.write_text(
            f"# Written by `heliostat sim serve` (pid {os.getpid()}); removed when it stops.\n"
            + dumps_toml(field_to_dict(server.field_with_ports(kind)))
        )
        doc = {
            "pid": os.getpid(),
            "field": str(args.field),
            "served_field": str(served_field.resolve()),
            "buses": {name: ep.as_dict() for name, ep in eps.items()},
            "frames_dir": str(frames.resolve()),
            "control": server.control_address,
            "triggered_dir": str((out / "triggered").resolve()),
            "clock": {
                "start_utc": server.clock.start_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "speed": args.speed,
            },
        }
        tmp = out / f".{STATE_FILE}"
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(state)
        if args.json:
            print_json(doc)
        else:
            n = len(server.controllers)
            print(
                f"plant in a box: {n} heliostat(s) of {args.field}; clock from "
                f"{doc['clock']['start_utc']} at x{args.speed:g}"
            )
            for name, ep in eps.items():
                ways = [f"pty {ep.pty}"]
                if ep.rtu_tcp:
                    ways.append(f"RTU over TCP {ep.rtu_tcp}")
                if ep.modbus_tcp:
                    ways.append(f"Modbus TCP {ep.modbus_tcp}")
                print(f"{name}: {', '.join(ways)} (addresses {_ranges(ep.addresses)})")
            every = (
                f"every {args.frame_interval_s:g} s" if args.frame_interval_s else "on trigger only"
            )
            print(f"camera: frames into {frames} ({every}); field with these ports: {served_field}")
            print(f"control (clock, camera triggers): {server.control_address}")
            print("serving; Ctrl-C or SIGTERM to stop", file=sys.stderr)
        sys.stdout.flush()
        next_frame = time.monotonic()
        while True:
            if args.frame_interval_s:
                now = time.monotonic()
                if now >= next_frame:
                    server.snapshot()
                    next_frame = max(next_frame + args.frame_interval_s, now)
                time.sleep(max(0.0, min(0.5, next_frame - time.monotonic())))
            else:
                time.sleep(3600)
    except (KeyboardInterrupt, _Terminated):
        return 0
    finally:
        server.stop()
        for f in (state, served_field):
            f.unlink(missing_ok=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _ranges(addresses: list[int]) -> str:
    """``1..12`` for a contiguous run, else the list."""
    a = sorted(addresses)
    if a and a == list(range(a[0], a[-1] + 1)) and len(a) > 2:
        return f"{a[0]}..{a[-1]}"
    return ", ".join(map(str, a))
