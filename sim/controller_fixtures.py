"""Stand-ins around the controller emulator: fields, corrections files, a pty null-modem
cable and a reference controller served by pymodbus's own server.

Used by the tests and ``bench/bridge.py``.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import tty
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import numpy as np

from firmware_bridge import registers as R


def field_toml(
    n_heliostats: int,
    port: str = "loop://",
    baudrate: int = 115200,
    max_correction_mrad: float = 20.0,
    timeout_s: float = 0.1,
) -> str:
    """A field of ``n_heliostats`` az-el heliostats on one bus (addresses 1..n)."""
    if not 1 <= n_heliostats <= 247:
        raise ValueError(f"n_heliostats must be in 1..247, got {n_heliostats!r}")
    lines = [
        "[site]",
        'name = "Emulated plant"',
        "latitude_deg = 37.1",
        "longitude_deg = -2.36",
        "altitude_m = 500.0",
        "[safety]",
        f"max_correction_mrad = {max_correction_mrad}",
        "require_confirmation = true",
        "[[targets]]",
        'id = "cal1"',
        "centre_enu_m = [0.0, 0.0, 50.0]",
        "normal_enu = [0.0, 1.0, 0.0]",
        "width_m = 5.0",
        "height_m = 5.0",
        "[drives.slew]",
        'type = "azel"',
        "[drives.slew.axis1]",
        "steps_per_deg = 1000.0",
        "zero_deg = 180.0",
        "min_steps = -170000",
        "max_steps = 170000",
        "[drives.slew.axis2]",
        "steps_per_deg = 1000.0",
        "zero_deg = 0.0",
        "min_steps = -5000",
        "max_steps = 92000",
        "[buses.bus1]",
        f'port = "{port}"',
        f"baudrate = {baudrate}",
        f"timeout_s = {timeout_s}",
    ]
    for i in range(n_heliostats):
        row, col = divmod(i, 10)
        lines += [
            "[[heliostats]]",
            f'id = "H{i + 1:03d}"',
            f"position_enu_m = [{-45.0 + 10.0 * col}, {60.0 + 12.0 * row}, 0.0]",
            'drive = "slew"',
            'bus = "bus1"',
            f"address = {i + 1}",
        ]
    return "\n".join(lines) + "\n"


def corrections_for(cfg, n_setpoints: int = 4, seed: int = 0, offset_steps: int = 300) -> dict:
    """A ``heliostat-corrections/1`` document for every heliostat of a field: a small
    random parameter set and ``n_setpoints`` setpoints within ±``offset_steps`` of a
    nominal in-range pose."""
    from heliostat.corrections_format import FORMAT
    from heliostat.kinematics import error_names

    rng = np.random.default_rng(seed)
    t0 = datetime(2026, 6, 21, 8, 0, tzinfo=timezone.utc)
    out = []
    for h in cfg.heliostats.values():
        names = error_names(h.kinematics.drive)
        params = {n: float(rng.normal(0, 1e-3 if n.endswith("_rad") else 5e-3)) for n in names}
        sps = []
        for k in range(n_setpoints):
            nom = []
            for ax in h.kinematics.axes:
                lo, hi = ax.min_steps + 2 * offset_steps, ax.max_steps - 2 * offset_steps
                nom.append(int(rng.integers(lo, hi)))
            sp = [n + int(rng.integers(-offset_steps, offset_steps + 1)) for n in nom]
            sps.append(
                {
                    "time_utc": (t0 + timedelta(minutes=10 * k)).isoformat().replace("+00:00", "Z"),
                    "target": "cal1",
                    "aim_xy_m": [0.0, 0.0],
                    "axis1_steps": sp[0],
                    "axis2_steps": sp[1],
                    "nominal_axis1_steps": nom[0],
                    "nominal_axis2_steps": nom[1],
                }
            )
        out.append(
            {
                "heliostat": h.id,
                "drive": h.kinematics.drive,
                "parameters": params,
                "parameter_std": {n: 1e-4 for n in names},
                "setpoints": sps,
                "rms_before_mrad": 3.0,
                "rms_after_mrad": 0.5,
                "loo_rms_mrad": 0.6,
            }
        )
    return {
        "format": FORMAT,
        "created_utc": "2026-06-21T12:00:00Z",
        "field": cfg.source,
        "heliostats": out,
    }


class PtyNullModem:
    """Two pty ports wired to each other (a null-modem cable made in Python).

    Two programs that each want a device path (a pymodbus server and the bridge) open
    ``port_a`` and ``port_b``; a thread copies bytes between the two pty masters.
    """

    def __init__(self) -> None:
        self._fds = [os.openpty(), os.openpty()]
        for m, s in self._fds:
            tty.setraw(m)
            tty.setraw(s)
        self.port_a = os.ttyname(self._fds[0][1])
        self.port_b = os.ttyname(self._fds[1][1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)

    def _pump(self) -> None:
        ma, mb = self._fds[0][0], self._fds[1][0]
        peer = {ma: mb, mb: ma}
        while not self._stop.is_set():
            r, _, _ = select.select([ma, mb], [], [], 0.05)
            for fd in r:
                try:
                    os.write(peer[fd], os.read(fd, 4096))
                except OSError:
                    pass

    def __enter__(self) -> PtyNullModem:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for m, s in self._fds:
            for fd in (m, s):
                try:
                    os.close(fd)
                except OSError:
                    pass


def _reference_action(limits):
    """A minimal controller behind pymodbus's datastore: on a command-block write it
    echoes the command id in status, moves instantly and activates parameter sets."""
    from pymodbus.constants import ExcCodes

    async def action(function_code, start_address, address, count, regs, set_values):
        if not set_values or address != R.COMMAND_START:
            return None
        vals = list(set_values)
        cid, code = R.regs_to_u32(vals[0:2]), vals[2]

        def put(reg, values):
            regs[reg - start_address : reg - start_address + len(values)] = values

        if code == R.CommandCode.MOVE:
            if len(vals) != R.COMMAND_COUNT:
                return ExcCodes.ILLEGAL_VALUE
            sp = (R.regs_to_i32(vals[4:6]), R.regs_to_i32(vals[6:8]))
            if not all(lo <= s <= hi for s, (lo, hi) in zip(sp, limits, strict=True)):
                put(R.REG_REJECT_CODE, [int(R.RejectCode.SETPOINT_OUT_OF_LIMITS)])
                put(R.REG_REJECTED_CMD_ID, R.u32_to_regs(cid))
                return ExcCodes.ILLEGAL_VALUE
            for reg_pos, reg_tgt, s in zip(
                (R.REG_AXIS1_POS, R.REG_AXIS2_POS),
                (R.REG_AXIS1_TARGET, R.REG_AXIS2_TARGET),
                sp,
                strict=True,
            ):
                put(reg_pos, R.i32_to_regs(s))
                put(reg_tgt, R.i32_to_regs(s))
        elif code == R.CommandCode.APPLY_PARAMS:
            st = R.REG_PARAM_STAGING - start_address
            block = regs[st : st + R.PARAM_BLOCK_COUNT]
            put(R.REG_PARAM_ACTIVE, block)
            put(R.REG_PARAM_SET_ID, R.u32_to_regs(cid))
        elif code == R.CommandCode.STOW:
            put(R.REG_FLAGS, [int(R.Flag.STOWED)])
        put(R.REG_LAST_CMD_ID, R.u32_to_regs(cid))
        return None

    return action


def reference_device(address: int, limits=((-170000, 170000), (-5000, 92000))):
    """A pymodbus ``SimDevice`` laid out as our register map (third-party server)."""
    from pymodbus.simulator import DataType, SimData, SimDevice

    ident = [R.MAGIC, R.MAP_VERSION, 0x0100, 0, 1, 15, 0, address]
    regs = lambda a, n, **kw: SimData(a, count=n, values=0, datatype=DataType.REGISTERS, **kw)  # noqa: E731
    return SimDevice(
        id=address,
        simdata=[
            SimData(0, values=ident, datatype=DataType.REGISTERS, readonly=True),
            regs(R.STATUS_START, R.STATUS_COUNT, readonly=True),
            SimData(R.REG_WATCHDOG_TIMEOUT, values=600, datatype=DataType.REGISTERS),
            regs(R.COMMAND_START, R.COMMAND_COUNT),
            regs(R.REG_PARAM_STAGING, R.PARAM_BLOCK_COUNT),
            regs(R.REG_PARAM_ACTIVE, R.PARAM_BLOCK_COUNT, readonly=True),
        ],
        action=_reference_action(limits),
    )


class ReferenceServer:
    """pymodbus's ``ModbusSerialServer`` serving reference devices on a port (thread)."""

    def __init__(self, port: str, addresses=(1,), baudrate: int = 115200) -> None:
        self.port, self.addresses, self.baudrate = port, tuple(addresses), baudrate
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from pymodbus.server import ModbusSerialServer

        async def main():
            self._server = ModbusSerialServer(
                [reference_device(a) for a in self.addresses],
                port=self.port,
                baudrate=self.baudrate,
            )
            await self._server.serve_forever(background=True)
            self._ready.set()
            await self._server.serving

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(main())

    def __enter__(self) -> ReferenceServer:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError(f"pymodbus server did not start on {self.port}")
        return self

    def __exit__(self, *exc) -> None:
        if self._loop and self._server:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(5)
        self._thread.join(timeout=5)


