"""``heliostat bridge ping|status|move|apply|stow``: talk to actuator controllers."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import time
import uuid
from pathlib import Path

from heliostat.commands._common import print_json, print_table


def _default_journal() -> str:
    env = os.environ.get("HELIOSTAT_BRIDGE_JOURNAL")
    if env:
        return env
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "heliostat" / "bridge-journal.sqlite")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``heliostat bridge`` parser and its ``ping``, ``status``, ``move``, ``apply``
    and ``stow`` subcommands to ``sub``, the CLI's top-level subcommands."""
    p = sub.add_parser(
        "bridge",
        help="deliver commands and corrections to actuator controllers (Modbus RTU)",
        description="Talk to heliostat controllers over RS-485 / Modbus RTU. Writes are "
        "checked against the field config's limits first; real ports ask for confirmation.",
    )
    bsub = p.add_subparsers(dest="bridge_command", metavar="ACTION")

    def common(sp: argparse.ArgumentParser, writes: bool) -> None:
        sp.add_argument("--port", help="serial device or pyserial URL (default: the bus's port)")
        sp.add_argument("--field", help="field.toml (required for commands that write)")
        sp.add_argument("--bus", help="bus name in the field config (when it has several)")
        sp.add_argument("--address", type=int, help="controller address 1..247")
        sp.add_argument("--baudrate", type=int, help="default: the bus's, else 115200")
        sp.add_argument("--timeout-s", type=float, help="reply timeout per request [s]")
        sp.add_argument("--attempts", type=int, default=5, help="attempts per command")
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        if writes:
            sp.add_argument("--dry-run", action="store_true", help="show what would be sent")
            sp.add_argument("--yes", action="store_true", help="do not ask on real ports")
            sp.add_argument(
                "--journal",
                default=None,
                help="SQLite journal (default: "
                "$HELIOSTAT_BRIDGE_JOURNAL or ~/.local/state/heliostat/...)",
            )

    sp = bsub.add_parser("ping", help="read controllers' identity")
    common(sp, False)
    sp.set_defaults(func=_ping)
    sp = bsub.add_parser("status", help="read controllers' status")
    common(sp, False)
    sp.set_defaults(func=_status)
    sp = bsub.add_parser("move", help="send absolute setpoints to one controller")
    common(sp, True)
    sp.add_argument("--heliostat", help="heliostat id (instead of --address)")
    sp.add_argument("--axis1-steps", type=int, required=True)
    sp.add_argument("--axis2-steps", type=int, required=True)
    sp.set_defaults(func=_move)
    sp = bsub.add_parser("apply", help="upload a corrections file (parameters and setpoints)")
    common(sp, True)
    sp.add_argument("corrections", help="corrections JSON written by calibration")
    sp.add_argument(
        "--setpoints",
        choices=("all", "latest", "none"),
        default="all",
        help="which setpoints to send (default: all, in time order)",
    )
    sp.add_argument("--no-params", action="store_true", help="do not upload parameter sets")
    sp.set_defaults(func=_apply)
    sp = bsub.add_parser("stow", help="stow one controller, or the field's")
    common(sp, True)
    sp.add_argument("--heliostat", help="heliostat id")
    sp.add_argument(
        "--broadcast",
        action="store_true",
        help="one broadcast frame (address 0), then read-back of each controller",
    )
    sp.set_defaults(func=_stow)
    sp = bsub.add_parser(
        "revert",
        help="put a controller back on its previous parameter set (from the history)",
        description="Send the parameter set a heliostat's controller held before its current "
        "one, by the history database's confirmed deliveries (the nominal set, all zero, "
        "when there was none before), through the same safety checks as apply; journaled "
        "and resumable like apply, and recorded in the history when confirmed.",
    )
    common(sp, True)
    sp.add_argument("--heliostat", required=True, help="heliostat id")
    sp.add_argument(
        "--db",
        default=None,
        help="history SQLite file (default $HELIOSTAT_DB or heliostat-history.sqlite)",
    )
    sp.set_defaults(func=_revert)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


# --------------------------------------------------------------------------- helpers
def _field(args):
    if not args.field:
        return None
    from heliostat.config import load_field

    return load_field(args.field)


