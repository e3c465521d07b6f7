"""``heliostat sim controllers``: emulate a field's controllers on virtual serial ports."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from heliostat.commands._common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat sim controllers`` parser to ``sub``, ``heliostat sim``'s subcommands."""
    p = sub.add_parser(
        "controllers",
        help="emulate a field's actuator controllers (Modbus RTU on pty ports)",
        description="Start one emulated RS-485 bus per bus of the field, each a pty whose "
        "path is printed; runs until Ctrl-C or SIGTERM (either withdraws the ports' "
        "announcement).",
    )
    p.add_argument("--field", required=True, help="field.toml")
    p.add_argument("--baudrate", type=int, help="timing model baud rate (default: the bus's)")
    add_fault_args(p)
    p.add_argument(
        "--write-field",
        metavar="OUT",
        help="write a copy of the field file whose buses point at the emulator's ports",
    )
    p.add_argument("--json", action="store_true", help="print the ports as JSON")
    p.set_defaults(func=_run)


#: The line-fault options (``--corrupt-p`` ...) and the FaultProfile fields they set.
FAULT_OPTIONS = ("corrupt_p", "drop_p", "truncate_p", "late_p", "reset_p")


def add_fault_args(p: argparse.ArgumentParser) -> None:
    """The emulated line's knobs, shared by ``sim controllers`` and ``sim serve``."""
    p.add_argument("--no-timing", action="store_true", help="reply as fast as possible")
    p.add_argument("--corrupt-p", type=float, default=0.0, help="bit-error probability per frame")
    p.add_argument("--drop-p", type=float, default=0.0, help="lost-frame probability")
    p.add_argument("--truncate-p", type=float, default=0.0, help="truncated-frame probability")
    p.add_argument("--late-p", type=float, default=0.0, help="late-reply probability")
    p.add_argument("--reset-p", type=float, default=0.0, help="controller reset probability")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    p.add_argument("--watchdog-s", type=float, default=60.0, help="watchdog timeout [s], 0 = off")


def faults_from_args(args):
    """The :class:`sim.controllers.FaultProfile` the options ask for (checked)."""
    from sim.controllers import FaultProfile

    for name in FAULT_OPTIONS:
        v = getattr(args, name)
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {v!r}")
    if not 0.0 <= args.watchdog_s <= 6553.4:
        raise ValueError(f"--watchdog-s must be in [0, 6553.4], got {args.watchdog_s!r}")
    return FaultProfile(*(getattr(args, n) for n in FAULT_OPTIONS))


def write_field_copy(field_path: str, ports: dict[str, str], out_path: str) -> None:
    """Copy a field file with each bus's ``port`` set to ``ports[bus name]``.

    Raises
    ------
    InputError
        The field has heliostats on no configured bus (no ``[buses]`` table): there is no
        port key to point at the emulator (pass ``--port`` to the bridge instead).
    """
    from pathlib import Path

    from heliostat.config import _load_toml, dumps_toml
    from heliostat.errors import InputError

    data = _load_toml(field_path).data
    buses = data.get("buses") or {}
    missing = [name or "(none)" for name in ports if name not in buses]
    if missing:
        raise InputError(
            f"{field_path}: heliostats on bus {', '.join(repr(m) for m in missing)} that "
            "[buses] does not define: no port to rewrite; pass the printed port with --port"
        )
    for name, port in ports.items():
        buses[name]["port"] = port
    Path(out_path).write_text(
        f"# {field_path} with its buses on the emulator's ports (heliostat sim controllers)\n"
        + dumps_toml(data)
    )


class _Terminated(Exception):
    """SIGTERM arrived: stop serving like Ctrl-C does."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated


def _run(args) -> int:
    from heliostat.config import load_field
    from heliostat.kinematics import error_names
    from sim.controllers import ControllerModel, EmulatedBus, specs_for_field

    cfg = load_field(args.field)
    faults = faults_from_args(args)
    buses = []
    out = {}
    ports = {}  # bus name in the field (maybe "") -> pty path
    # SIGTERM's default action skips ``finally``, which would leave this process's
    # announcement behind (a stale pty path looking simulated); turn it into a clean stop.
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        for i, bname in enumerate(sorted({h.bus for h in cfg.heliostats.values()})):
            ctls = []
            for spec in specs_for_field(cfg, bname):
                c = ControllerModel(spec, param_names=error_names(spec.drive))
                c.watchdog_timeout_ds = int(round(args.watchdog_s * 10))
                ctls.append(c)
            b = cfg.buses.get(bname)
            bus = EmulatedBus(
                ctls,
                baudrate=args.baudrate or (b.baudrate if b else 115200),
                parity=b.parity if b else "N",
                stopbits=b.stopbits if b else 1,
                faults=faults,
                seed=args.seed + i,
                timing=not args.no_timing,
            )
            port = bus.start()
            buses.append(bus)
            ports[bname] = port
            out[bname or "bus"] = {
                "port": port,
                "addresses": sorted(bus.controllers),
                "baudrate": bus.baudrate,
            }
        if args.write_field:
            write_field_copy(args.field, ports, args.write_field)
        if args.json:
            print_json({"buses": out, "field": args.write_field})
        else:
            for name, d in out.items():
                addrs = ", ".join(map(str, d["addresses"]))
                print(f"{name}: {d['port']}  (addresses {addrs}; {d['baudrate']} baud)")
            if args.write_field:
                print(
                    f"field file on these ports: {args.write_field}  (try: heliostat bridge "
                    f"ping --field {args.write_field})"
                )
            else:
                for name, d in out.items():
                    bus = f" --bus {name}" if len(out) > 1 else ""
                    print(
                        f"try: heliostat bridge ping --field {args.field}{bus} --port {d['port']}"
                    )
            print("emulating; Ctrl-C to stop", file=sys.stderr)
        sys.stdout.flush()
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, _Terminated):
        return 0
    finally:
        for bus in buses:
            bus.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