def run_reliability(
    n_commands: int = 1000,
    n_controllers: int = 20,
    corrupt_p: float = 0.01,
    drop_p: float = 0.01,
    reset_p: float = 0.002,
    late_p: float = 0.0,
    truncate_p: float = 0.0,
    seed: int = 0,
    timing: bool = False,
    timeout_s: float = 0.05,
    journal_path: str = ":memory:",
) -> dict:
    """Deliver ``n_commands`` random commands to emulated controllers on a faulty bus
    and check them against the controllers' ground truth.

    Returns counts: outcomes per state, commands applied twice, applied with other
    content than sent ("wrong"), confirmed but never applied, and the bus's fault counts.
    """
    import tempfile
    from pathlib import Path

    from firmware_bridge.delivery import ActuatorCommand, Bridge, RetryPolicy
    from firmware_bridge.journal import Journal
    from firmware_bridge.transport import ModbusLink
    from heliostat.config import load_field
    from heliostat.kinematics import error_names
    from sim.controllers import ControllerModel, EmulatedBus, FaultProfile, specs_for_field

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        fpath = Path(tmp) / "field.toml"
        fpath.write_text(field_toml(n_controllers))
        cfg = load_field(fpath)
    ctls = [ControllerModel(s, param_names=error_names(s.drive)) for s in specs_for_field(cfg)]
    faults = FaultProfile(
        corrupt_p=corrupt_p,
        drop_p=drop_p,
        reset_p=reset_p,
        late_p=late_p,
        truncate_p=truncate_p,
        late_s=2 * timeout_s,
        boot_s=timeout_s,
    )
    hs = list(cfg.heliostats.values())
    cmds = []
    for i in range(n_commands):
        h = hs[i % len(hs)]
        r = rng.random()
        if r < 0.02:
            names = error_names(h.kinematics.drive)
            cmds.append(
                ActuatorCommand(
                    h.id,
                    h.address,
                    "params",
                    params=tuple(float(v) for v in rng.normal(0, 1e-3, len(names))),
                )
            )
        elif r < 0.03:
            cmds.append(ActuatorCommand(h.id, h.address, "stow"))
        else:
            sp = tuple(int(rng.integers(a.min_steps, a.max_steps + 1)) for a in h.kinematics.axes)
            cmds.append(ActuatorCommand(h.id, h.address, "move", sp))
    with EmulatedBus(ctls, faults=faults, seed=seed, timing=timing) as bus:
        link = ModbusLink(bus.port, timeout_s=timeout_s, inter_frame_s=None if timing else 0.0)
        with link, Journal(journal_path) as j:
            br = Bridge(
                link,
                j,
                RetryPolicy(
                    max_attempts=8, backoff_s=0.005, backoff_max_s=0.05, breaker_failures=10**9
                ),
            )
            outcomes = br.run(f"reliability-{seed}-{n_commands}", "run_reliability", cmds)
        stats = bus.stats
    return check_against_truth(outcomes, cmds, ctls) | {
        "bus": {k: v for k, v in stats.__dict__.items() if k != "by_kind"},
        "link": {"requests": link.counters.requests, "timeouts": link.counters.timeouts},
    }