def _bus_groups(args, cfg, heliostat_ids=None):
    """[(port, bus settings, [heliostat ids])] for the selected heliostats."""
    from heliostat.config import Bus

    ids = list(heliostat_ids) if heliostat_ids is not None else list(cfg.heliostats)
    if args.bus:
        if cfg.buses and args.bus not in cfg.buses:
            raise KeyError(f"bus {args.bus!r} is not in the field config {cfg.source}")
        if heliostat_ids is not None:
            # Heliostats chosen by name are never dropped in silence: a selection on
            # another bus than --bus is a mistake, refused before anything is sent.
            off = [i for i in ids if cfg.heliostats[i].bus != args.bus]
            if off:
                where = ", ".join(f"{i} is on bus {cfg.heliostats[i].bus!r}" for i in off)
                raise ValueError(f"heliostat {where}, not on --bus {args.bus!r}; nothing sent")
        ids = [i for i in ids if cfg.heliostats[i].bus == args.bus]
    buses = sorted({cfg.heliostats[i].bus for i in ids})
    if args.port and len(buses) > 1:
        raise ValueError(
            f"--port given but the heliostats are on buses {', '.join(buses)}; "
            "choose one with --bus"
        )
    out = []
    for b in buses:
        bus = cfg.buses.get(b) or Bus(b, args.port or "")
        port = args.port or bus.port
        out.append((port, bus, [i for i in ids if cfg.heliostats[i].bus == b]))
    return out


def _check_address(args, allow_broadcast: bool = False) -> None:
    """Refuse an --address outside 1..247 before any port is opened (0, the Modbus
    broadcast, only where ``allow_broadcast``)."""
    if args.address is None or (allow_broadcast and args.address == 0):
        return
    from firmware_bridge.delivery import check_address

    try:
        check_address(args.address)
    except ValueError as exc:
        raise ValueError(f"--address: {exc}; nothing sent") from None


def _check_heliostat_address(args, cfg) -> None:
    """--heliostat and --address together must name the same controller."""
    if args.heliostat and args.address is not None:
        h = cfg.heliostats.get(args.heliostat)
        if h is not None and h.address != args.address:
            raise ValueError(
                f"--heliostat {args.heliostat} is at address {h.address}, not --address "
                f"{args.address}; give one of them; nothing sent"
            )


def _bus_members(cfg, bus_name: str) -> dict[str, int]:
    """Every configured heliostat on a bus and its address, in config order."""
    return {h.id: h.address for h in cfg.heliostats.values() if h.bus == bus_name}


def _loopback_problem(args, port: str, bus=None) -> str | None:
    """Why ``port`` cannot reach a controller, when it is pyserial's ``loop://`` (the
    placeholder port of simulated fields: a loopback echoes every request and nobody
    answers), else None."""
    if not port.startswith("loop://"):
        return None
    if args.port:
        where = f"--port {port}"
    else:
        where = f"bus {bus.name!r} of {args.field} has port {port}"
    field = args.field or "FIELD.toml"
    return (
        f"{where}, a loopback where no controller answers (simulated fields use it as a "
        f"placeholder): start the emulator, `heliostat sim controllers --field {field} "
        "--write-field emulated.toml`, and give --field emulated.toml (or pass the port it "
        "prints with --port)"
    )


def _link(args, port, bus=None):
    from firmware_bridge.transport import ModbusLink

    problem = _loopback_problem(args, port, bus)
    if problem:
        raise ValueError(problem)

    baud = args.baudrate or (bus.baudrate if bus else 115200)
    return ModbusLink(
        port,
        baudrate=baud,
        parity=bus.parity if bus else "N",
        stopbits=bus.stopbits if bus else 1,
        timeout_s=args.timeout_s or (bus.timeout_s if bus else 0.2),
    )


def _read_targets(args):
    """[(port, bus, [(heliostat id or '', address)])] for ping/status."""
    _check_address(args)
    cfg = _field(args)
    if cfg is None:
        if not args.port or args.address is None:
            raise ValueError("give --port and --address, or --field")
        return [(args.port, None, [("", args.address)])]
    if args.address is not None:
        from firmware_bridge.safety import heliostat_for_address

        h = heliostat_for_address(cfg, args.address, args.bus)
        groups = _bus_groups(args, cfg, [h.id])
    else:
        groups = _bus_groups(args, cfg)
    return [(p, b, [(i, cfg.heliostats[i].address) for i in ids]) for p, b, ids in groups]


