"""Emulated heliostat controllers: Modbus RTU slaves on a virtual serial line.

:class:`ControllerModel` is one controller: the register map of
``docs/controller-registers.md``, two axes moving at a slew rate with backlash and travel
limits, a watchdog that stows the heliostat, and a command history in (emulated)
non-volatile memory so that a reset neither forgets nor repeats a command. Its physics
reads an injectable ``clock``; nothing in it sleeps.

:class:`EmulatedBus` puts any number of controllers on one RS-485 line, served on a pty
pair made in Python: the bridge (or any Modbus master) opens the pty's path. Only the
controller whose address a frame carries answers; frames for other addresses get
silence, broadcasts (address 0) are executed by all and answered by none. The bus
models the line's timing at its baud rate (each reply is released when its last byte
would have arrived, t3.5 silences included) and injects faults: bit errors, dropped and
truncated frames, late replies and controller resets.
"""

from __future__ import annotations

import hashlib
import math
import os
import select
import threading
import time
import tty
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
    ReadWriteMultipleRegistersResponse,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterResponse,
)

from firmware_bridge import registers as R
from firmware_bridge.ports import announce, withdraw
from heliostat.kinematics.drives._base import BACKLASH

Clock = Callable[[], float]


class ManualClock:
    """A clock the test advances by hand. [s]"""

    def __init__(self, t_s: float = 0.0) -> None:
        self.t_s = float(t_s)

    def __call__(self) -> float:
        return self.t_s

    def advance(self, dt_s: float) -> None:
        if dt_s < 0:
            raise ValueError(f"a clock cannot run backwards (dt_s={dt_s!r})")
        self.t_s += dt_s


@dataclass(frozen=True, slots=True)
class ControllerSpec:
    """Hardware of one emulated controller.

    Attributes
    ----------
    address : int
        Modbus address 1..247.
    drive : str
        Name of a registered drive type (sets the ``DRIVE`` register).
    n_params : int
        Length of the error-parameter set it accepts.
    min_steps, max_steps : tuple of 2 int
        Travel limits per axis. [steps]
    stow_steps : tuple of 2 int
        Stow position. [steps]
    slew_steps_per_s : tuple of 2 float
        Axis speeds. [steps/s]
    backlash_steps : tuple of 2 float
        Dead band between motor and output on a reversal. [steps]
    start_steps : tuple of 2 int or None
        Initial position (default: stow).
    serial : int
    firmware : tuple of 3 int
    """

    address: int
    drive: str = "azel"
    n_params: int = 17
    min_steps: tuple[int, int] = (-170000, -5000)
    max_steps: tuple[int, int] = (170000, 92000)
    stow_steps: tuple[int, int] = (0, 90000)
    slew_steps_per_s: tuple[float, float] = (2000.0, 2000.0)
    backlash_steps: tuple[float, float] = (20.0, 20.0)
    start_steps: tuple[int, int] | None = None
    serial: int = 0
    firmware: tuple[int, int, int] = (1, 0, 0)

    def __post_init__(self) -> None:
        if not 1 <= self.address <= 247:
            raise ValueError(f"controller address must be in 1..247, got {self.address!r}")