def check_against_truth(outcomes, cmds, controllers) -> dict:
    """Compare the bridge's outcomes with what the emulated controllers really applied."""
    by_addr = {c.spec.address: c for c in controllers}
    states: dict[str, int] = {}
    for o in outcomes:
        states[o.state] = states.get(o.state, 0) + 1
    twice = sum(n - 1 for c in controllers for n in c.applied_counts.values() if n > 1)
    sent = {(o.address, o.command_id): cmd for o, cmd in zip(outcomes, cmds, strict=True)}
    wrong = 0
    applied = set()
    for c in controllers:
        for cid, code, sp in c.applied:
            applied.add((c.spec.address, cid))
            cmd = sent.get((c.spec.address, cid))
            if cmd is None:
                wrong += 1
                continue
            want = {
                "move": R.CommandCode.MOVE,
                "stow": R.CommandCode.STOW,
                "params": R.CommandCode.APPLY_PARAMS,
            }[cmd.kind]
            if code != want or (cmd.kind == "move" and sp != cmd.setpoints_steps):
                wrong += 1
    confirmed_not_applied = sum(
        1 for o in outcomes if o.state == "confirmed" and (o.address, o.command_id) not in applied
    )
    unsettled = sum(
        1
        for o in outcomes
        if o.state not in ("confirmed", "superseded", "rejected", "unreachable", "failed")
    )
    # The last applied move/stow must be what each controller is heading for.
    final_mismatch = 0
    for c in by_addr.values():
        moves = [(cid, code, sp) for cid, code, sp in c.applied if code in (1, 2)]
        if moves:
            _, code, sp = moves[-1]
            want = tuple(c.spec.stow_steps) if code == 2 else sp
            if tuple(c.target_steps) != tuple(want):
                final_mismatch += 1
    return {
        "commands": len(outcomes),
        "states": states,
        "applied_twice": twice,
        "applied_wrongly": wrong,
        "confirmed_not_applied": confirmed_not_applied,
        "unsettled": unsettled,
        "final_target_mismatch": final_mismatch,
    }