def _each(args, fn):
    from firmware_bridge.delivery import Bridge
    from firmware_bridge.errors import ActuatorError
    from firmware_bridge.reasons import failure_label

    rows = []
    for port, bus, targets in _read_targets(args):
        with _link(args, port, bus) as link:
            br = Bridge(link)
            for hid, addr in targets:
                row = {"heliostat": hid, "address": addr, "port": port}
                try:
                    row.update(fn(br, addr))
                    row["ok"] = True
                except ActuatorError as exc:
                    row.update(ok=False, error=failure_label(exc), detail=str(exc))
                rows.append(row)
    return rows


def _print_rows(args, rows, columns):
    if args.json:
        print_json(rows)
    else:
        print_table(rows, columns)
    return 0 if all(r.get("ok", True) for r in rows) else 1


def _ping(args) -> int:
    rows = _each(args, lambda br, a: br.identity(a))
    return _print_rows(
        args, rows, ["heliostat", "address", "ok", "firmware", "drive", "serial", "error"]
    )


def _status(args) -> int:
    rows = _each(args, lambda br, a: br.status(a).to_dict())
    cols = [
        "heliostat",
        "address",
        "ok",
        "axis1_steps",
        "axis2_steps",
        "last_command_id",
        "flags",
        "error",
    ]
    if not args.json:
        for r in rows:
            r["flags"] = ",".join(r.get("flags", []))
    return _print_rows(args, rows, cols)


def _require_field(args):
    cfg = _field(args)
    if cfg is None:
        raise ValueError(
            "commands that write need --field (every address is checked against the field config)"
        )
    return cfg


def _frames(cmd, address: int | None = None) -> list[dict]:
    """The register writes a command makes, with their RTU frames (command id shown as 0;
    ``address`` 0 for the broadcast frame)."""
    from pymodbus.framer.rtu import FramerRTU
    from pymodbus.pdu import DecodePDU
    from pymodbus.pdu.register_message import WriteMultipleRegistersRequest

    from firmware_bridge import registers as R

    writes = []
    if cmd.kind == "params":
        block = R.encode_params(cmd.params)
        writes.append((R.REG_PARAM_STAGING, block))
        regs = R.encode_command(1, R.CommandCode.APPLY_PARAMS, arg=R.crc16_regs(block))
    elif cmd.kind == "stow":
        regs = R.encode_command(1, R.CommandCode.STOW)
    else:
        regs = R.encode_command(1, R.CommandCode.MOVE, cmd.setpoints_steps)
    regs[0:2] = [0, 0]  # the id is assigned by the journal when sending
    writes.append((R.COMMAND_START, regs))
    fr = FramerRTU(DecodePDU(False))
    out = []
    for start, values in writes:
        dev = cmd.address if address is None else address
        pdu = WriteMultipleRegistersRequest(address=start, registers=values, dev_id=dev)
        out.append({"start": start, "registers": values, "frame_hex": fr.buildFrame(pdu).hex(" ")})
    return out


def _confirm(args, cfg, port, n, broadcast_bus: str | None = None) -> None:
    from firmware_bridge.ports import is_simulated

    if args.yes or is_simulated(port) or not cfg.safety.require_confirmation:
        return
    if broadcast_bus is not None:
        what = f"a broadcast stow to bus {broadcast_bus!r} (every controller on it, {n} configured)"
    else:
        what = f"{n} command(s)"
    if not sys.stdin.isatty():
        raise ValueError(f"{port} is a real serial port: pass --yes to send {what}, or --dry-run")
    ans = input(f"Send {what} on {port}? [y/N] ")
    if ans.strip().lower() not in ("y", "yes"):
        raise ValueError("not confirmed; nothing sent")