def specs_for_field(cfg, bus: str | None = None) -> list[ControllerSpec]:
    """One spec per heliostat of a :class:`heliostat.config.FieldConfig` (optionally one bus).

    Limits come from the kinematics; the stow position is the nearest in-range point to
    (axis-1 mid-travel, axis-2 upper limit).
    """
    from heliostat.kinematics import error_names

    out = []
    for h in cfg.heliostats.values():
        if bus is not None and h.bus != bus:
            continue
        k = h.kinematics
        lo = (k.axis1.min_steps, k.axis2.min_steps)
        hi = (k.axis1.max_steps, k.axis2.max_steps)
        stow = ((lo[0] + hi[0]) // 2, hi[1] - (hi[1] - lo[1]) // 50)
        out.append(
            ControllerSpec(
                address=h.address,
                drive=k.drive,
                n_params=len(error_names(k.drive)),
                min_steps=lo,
                max_steps=hi,
                stow_steps=stow,
                serial=int(hashlib.sha256(h.id.encode()).hexdigest()[:7], 16),
            )
        )
    return out


_PARAM_ANGLE_MAX_RAD = 0.1  # firmware sanity bound on an angular error parameter
_PARAM_LENGTH_MAX_M = 1.0  # and on a translation / stroke error


class _Reject(Exception):
    def __init__(self, exc_code: int, reason: R.RejectCode = R.RejectCode.NONE) -> None:
        self.exc_code, self.reason = exc_code, reason


class ControllerModel:
    """One emulated controller: registers, axes, watchdog, command handling.

    Parameters
    ----------
    spec : ControllerSpec
    clock : callable returning seconds
        Drives the physics (slew, watchdog). Inject :class:`ManualClock` in tests.
    param_names : sequence of str, optional
        Names of the parameters (only to check units: ``*_rad`` vs ``*_m``).
    """

    def __init__(
        self, spec: ControllerSpec, clock: Clock = time.monotonic, param_names=None
    ) -> None:
        self.spec = spec
        self.clock = clock
        self.param_names = tuple(param_names) if param_names else None
        self.regs = [0] * R.MAP_END
        start = spec.start_steps if spec.start_steps is not None else spec.stow_steps
        self.motor_steps = [float(start[0]), float(start[1])]
        self.output_steps = list(self.motor_steps)  # load side, after backlash
        self.target_steps = [int(start[0]), int(start[1])]
        self.flags = R.Flag.STOWED if tuple(start) == tuple(spec.stow_steps) else R.Flag(0)
        self.faults = R.Fault(0)
        # Emulated non-volatile memory: survives reset().
        self.last_command_id = 0
        self.history: dict[int, bytes] = {}  # command id -> digest of its content
        self.reject_code = R.RejectCode.NONE
        self.rejected_command_id = 0
        self.param_set_id = 0
        self.active_params: list[int] = [0]
        self.watchdog_timeout_ds = 600
        self.boot_count = 0
        # Volatile
        self.t_last_s = clock()
        self.t_contact_s = self.t_last_s
        self.booting_until_s = -math.inf
        #: Every command the controller *applied* (not the ones it acknowledged as
        #: repeats): ``(command id, code, setpoints or None)``. Ground truth for tests.
        self.applied: list[tuple[int, int, tuple[int, int] | None]] = []
        self._init_identity()

    # ------------------------------------------------------------------ registers
    def _init_identity(self) -> None:
        s = self.spec
        self.regs[R.REG_MAGIC] = R.MAGIC
        self.regs[R.REG_MAP_VERSION] = R.MAP_VERSION
        self.regs[R.REG_FW_VERSION] = (s.firmware[0] << 8) | s.firmware[1]
        self.regs[R.REG_FW_PATCH] = s.firmware[2]
        self.regs[R.REG_DRIVE] = R.drive_code(s.drive)
        self.regs[R.REG_MAX_PARAMS] = s.n_params
        self.regs[R.REG_SERIAL : R.REG_SERIAL + 2] = R.u32_to_regs(s.serial & R.U32_MAX)

    def _refresh_status(self) -> None:
        now = self.clock()
        flags = self.flags
        for i, (lo, hi) in enumerate(zip(self.spec.min_steps, self.spec.max_steps, strict=True)):
            moving = abs(self.motor_steps[i] - self.target_steps[i]) > 0.5
            flags = flags | R.Flag(1 << i) if moving else flags & ~R.Flag(1 << i)
            at_min, at_max = self.motor_steps[i] <= lo, self.motor_steps[i] >= hi
            fmin, fmax = R.Flag(1 << (2 + 2 * i)), R.Flag(1 << (3 + 2 * i))
            flags = flags | fmin if at_min else flags & ~fmin
            flags = flags | fmax if at_max else flags & ~fmax
        if flags & R.Flag.STOWING and not (flags & (R.Flag.AXIS1_MOVING | R.Flag.AXIS2_MOVING)):
            flags = (flags & ~R.Flag.STOWING) | R.Flag.STOWED
        flags = flags | R.Flag.FAULT if self.faults else flags & ~R.Flag.FAULT
        self.flags = flags
        rg = self.regs
        rg[R.REG_FLAGS] = int(flags)
        rg[R.REG_FAULTS] = int(self.faults)
        rg[R.REG_LAST_CMD_ID : R.REG_LAST_CMD_ID + 2] = R.u32_to_regs(self.last_command_id)
        for i, reg in enumerate((R.REG_AXIS1_POS, R.REG_AXIS2_POS)):
            rg[reg : reg + 2] = R.i32_to_regs(int(round(self.motor_steps[i])))
        for i, reg in enumerate((R.REG_AXIS1_TARGET, R.REG_AXIS2_TARGET)):
            rg[reg : reg + 2] = R.i32_to_regs(self.target_steps[i])
        if self.watchdog_timeout_ds == 0:
            rg[R.REG_WATCHDOG_LEFT] = 0xFFFF
        else:
            left = self.watchdog_timeout_ds / 10.0 - (now - self.t_contact_s)
            rg[R.REG_WATCHDOG_LEFT] = max(0, min(0xFFFE, int(left * 10)))
        rg[R.REG_REJECT_CODE] = int(self.reject_code)
        rg[R.REG_REJECTED_CMD_ID : R.REG_REJECTED_CMD_ID + 2] = R.u32_to_regs(
            self.rejected_command_id
        )
        rg[R.REG_PARAM_SET_ID : R.REG_PARAM_SET_ID + 2] = R.u32_to_regs(self.param_set_id)
        rg[R.REG_BOOT_COUNT] = self.boot_count & 0xFFFF
        rg[R.REG_PARAM_CRC] = R.crc16_regs(self.active_params)
        rg[R.REG_WATCHDOG_TIMEOUT] = self.watchdog_timeout_ds
        n = len(self.active_params)
        rg[R.REG_PARAM_ACTIVE : R.REG_PARAM_ACTIVE + n] = self.active_params
        rg[R.REG_PARAM_ACTIVE + n : R.REG_PARAM_ACTIVE + R.PARAM_BLOCK_COUNT] = [0] * (
            R.PARAM_BLOCK_COUNT - n
        )

    # ------------------------------------------------------------------ physics
    def _move(self, dt_s: float) -> None:
        for i in range(2):
            step = self.spec.slew_steps_per_s[i] * dt_s
            d = self.target_steps[i] - self.motor_steps[i]
            self.motor_steps[i] += max(-step, min(step, d))
            lo, hi = self.spec.min_steps[i], self.spec.max_steps[i]
            self.motor_steps[i] = min(max(self.motor_steps[i], lo), hi)
            half = self.spec.backlash_steps[i] / 2.0
            m, o = self.motor_steps[i], self.output_steps[i]
            self.output_steps[i] = min(max(o, m - half), m + half)

    def advance(self) -> None:
        """Bring the physics up to the clock's time (slew; stow when the watchdog runs out)."""
        now = self.clock()
        t = self.t_last_s
        if now <= t:
            return
        expiry = (
            self.t_contact_s + self.watchdog_timeout_ds / 10.0
            if self.watchdog_timeout_ds and not self.flags & R.Flag.WATCHDOG_EXPIRED
            else math.inf
        )
        if t < expiry <= now:
            self._move(expiry - t)
            t = expiry
            self.target_steps = list(self.spec.stow_steps)
            self.flags = (self.flags | R.Flag.WATCHDOG_EXPIRED | R.Flag.STOWING) & ~R.Flag.STOWED
        self._move(now - t)
        self.t_last_s = now

    def reset(self, boot_s: float = 0.05) -> None:
        """Power-cycle: volatile state lost, the command history and targets kept."""
        self.advance()
        self.boot_count += 1
        self.booting_until_s = self.clock() + boot_s
        self.flags = R.Flag.BOOTED | (self.flags & (R.Flag.STOWING | R.Flag.STOWED))
        self.t_contact_s = self.clock()

    def set_fault(self, fault: R.Fault) -> None:
        self.faults |= fault

    @property
    def booting(self) -> bool:
        return self.clock() < self.booting_until_s

    # ------------------------------------------------------------------ requests
    def handle(self, pdu: ModbusPDU, broadcast: bool = False) -> ModbusPDU | None:
        """Execute one decoded request; returns the response PDU (None when silent)."""
        if self.booting:
            return None
        self.advance()
        self.t_contact_s = self.clock()
        fc = pdu.function_code
        try:
            if fc in (3, 4):
                resp = self._read(pdu, fc)
            elif fc == 16:
                self._write(pdu.address, list(pdu.registers), pdu.count, broadcast)
                resp = WriteMultipleRegistersResponse(address=pdu.address, count=pdu.count)
            elif fc == 6:
                self._write(pdu.address, list(pdu.registers), 1, broadcast)
                resp = WriteSingleRegisterResponse(
                    address=pdu.address, registers=list(pdu.registers)
                )
            elif fc == 23:
                self._write(pdu.write_address, list(pdu.write_registers), pdu.write_count, False)
                rd = ReadHoldingRegistersRequest(address=pdu.read_address, count=pdu.read_count)
                regs = self._read(rd, 3).registers
                resp = ReadWriteMultipleRegistersResponse(registers=regs)
            else:
                raise _Reject(1)
        except _Reject as rej:
            resp = ExceptionResponse(fc, rej.exc_code)
        if broadcast:
            return None
        resp.dev_id = self.spec.address
        return resp

    def _read(self, pdu, fc: int):
        start, count = pdu.address, pdu.count
        if not 1 <= count <= 125:
            raise _Reject(3)
        if start < 0 or start + count > R.MAP_END:
            raise _Reject(2)
        if fc == 4 and not (
            start + count <= R.IDENTITY_START + R.IDENTITY_COUNT
            or (start >= R.STATUS_START and start + count <= R.STATUS_START + R.STATUS_COUNT)
        ):
            raise _Reject(2)
        self._refresh_status()
        regs = self.regs[start : start + count]
        cls = ReadInputRegistersResponse if fc == 4 else ReadHoldingRegistersResponse
        return cls(registers=regs)

    def _write(self, start: int, values: list[int], count: int, broadcast: bool) -> None:
        if count != len(values) or not 1 <= count <= 123:
            raise _Reject(3)
        end = start + count
        if start == R.REG_WATCHDOG_TIMEOUT and count == 1:
            self.watchdog_timeout_ds = values[0]
            return
        if R.REG_PARAM_STAGING <= start and end <= R.REG_PARAM_STAGING + R.PARAM_BLOCK_COUNT:
            self.regs[start:end] = values
            return
        if start == R.COMMAND_START:
            if count not in (R.COMMAND_SHORT_COUNT, R.COMMAND_COUNT):
                raise self._reject(0, R.RejectCode.BAD_COMMAND_LENGTH)
            self._command(values)
            return
        raise _Reject(2)

    def _reject(self, command_id: int, reason: R.RejectCode, exc_code: int = 3) -> _Reject:
        self.reject_code = reason
        self.rejected_command_id = command_id
        return _Reject(exc_code, reason)

    def _command(self, values: list[int]) -> None:
        cid = R.regs_to_u32(values[0:2])
        code = values[2]
        if cid == 0:
            raise self._reject(0, R.RejectCode.ZERO_COMMAND_ID)
        digest = hashlib.blake2b(bytes(str(values), "ascii"), digest_size=8).digest()
        if cid in self.history:
            if self.history[cid] == digest:
                return  # a repeat of a command already applied: acknowledge, do nothing
            raise self._reject(cid, R.RejectCode.COMMAND_ID_REUSED)
        setpoints = None
        if code == R.CommandCode.MOVE:
            if len(values) != R.COMMAND_COUNT:
                raise self._reject(cid, R.RejectCode.BAD_COMMAND_LENGTH)
            if self.faults:
                raise self._reject(cid, R.RejectCode.FAULT_ACTIVE, exc_code=4)
            setpoints = (R.regs_to_i32(values[4:6]), R.regs_to_i32(values[6:8]))
            for i, sp in enumerate(setpoints):
                if not self.spec.min_steps[i] <= sp <= self.spec.max_steps[i]:
                    raise self._reject(cid, R.RejectCode.SETPOINT_OUT_OF_LIMITS)
            self.target_steps = list(setpoints)
            self.flags &= ~(R.Flag.STOWING | R.Flag.STOWED | R.Flag.WATCHDOG_EXPIRED)
        elif code == R.CommandCode.STOW:
            self.target_steps = list(self.spec.stow_steps)
            self.flags = (self.flags | R.Flag.STOWING) & ~R.Flag.STOWED
        elif code == R.CommandCode.APPLY_PARAMS:
            self._apply_params(cid, values[3])
        elif code == R.CommandCode.CLEAR_FAULTS:
            self.faults = R.Fault(0)
        else:
            raise self._reject(cid, R.RejectCode.UNKNOWN_COMMAND)
        self.history[cid] = digest
        if len(self.history) > 64:
            self.history.pop(next(iter(self.history)))
        self.last_command_id = cid
        self.flags &= ~R.Flag.BOOTED
        self.applied.append((cid, int(code), setpoints))

    def _apply_params(self, cid: int, crc_arg: int) -> None:
        st = R.REG_PARAM_STAGING
        n = self.regs[st]
        block = self.regs[st : st + 1 + 2 * n] if n <= R.MAX_PARAMS else []
        # the whole block, or (firmware that knows the backlash pair) the block without
        # it, the pair then zero: what a controller predating the pair accepts
        short = self.spec.n_params - len(BACKLASH)
        knows_backlash = self.param_names is not None and self.param_names[short:] == BACKLASH
        if n != self.spec.n_params and not (knows_backlash and n == short):
            raise self._reject(cid, R.RejectCode.PARAM_OUT_OF_RANGE)
        if R.crc16_regs(block) != crc_arg:
            raise self._reject(cid, R.RejectCode.PARAM_CRC_MISMATCH)
        values = R.decode_params(block)
        names = self.param_names[:n] if self.param_names else ("",) * n
        for name, v in zip(names, values, strict=True):
            bound = _PARAM_LENGTH_MAX_M if name.endswith("_m") else _PARAM_ANGLE_MAX_RAD
            if not math.isfinite(v) or abs(v) > bound:
                raise self._reject(cid, R.RejectCode.PARAM_OUT_OF_RANGE)
        self.active_params = list(block)
        self.param_set_id = cid
        self.flags |= R.Flag.PARAMS_VALID

    @property
    def applied_counts(self) -> Counter:
        """How many times each command id was applied (must never exceed 1)."""
        return Counter(cid for cid, _, _ in self.applied)


# --------------------------------------------------------------------------- the bus
@dataclass(frozen=True, slots=True)
class FaultProfile:
    """Probabilities of line faults, each drawn per frame (request and reply apart).

    Attributes
    ----------
    corrupt_p : float
        One bit flipped in the frame (the CRC catches it; the receiver drops it).
    drop_p : float
        Frame lost.
    truncate_p : float
        Frame cut short.
    late_p : float
        Reply released ``late_s`` after it was due (after the master's timeout).
    reset_p : float
        Controller resets right after executing a request (its reply is lost).
    late_s, boot_s : float
        Lateness of a late reply and boot time after a reset. [s]
    """

    corrupt_p: float = 0.0
    drop_p: float = 0.0
    truncate_p: float = 0.0
    late_p: float = 0.0
    reset_p: float = 0.0
    late_s: float = 0.3
    boot_s: float = 0.05


@dataclass
class BusStats:
    """What happened on an emulated bus (counts)."""

    frames_in: int = 0
    replies: int = 0
    corrupted: int = 0
    dropped: int = 0
    truncated: int = 0
    late: int = 0
    resets: int = 0
    collisions: int = 0
    ignored_foreign: int = 0
    broadcasts: int = 0
    by_kind: Counter = field(default_factory=Counter)


class EmulatedBus:
    """Controllers on one RS-485 line served on a pty pair.

    Parameters
    ----------
    controllers : iterable of ControllerModel
        Distinct addresses.
    baudrate, parity, stopbits
        Line settings for the timing model.
    faults : FaultProfile
    seed : int
        Seed of the fault draws.
    turnaround_s : float
        Controller's processing time before it starts a reply. [s]
    timing : bool
        Release replies at their modelled arrival time (False: as fast as possible).
    """

    def __init__(
        self,
        controllers: Iterable[ControllerModel],
        baudrate: int = 115200,
        parity: str = "N",
        stopbits: int = 1,
        faults: FaultProfile | None = None,
        seed: int = 0,
        turnaround_s: float = 0.0,
        timing: bool = True,
    ) -> None:
        self.controllers: dict[int, ControllerModel] = {}
        for c in controllers:
            if c.spec.address in self.controllers:
                raise ValueError(f"two controllers with address {c.spec.address} on one bus")
            self.controllers[c.spec.address] = c
        self.baudrate, self.parity, self.stopbits = baudrate, parity, stopbits
        self.faults = faults or FaultProfile()
        self.rng = np.random.default_rng(seed)
        self.turnaround_s = turnaround_s
        self.timing = timing
        self.stats = BusStats()
        self._framer = FramerRTU(DecodePDU(True))
        self._t35 = R.t35_s(baudrate, parity, stopbits)
        self._bus_free_at = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._master_fd = self._slave_fd = -1
        self.port = ""
        self._announced = False

    # ------------------------------------------------------------------ frames
    def _frame_time(self, n: int) -> float:
        return R.frame_time_s(n, self.baudrate, self.parity, self.stopbits)

    def _fault(self, frame: bytes) -> bytes | None:
        """Apply line faults to a frame; None when it is lost."""
        f, rng = self.faults, self.rng
        if f.drop_p and rng.random() < f.drop_p:
            self.stats.dropped += 1
            return None
        if f.corrupt_p and rng.random() < f.corrupt_p:
            self.stats.corrupted += 1
            b = bytearray(frame)
            bit = int(rng.integers(len(b) * 8))
            b[bit // 8] ^= 1 << (bit % 8)
            frame = bytes(b)
        if f.truncate_p and rng.random() < f.truncate_p:
            self.stats.truncated += 1
            frame = frame[: int(rng.integers(1, len(frame)))]
        return frame

    def handle_frame(self, raw: bytes) -> tuple[bytes | None, float]:
        """Process one request frame as the line delivers it.

        Returns the reply frame as it leaves the line (None: silence) and the extra delay
        of a late reply. [s]
        """
        self.stats.frames_in += 1
        frame = self._fault(raw)
        if frame is None:
            return None, 0.0
        used, dev_id, _, data = self._framer.decode(frame)
        if not used or not data:
            return None, 0.0  # CRC error or incomplete: a slave drops it silently
        pdu = self._framer.decoder.decode(data)
        if pdu is None:
            return None, 0.0
        pdu.dev_id = dev_id
        self.stats.by_kind[pdu.function_code] += 1
        if dev_id == 0:
            self.stats.broadcasts += 1
            if pdu.function_code in (5, 6, 15, 16):  # broadcast is for writes only
                for c in self.controllers.values():
                    c.handle(pdu, broadcast=True)
            return None, 0.0
        ctl = self.controllers.get(dev_id)
        if ctl is None:
            self.stats.ignored_foreign += 1
            return None, 0.0
        resp = ctl.handle(pdu)
        if self.faults.reset_p and self.rng.random() < self.faults.reset_p:
            self.stats.resets += 1
            ctl.reset(self.faults.boot_s)
            return None, 0.0
        if resp is None:
            return None, 0.0
        reply = self._fault(self._framer.buildFrame(resp))
        if reply is None:
            return None, 0.0
        late = 0.0
        if self.faults.late_p and self.rng.random() < self.faults.late_p:
            self.stats.late += 1
            late = self.faults.late_s
        self.stats.replies += 1
        return reply, late

    # ------------------------------------------------------------------ pty server
    def start(self, announce_port: bool = True) -> str:
        """Open the pty pair, start serving; returns the path the master should open."""
        self._master_fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)  # no echo, no line discipline before the master opens it
        tty.setraw(self._master_fd)
        self.port = os.ttyname(self._slave_fd)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"bus {self.port}", daemon=True)
        self._thread.start()
        if announce_port:
            announce([self.port])
            self._announced = True
        return self.port

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for fd in (self._master_fd, self._slave_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master_fd = self._slave_fd = -1
        if self._announced:
            withdraw([self.port])
            self._announced = False

    def __enter__(self) -> EmulatedBus:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_until(self, t: float) -> None:
        # Sleep only (a spinning thread loses its CPU on a busy host): replies land
        # within the scheduler's wake-up latency (~0.1 ms on an idle host) of their time.
        while True:
            dt = t - time.monotonic()
            if dt <= 0 or self._stop.is_set():
                return
            time.sleep(dt)

    def _serve(self) -> None:
        buf = b""
        t_last_rx = 0.0
        fd = self._master_fd
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([fd], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                time.sleep(0.01)
                continue
            t_rx = time.monotonic()
            if buf and t_rx - t_last_rx > max(self._t35, 3e-3):
                buf = b""  # silence ended the previous (incomplete) frame
            t_last_rx = t_rx
            buf += chunk
            while buf:
                used = self._frame_end(buf)
                if not used:
                    if len(buf) > 256:
                        buf = b""
                    break
                # Several frames can come in one read: the pty hands over what the
                # master wrote, not the line's silences (a master that waits t3.5 can
                # still be read in one chunk when this thread wakes late). Keep the rest
                # and serve it next; _exchange starts it when the line is free again, as
                # if the master had kept the silence after the first reply.
                frame, buf = buf[:used], buf[used:]
                if self._exchange(frame, t_rx):
                    if buf:  # sent while the late reply held the line: a collision
                        self.stats.collisions += 1
                        buf = b""
                    self._drain()

    def _frame_end(self, buf: bytes) -> int:
        """Length of the first frame in ``buf`` (leading noise included); 0 while it is
        incomplete; all of ``buf`` when the CRC fails (a slave drops what it got).

        pymodbus's ``FramerRTU.decode`` reports the whole buffer as used even when a
        second frame follows the first; this finds where the first one really ends, with
        the same rules (first offset whose function code is known, its frame size).
        """
        used, _, _, data = self._framer.decode(buf)
        if not used or not data:
            return used
        dec = self._framer.decoder
        for off in range(len(buf) - 1):
            pdu_class = dec.lookupPduClass(buf[off:])
            if pdu_class is not None:
                return min(off + pdu_class.calculateRtuFrameSize(buf[off:]), len(buf))
        return used  # pragma: no cover - decode found a frame, so the loop does too

    def _drain(self) -> None:
        """Drop what the master sent while a late reply held the line (collisions)."""
        while True:
            r, _, _ = select.select([self._master_fd], [], [], 0)
            if not r:
                return
            try:
                os.read(self._master_fd, 4096)
            except OSError:
                return
            self.stats.collisions += 1

    def _exchange(self, frame: bytes, t_rx: float) -> bool:
        """Serve one request with the line's timing; True when the reply was late."""
        # Without the timing model the line is as fast as the host: no line clock.
        start = max(t_rx, self._bus_free_at) if self.timing else t_rx
        req_end = start + self._frame_time(len(frame))
        with self._lock:
            reply, late = self.handle_frame(frame)
        if reply is None:
            self._bus_free_at = req_end + self._t35
            return False
        if self.timing:
            due = req_end + self._t35 + self.turnaround_s + self._frame_time(len(reply)) + late
            self._bus_free_at = due + self._t35
        else:
            due = t_rx + late
        if self.timing or late:
            self._wait_until(due)
        try:
            os.write(self._master_fd, reply)
        except OSError:
            pass
        return bool(late)

    def line_rate_limit(self, exchanges: list[tuple[int, int]]) -> float:
        """Exchanges per second the line allows for the given (request, reply) sizes."""
        total = sum(
            R.transaction_time_s(a, b, self.baudrate, self.parity, self.stopbits)
            for a, b in exchanges
        )
        return 1.0 / total