class TcpSerialGateway:
    """A serial device server on 127.0.0.1: one TCP client ↔ a serial port (pty path).

    Lets a master reach an emulated bus through ``socket://127.0.0.1:PORT`` as it would a
    real RS-485 gateway. Loopback only; stops with the context.
    """

    def __init__(self, serial_path: str) -> None:
        import socket

        self.serial_path = serial_path
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(1)
        self.url = f"socket://127.0.0.1:{self._srv.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        fd = os.open(self.serial_path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        self._srv.settimeout(0.1)
        conn = None
        try:
            while not self._stop.is_set() and conn is None:
                try:
                    conn, _ = self._srv.accept()
                except OSError:
                    continue
            while conn is not None and not self._stop.is_set():
                r, _, _ = select.select([fd, conn], [], [], 0.05)
                if fd in r:
                    conn.sendall(os.read(fd, 4096))
                if conn in r:
                    data = conn.recv(4096)
                    if not data:
                        break
                    os.write(fd, data)
        finally:
            if conn is not None:
                conn.close()
            os.close(fd)

    def __enter__(self) -> TcpSerialGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._srv.close()


def field_toml_buses(
    per_bus: Sequence[int],
    ports: Sequence[str] | None = None,
    baudrate: int = 115200,
    timeout_s: float = 0.1,
) -> str:
    """A field of az-el heliostats on several buses: bus ``bus<k+1>`` on ``ports[k]``
    carries ``per_bus[k]`` heliostats at addresses 1..per_bus[k]; ids run H001, H002, ...
    over the buses in order."""
    if not per_bus:
        raise ValueError("per_bus must name at least one bus")
    ports = list(ports) if ports is not None else ["loop://"] * len(per_bus)
    if len(ports) != len(per_bus):
        raise ValueError(f"{len(per_bus)} buses but {len(ports)} ports")
    one = field_toml(1, baudrate=baudrate, timeout_s=timeout_s)
    lines = one[: one.index("[buses.bus1]")].splitlines()
    for k, port in enumerate(ports):
        lines += [
            f"[buses.bus{k + 1}]",
            f'port = "{port}"',
            f"baudrate = {baudrate}",
            f"timeout_s = {timeout_s}",
        ]
    i = 0
    for k, n in enumerate(per_bus):
        if not 1 <= n <= 247:
            raise ValueError(f"per_bus[{k}] must be in 1..247, got {n!r}")
        for a in range(1, n + 1):
            row, col = divmod(i, 10)
            lines += [
                "[[heliostats]]",
                f'id = "H{i + 1:03d}"',
                f"position_enu_m = [{-45.0 + 10.0 * col}, {60.0 + 12.0 * row}, 0.0]",
                'drive = "slew"',
                f'bus = "bus{k + 1}"',
                f"address = {a}",
            ]
            i += 1
    return "\n".join(lines) + "\n"