def _execute(
    args, cfg, commands, batch_key, source, broadcast=False, corrections=None, on_outcomes=None
) -> int:
    from firmware_bridge.delivery import RetryPolicy, broadcast_stow_problem
    from firmware_bridge.errors import SafetyRefused
    from firmware_bridge.fleet import BusJob, deliver_buses
    from firmware_bridge.journal import DONE_STATES, FINAL_STATES, Journal
    from firmware_bridge.reasons import next_step

    groups = _bus_groups(args, cfg, list(dict.fromkeys(c.heliostat for c in commands)))
    covered = {i for _, _, ids in groups for i in ids}
    missing = sorted({c.heliostat for c in commands} - covered)
    if missing:
        raise ValueError(f"no bus selected for {', '.join(missing)}; nothing sent")
    # A broadcast reaches every controller on the bus: the bridge's rule
    # (broadcast_stow_problem), checked here too so that a dry run meets it.
    bus_of = {port: cfg.heliostats[ids[0]].bus for port, _, ids in groups}
    if broadcast:
        for port, _bus, ids in groups:
            cmds = [c for c in commands if c.heliostat in ids]
            problem = broadcast_stow_problem(cmds, _bus_members(cfg, bus_of[port]), bus_of[port])
            if problem:
                raise SafetyRefused(f"{problem}; nothing sent")
    if args.dry_run:
        rows = []
        for port, _bus, ids in groups:
            for c in commands:
                if c.heliostat in ids:
                    rows.append(
                        {
                            "port": port,
                            "heliostat": c.heliostat,
                            "address": c.address,
                            "kind": c.kind,
                            "setpoints_steps": c.setpoints_steps,
                            "params": c.params,
                            "writes": _frames(c),
                        }
                    )
        casts = []
        if broadcast:
            for r in rows:
                r["broadcast"] = True
                r["bus"] = bus_of[r["port"]]
            for port, _bus, ids in groups:
                first = next(c for c in commands if c.heliostat in ids)
                casts.append(
                    {
                        "bus": bus_of[port],
                        "port": port,
                        "heliostats": ids,
                        "writes": _frames(first, address=0),
                    }
                )
        limit = cfg.safety.max_correction_mrad
        checks = _correction_rows(cfg, commands, corrections, limit) if corrections else []
        if args.json:
            doc = {"dry_run": True, "commands": rows}
            if broadcast:
                doc["broadcasts"] = casts
            if corrections is not None:
                doc["corrections"] = checks
                doc["max_correction_mrad"] = limit
            print_json(doc)
        elif broadcast:
            for b in casts:
                print(
                    f"dry run: broadcast to bus {b['bus']!r} on {b['port']}: stow of "
                    f"{len(b['heliostats'])} controller(s) ({', '.join(b['heliostats'])}), "
                    "then a status read-back of each; nothing sent"
                )
                for w in b["writes"]:
                    print(f"    FC16 @{w['start']} to address 0: {w['frame_hex']}")
        else:
            print(f"dry run: {len(rows)} command(s), nothing sent")
            for r in rows:
                what = r["setpoints_steps"] if r["kind"] == "move" else ""
                print(
                    f"  {r['port']} address {r['address']} ({r['heliostat']}): "
                    f"{r['kind']} {what or ''}"
                )
                if r["kind"] == "params":
                    changes = next(
                        (c["changes"] for c in checks if c["heliostat"] == r["heliostat"]), []
                    )
                    print(f"    changes: {', '.join(changes) or 'none (all zero)'}")
                for w in r["writes"]:
                    print(f"    FC16 @{w['start']}: {w['frame_hex']}")
            if checks:
                print(
                    f"corrections against max_correction_mrad = {limit:g} mrad (params: the "
                    "largest mirror turn the set commands; setpoints: the largest axis change "
                    "from nominal):"
                )
                print_table(checks, ["heliostat", "params_mrad", "setpoints_mrad", "of_limit"])
        return 0
    for port, _bus, ids in groups:
        n = sum(1 for c in commands if c.heliostat in ids)
        _confirm(args, cfg, port, n, bus_of[port] if broadcast else None)
    journal = Journal(args.journal or _default_journal())
    retry = RetryPolicy(max_attempts=max(1, args.attempts))
    jobs = []
    resumed_from: dict[str, str] = {}  # port -> when the batch was first journaled
    for port, bus, ids in groups:
        name = bus_of[port]
        key = hashlib.sha256(f"{batch_key}|{port}".encode()).hexdigest()
        first = journal.batch_created_utc(key)
        if first is not None:
            resumed_from[port] = first
            if not args.json:
                print(
                    f"{port}: resuming the run of {first} from journal {journal.path} "
                    "(confirmed commands are read back, not sent again)"
                )
        jobs.append(
            BusJob(
                name,
                port,
                key,
                source,
                tuple(c for c in commands if c.heliostat in ids),
                lambda port=port, bus=bus: _open_bridge(args, port, bus, journal, retry),
                broadcast_stow=broadcast,
                bus_members=_bus_members(cfg, name) if broadcast else None,
            )
        )
    progress = None
    if not args.json and sys.stderr.isatty():
        progress = _progress_line(jobs)
    try:
        results = deliver_buses(jobs, progress)  # every bus at once, one thread each
    finally:
        journal.close()
    outcomes = [o for r in results for o in r.outcomes]
    health = {f"{r.port}#{a}": h for r in results for a, h in r.health.items()}
    if on_outcomes is not None:
        on_outcomes(outcomes)
    counts = {}
    for o in outcomes:
        counts[o.state] = counts.get(o.state, 0) + 1
    if args.json:
        print_json(
            {
                "outcomes": [o.to_dict() | {"next_step": next_step(o)} for o in outcomes],
                "counts": counts,
                "buses": [r.to_dict() for r in results],
                "health": health,
                "journal": journal.path,
                "resumed_from_utc": resumed_from,
                "rerun_resumes": any(o.state not in FINAL_STATES for o in outcomes),
            }
        )
    else:
        rows = [o.to_dict() | {"run": _when(o)} for o in outcomes]
        print_table(
            rows,
            ["heliostat", "address", "kind", "command_id", "state", "run", "attempts", "reason"],
        )
        print("; ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
        now = sum(1 for o in outcomes if o.state == "confirmed" and not o.replayed)
        replayed = sum(1 for o in outcomes if o.replayed)
        print(
            f"{now} confirmed now; {replayed} replayed from an earlier run "
            "(verified now by read-back, nothing sent)"
        )
        if len(results) > 1:
            for r in results:
                tally = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())) or "nothing"
                print(f"bus {r.bus} ({r.port}): {tally} in {r.elapsed_s:.1f} s")
        _print_next_steps(outcomes, journal.path)
    for r in results:  # a bus that stopped early; the others went on
        if r.error:
            print(
                f"heliostat: error: bus {r.bus!r} ({r.port}) stopped after "
                f"{len(r.outcomes)} of {r.planned} command(s): {r.error}",
                file=sys.stderr,
            )
    if len(outcomes) != len(commands):  # never a success exit for commands not delivered
        print(
            f"heliostat: error: {len(commands) - len(outcomes)} of {len(commands)} planned "
            "command(s) have no outcome",
            file=sys.stderr,
        )
        return 1
    return 0 if all(o.state in DONE_STATES for o in outcomes) else 1


@contextlib.contextmanager
def _open_bridge(args, port, bus, journal, retry):
    """A bridge on an open link to one bus (closed on leaving), writing to ``journal``."""
    from firmware_bridge.delivery import Bridge

    with _link(args, port, bus) as link:
        yield Bridge(link, journal, retry)


def _progress_line(jobs):
    """A progress hook for :func:`firmware_bridge.fleet.deliver_buses` that keeps one
    line on stderr up to date (a port's count for one bus, the totals for several)."""
    total = sum(len(j.commands) for j in jobs)
    done: dict[str, int] = {}
    last = [0.0]

    def progress(bus, o, i, n):
        done[bus] = i
        finished = sum(1 for j in jobs if done.get(j.bus) == len(j.commands))
        now = time.monotonic()
        if now - last[0] < 0.1 and finished < len(jobs) and i < n:
            return  # a line every 0.1 s is enough for a person
        last[0] = now
        if len(jobs) == 1:
            line = f"{jobs[0].port}: {i}/{n}"
        else:
            line = f"{sum(done.values())}/{total} commands; {finished}/{len(jobs)} buses done"
        print(f"\r{line}", end="" if finished < len(jobs) else "\n", file=sys.stderr)

    return progress


def _when(o) -> str:
    """Which run settled an outcome, for the text table: ``now`` (a fresh batch),
    ``resumed`` (an earlier run's command handled in this one), ``earlier run, verified
    now`` (confirmed before, read back now, nothing sent) or ``earlier run`` (settled
    before and reported from the journal, nothing sent or read)."""
    if o.replayed:
        return "earlier run, verified now"
    if o.carried:
        return "earlier run"
    return "resumed" if o.resumed else "now"


def _print_next_steps(outcomes, journal_path: str) -> None:
    """What to do about the commands not done: one line per heliostat (its worst
    outcome's reason and next step), then how to resume."""
    from firmware_bridge.journal import DONE_STATES, FINAL_STATES
    from firmware_bridge.reasons import next_step
    from heliostat.commands._common import id_sort_key

    bad = [o for o in outcomes if o.state not in DONE_STATES]
    if not bad:
        return
    order = {"unreachable": 0, "failed": 1, "rejected": 2}
    per: dict[str, object] = {}
    for o in bad:
        if o.heliostat not in per or order.get(o.state, 3) < order.get(per[o.heliostat].state, 3):
            per[o.heliostat] = o
    print("next steps:")
    for hid in sorted(per, key=id_sort_key):
        o = per[hid]
        n = sum(1 for x in bad if x.heliostat == hid)
        what = f"{n} commands" if n > 1 else o.kind
        print(f"  {hid} ({what} {o.state}: {o.reason or o.detail}): {next_step(o)}")
    again = [o for o in bad if o.state not in FINAL_STATES]
    if again:
        print(
            f"re-run the same command to resume: it sends only the {len(again)} command(s) "
            f"not delivered (journal {journal_path}); what was confirmed is read back, "
            "not sent again"
        )


def _move(args) -> int:
    from firmware_bridge.safety import heliostat_for_address, plan_move

    cfg = _require_field(args)
    if args.address == 0:
        raise ValueError("address 0 is the Modbus broadcast, which the bridge uses only to stow")
    _check_address(args)
    _check_heliostat_address(args, cfg)
    if args.heliostat:
        hid = args.heliostat
    elif args.address is not None:
        hid = heliostat_for_address(cfg, args.address, args.bus).id
    else:
        raise ValueError("move needs --heliostat or --address")
    cmd = plan_move(cfg, hid, (args.axis1_steps, args.axis2_steps))
    return _execute(args, cfg, [cmd], f"move-{uuid.uuid4()}", "cli move")


def _stow(args) -> int:
    from firmware_bridge.safety import heliostat_for_address, plan_stow

    cfg = _require_field(args)
    _check_address(args, allow_broadcast=True)
    if args.address == 0:  # Modbus broadcast: every controller of the bus (checked below)
        args.broadcast, args.address = True, None
    _check_heliostat_address(args, cfg)
    if args.heliostat:
        ids = [args.heliostat]
    elif args.address is not None:
        ids = [heliostat_for_address(cfg, args.address, args.bus).id]
    else:
        ids = [i for i, h in cfg.heliostats.items() if not args.bus or h.bus == args.bus]
        if not ids:
            raise ValueError(f"no heliostat of {cfg.source} is on bus {args.bus!r}")
    cmds = plan_stow(cfg, ids)
    return _execute(args, cfg, cmds, f"stow-{uuid.uuid4()}", "cli stow", broadcast=args.broadcast)


def _correction_rows(cfg, commands, corrections: dict, limit: float) -> list[dict]:
    """One row per heliostat with commands: the corrections the safety planner measured
    (:func:`firmware_bridge.safety.plan_corrections`), their share of ``limit`` [mrad],
    and the parameter set's non-zero values (angles in mrad, lengths in mm)."""
    from heliostat.commands._common import id_sort_key
    from heliostat.kinematics import error_names

    params = {c.heliostat: c.params for c in commands if c.kind == "params"}
    out = []
    for hid in sorted(dict.fromkeys(c.heliostat for c in commands), key=id_sort_key):
        got = corrections.get(hid, {})
        pm, sm = got.get("params_mrad"), got.get("setpoints_mrad")
        worst = max((v for v in (pm, sm) if v is not None), default=None)
        changes = []
        if hid in params:
            # a block without the trailing backlash pair leaves it zero (block_values)
            for n, v in zip(
                error_names(cfg.heliostats[hid].kinematics.drive), params[hid], strict=False
            ):
                if v != 0.0:
                    if n.endswith("_rad"):
                        changes.append(f"{n[:-4]} {v * 1e3:+.3f} mrad")
                    else:
                        changes.append(f"{n[:-2]} {v * 1e3:+.1f} mm")
        out.append(
            {
                "heliostat": hid,
                "params_mrad": "" if pm is None else round(pm, 3),
                "setpoints_mrad": "" if sm is None else round(sm, 3),
                "max_correction_mrad": limit,
                "of_limit": "" if worst is None else f"{100 * worst / limit:.0f}%",
                "changes": changes,
            }
        )
    return out


def _apply(args) -> int:
    from firmware_bridge.safety import plan_corrections
    from heliostat.corrections_format import read_corrections

    cfg = _require_field(args)
    _check_address(args)
    data = read_corrections(args.corrections)
    if args.address is not None:
        from firmware_bridge.safety import heliostat_for_address

        hid = heliostat_for_address(cfg, args.address, args.bus).id
        data = {**data, "heliostats": [h for h in data["heliostats"] if h["heliostat"] == hid]}
    measured: dict = {}
    cmds = plan_corrections(
        cfg,
        data,
        params=not args.no_params,
        setpoints=args.setpoints,
        corrections_mrad=measured,
    )
    if args.bus:  # --bus selects the heliostats of the file on that bus
        cmds = [c for c in cmds if cfg.heliostats[c.heliostat].bus == args.bus]
    if not cmds:
        raise ValueError(f"{args.corrections}: nothing to send")
    raw = Path(args.corrections).read_bytes()
    key = hashlib.sha256(
        raw + f"|{args.setpoints}|{args.no_params}|{args.address}".encode()
    ).hexdigest()
    return _execute(
        args, cfg, cmds, f"apply-{key}", f"apply {args.corrections}", corrections=measured
    )


def _revert(args) -> int:
    """``bridge revert``: the previous parameter set of one heliostat, from the history."""
    from firmware_bridge.safety import plan_corrections
    from heliostat.campaign.history import History, revert_target
    from heliostat.commands.history import DEFAULT_DB
    from heliostat.corrections_format import FORMAT
    from heliostat.errors import InputError
    from heliostat.kinematics import error_names

    cfg = _require_field(args)
    hid = args.heliostat
    if hid not in cfg.heliostats:
        raise InputError(f"--heliostat {hid}: not in the field config {cfg.source}")
    db = args.db or os.environ.get("HELIOSTAT_DB") or DEFAULT_DB
    if not Path(db).is_file():
        raise InputError(f"{db}: no history database (give --db)")
    with History(db, readonly=True) as hist:
        current, previous = revert_target(hist, hid)
    drive = cfg.heliostats[hid].kinematics.drive
    if previous is None:
        params = {n: 0.0 for n in error_names(drive)}
        what = "the nominal set (no correction before it: every parameter 0)"
    else:
        params = previous["parameters"]
        what = f"fit {previous['fit_id']}'s set (confirmed {previous['delivered_utc']})"
    doc = {
        "format": FORMAT,
        "heliostats": [
            {"heliostat": hid, "drive": current["drive"], "parameters": params, "setpoints": []}
        ],
    }
    measured: dict = {}
    cmds = plan_corrections(cfg, doc, params=True, setpoints="none", corrections_mrad=measured)
    if not args.json:
        print(
            f"revert {hid}: from fit {current['fit_id']}'s set (confirmed "
            f"{current['delivered_utc']}) to {what}"
        )
    done: list = []
    key = f"revert-{hid}-{current['correction_id']}-{previous['correction_id'] if previous else 0}"
    rc = _execute(
        args, cfg, cmds, key, f"revert {hid}", corrections=measured, on_outcomes=done.extend
    )
    if rc == 0 and not args.dry_run and done:
        from firmware_bridge.journal import utc_now

        now = utc_now()
        port = _bus_groups(args, cfg, [hid])[0][0]
        with History(db) as hist:
            hist.set_correction(
                current["correction_id"], "reverted", now, "reverted by heliostat bridge revert"
            )
            if previous is not None:
                for o in done:
                    hist.add_delivery(previous["correction_id"], now, port, o)
        if not args.json:
            print(f"recorded in {db}: fit {current['fit_id']}'s correction is reverted")
    return rc
