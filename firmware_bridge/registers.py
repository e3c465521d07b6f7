"""The heliostat controller's Modbus register map (map version 1) and pure codecs.

Everything lives in holding registers (function codes 3, 6, 16; the status block is also
readable as input registers with function code 4). Addresses are the 0-based PDU
addresses that go on the wire; field tools that count from 1 (``4xxxx`` notation, or
``mbpoll -r``) add one. 32-bit values span two registers, high word first (big-endian
word order, ``mbpoll -B``). See ``docs/controller-registers.md`` for the full table.

The functions here are pure: they turn values into register lists and back and never
touch a port.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from pymodbus.framer.rtu import FramerRTU

from heliostat.kinematics.drives import drive, drive_for_code

#: Identity block (read-only).
MAGIC = 0x4843  # "HC": heliostat controller
MAP_VERSION = 1
REG_MAGIC = 0
REG_MAP_VERSION = 1
REG_FW_VERSION = 2  # major << 8 | minor
REG_FW_PATCH = 3
REG_DRIVE = 4  # the drive type's register code: drive_code(), drive_name()
REG_MAX_PARAMS = 5
REG_SERIAL = 6  # u32
IDENTITY_START, IDENTITY_COUNT = 0, 8

#: Status block (read-only, also readable as input registers).
REG_FLAGS = 16
REG_FAULTS = 17
REG_LAST_CMD_ID = 18  # u32
REG_AXIS1_POS = 20  # i32 [steps]
REG_AXIS2_POS = 22  # i32 [steps]
REG_AXIS1_TARGET = 24  # i32 [steps]
REG_AXIS2_TARGET = 26  # i32 [steps]
REG_WATCHDOG_LEFT = 28  # [0.1 s]; 0xFFFF = watchdog disabled
REG_REJECT_CODE = 29  # RejectCode of the last rejected command
REG_REJECTED_CMD_ID = 30  # u32
REG_PARAM_SET_ID = 32  # u32: command id that activated the parameter set
REG_BOOT_COUNT = 34
REG_PARAM_CRC = 35  # CRC-16/MODBUS of the active parameter block
STATUS_START, STATUS_COUNT = 16, 20

#: Configuration (read/write).
REG_WATCHDOG_TIMEOUT = 48  # [0.1 s]; 0 disables the watchdog
CONFIG_START, CONFIG_COUNT = 48, 1

#: Command block: one FC16 write starting at REG_CMD_ID, 4 or 8 registers.
REG_CMD_ID = 64  # u32, non-zero
REG_CMD_CODE = 66  # CommandCode
REG_CMD_ARG = 67  # APPLY_PARAMS: CRC-16 of the staged parameter block; else 0
REG_SETPOINT1 = 68  # i32 [steps]
REG_SETPOINT2 = 70  # i32 [steps]
COMMAND_START, COMMAND_COUNT, COMMAND_SHORT_COUNT = 64, 8, 4

#: Parameter sets: staging (read/write) and active (read-only), same layout.
MAX_PARAMS = 24
REG_PARAM_STAGING = 128  # [count, float32 × count (2 registers each)]
REG_PARAM_ACTIVE = 192
PARAM_BLOCK_COUNT = 1 + 2 * MAX_PARAMS

#: Highest register address of the map (for bounds checks).
MAP_END = REG_PARAM_ACTIVE + PARAM_BLOCK_COUNT


def drive_code(name: str) -> int:
    """Value of the ``DRIVE`` register for a drive type (declared by its module in
    :mod:`heliostat.kinematics.drives`: 1 az-el, 2 linear, ...).

    Raises
    ------
    ValueError
        For an unknown drive type, listing the known ones.
    """
    return drive(name).register_code


def drive_name(code: int) -> str | None:
    """The drive type a ``DRIVE`` register value stands for (None: unknown code)."""
    d = drive_for_code(code)
    return None if d is None else d.name


U32_MAX = 0xFFFF_FFFF
I32_MIN, I32_MAX = -(2**31), 2**31 - 1


class CommandCode(enum.IntEnum):
    """Value of the command-code register."""

    MOVE = 1  # go to the absolute setpoints
    STOW = 2  # go to the stow position
    APPLY_PARAMS = 3  # activate the staged parameter set (arg = its CRC-16)
    CLEAR_FAULTS = 4


class Flag(enum.IntFlag):
    """Bits of the status-flags register."""

    AXIS1_MOVING = 1 << 0
    AXIS2_MOVING = 1 << 1
    AXIS1_MIN_LIMIT = 1 << 2
    AXIS1_MAX_LIMIT = 1 << 3
    AXIS2_MIN_LIMIT = 1 << 4
    AXIS2_MAX_LIMIT = 1 << 5
    STOWED = 1 << 6
    STOWING = 1 << 7
    WATCHDOG_EXPIRED = 1 << 8
    PARAMS_VALID = 1 << 9
    FAULT = 1 << 10
    BOOTED = 1 << 11  # set after a reset until the next accepted command


class Fault(enum.IntFlag):
    """Bits of the fault register."""

    AXIS1_DRIVE = 1 << 0
    AXIS2_DRIVE = 1 << 1
    LIMIT_SWITCH = 1 << 2
    ENCODER = 1 << 3


class RejectCode(enum.IntEnum):
    """Why the controller rejected the last command (register REG_REJECT_CODE)."""

    NONE = 0
    SETPOINT_OUT_OF_LIMITS = 1
    UNKNOWN_COMMAND = 2
    PARAM_CRC_MISMATCH = 3
    PARAM_OUT_OF_RANGE = 4
    FAULT_ACTIVE = 5
    ZERO_COMMAND_ID = 6
    BAD_COMMAND_LENGTH = 7
    COMMAND_ID_REUSED = 8
    #: A code this map does not know (newer firmware?); ``Status.reject_code_raw`` keeps
    #: the value read. Outside the register range, so it never collides with a real code.
    UNKNOWN = -1


#: Modbus exception codes (the standard's names).
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


# --------------------------------------------------------------------------- codecs
def u32_to_regs(value: int) -> list[int]:
    """Unsigned 32-bit integer to two registers, high word first."""
    if not 0 <= value <= U32_MAX:
        raise ValueError(f"u32 value must be in [0, {U32_MAX}], got {value!r}")
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


def regs_to_u32(regs: Sequence[int]) -> int:
    """Two registers (high word first) to an unsigned 32-bit integer."""
    return (int(regs[0]) << 16) | int(regs[1])


def i32_to_regs(value: int) -> list[int]:
    """Signed 32-bit integer to two registers (two's complement, high word first)."""
    if not I32_MIN <= value <= I32_MAX:
        raise ValueError(f"i32 value must be in [{I32_MIN}, {I32_MAX}], got {value!r}")
    return u32_to_regs(value & U32_MAX)


def regs_to_i32(regs: Sequence[int]) -> int:
    """Two registers (high word first) to a signed 32-bit integer."""
    v = regs_to_u32(regs)
    return v - (1 << 32) if v & 0x8000_0000 else v


def f32_to_regs(value: float) -> list[int]:
    """IEEE-754 float32 to two registers, high word first."""
    if not math.isfinite(value):
        raise ValueError(f"parameter value must be finite, got {value!r}")
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def regs_to_f32(regs: Sequence[int]) -> float:
    """Two registers (high word first) to a float32 value (as a Python float)."""
    return struct.unpack(">f", struct.pack(">HH", int(regs[0]), int(regs[1])))[0]


def crc16_regs(regs: Sequence[int]) -> int:
    """CRC-16/MODBUS of registers sent big-endian, as one register value.

    Uses pymodbus's RTU CRC (the frame checksum), so the bridge and the controller agree
    on one implementation.
    """
    data = b"".join(struct.pack(">H", int(r) & 0xFFFF) for r in regs)
    return FramerRTU.compute_CRC(data)


def encode_command(
    command_id: int,
    code: CommandCode,
    setpoints_steps: tuple[int, int] | None = None,
    arg: int = 0,
) -> list[int]:
    """Registers of one command-block write (4 registers, or 8 with setpoints)."""
    if not 1 <= command_id <= U32_MAX:
        raise ValueError(f"command id must be in [1, {U32_MAX}], got {command_id!r}")
    regs = [*u32_to_regs(command_id), int(code), int(arg) & 0xFFFF]
    if setpoints_steps is not None:
        regs += i32_to_regs(int(setpoints_steps[0])) + i32_to_regs(int(setpoints_steps[1]))
    return regs


def encode_params(values: Sequence[float]) -> list[int]:
    """Registers of a parameter block: count, then one float32 per value."""
    if len(values) > MAX_PARAMS:
        raise ValueError(f"at most {MAX_PARAMS} parameters fit the map, got {len(values)}")
    regs = [len(values)]
    for v in values:
        regs += f32_to_regs(float(v))
    return regs


def decode_params(regs: Sequence[int]) -> tuple[float, ...]:
    """Values of a parameter block read back (count register first)."""
    n = int(regs[0])
    if n > MAX_PARAMS or len(regs) < 1 + 2 * n:
        raise ValueError(f"parameter block holds {n} values but {len(regs)} registers were read")
    return tuple(regs_to_f32(regs[1 + 2 * i : 3 + 2 * i]) for i in range(n))


@dataclass(frozen=True, slots=True)
class Status:
    """The controller's status block, decoded.

    Attributes
    ----------
    flags : Flag
    faults : Fault
    last_command_id : int
        Id of the last command the controller applied (0 = none since commissioning).
    position_steps, target_steps : tuple of 2 int
        Axis positions and the targets they move to. [steps]
    watchdog_left_s : float or None
        Time until the watchdog stows the heliostat; None when disabled. [s]
    reject_code : RejectCode
        ``RejectCode.UNKNOWN`` for a value this map does not define (still a rejection).
    rejected_command_id : int
    param_set_id : int
        Command id that activated the current parameter set (0 = none).
    boot_count : int
    param_crc : int
    reject_code_raw : int
        The reject-code register as read (the code behind ``RejectCode.UNKNOWN``).
    """

    flags: Flag
    faults: Fault
    last_command_id: int
    position_steps: tuple[int, int]
    target_steps: tuple[int, int]
    watchdog_left_s: float | None
    reject_code: RejectCode
    rejected_command_id: int
    param_set_id: int
    boot_count: int
    param_crc: int
    reject_code_raw: int = 0

    @property
    def reject_name(self) -> str:
        """The reject reason's name; an unknown code shows its raw value."""
        if self.reject_code is RejectCode.UNKNOWN:
            return f"UNKNOWN({self.reject_code_raw})"
        return self.reject_code.name

    @classmethod
    def from_registers(cls, regs: Sequence[int]) -> Status:
        """Decode the ``STATUS_COUNT`` registers read from ``STATUS_START``."""
        if len(regs) < STATUS_COUNT:
            raise ValueError(f"status block needs {STATUS_COUNT} registers, got {len(regs)}")

        def at(reg: int, n: int = 1) -> Sequence[int]:
            return regs[reg - STATUS_START : reg - STATUS_START + n]

        wd = int(at(REG_WATCHDOG_LEFT)[0])
        reject_raw = int(at(REG_REJECT_CODE)[0])
        try:
            reject = RejectCode(reject_raw)
        except ValueError:
            reject = RejectCode.UNKNOWN
        return cls(
            flags=Flag(int(at(REG_FLAGS)[0])),
            faults=Fault(int(at(REG_FAULTS)[0])),
            last_command_id=regs_to_u32(at(REG_LAST_CMD_ID, 2)),
            position_steps=(regs_to_i32(at(REG_AXIS1_POS, 2)), regs_to_i32(at(REG_AXIS2_POS, 2))),
            target_steps=(
                regs_to_i32(at(REG_AXIS1_TARGET, 2)),
                regs_to_i32(at(REG_AXIS2_TARGET, 2)),
            ),
            watchdog_left_s=None if wd == 0xFFFF else wd / 10.0,
            reject_code=reject,
            rejected_command_id=regs_to_u32(at(REG_REJECTED_CMD_ID, 2)),
            param_set_id=regs_to_u32(at(REG_PARAM_SET_ID, 2)),
            boot_count=int(at(REG_BOOT_COUNT)[0]),
            param_crc=int(at(REG_PARAM_CRC)[0]),
            reject_code_raw=reject_raw,
        )

    def to_dict(self) -> dict:
        """Plain data for JSON output (flag names listed)."""
        return {
            "flags": [f.name for f in Flag if f in self.flags],
            "faults": [f.name for f in Fault if f in self.faults],
            "last_command_id": self.last_command_id,
            "axis1_steps": self.position_steps[0],
            "axis2_steps": self.position_steps[1],
            "axis1_target_steps": self.target_steps[0],
            "axis2_target_steps": self.target_steps[1],
            "watchdog_left_s": self.watchdog_left_s,
            "reject_code": self.reject_name,
            "reject_code_raw": self.reject_code_raw,
            "rejected_command_id": self.rejected_command_id,
            "param_set_id": self.param_set_id,
            "boot_count": self.boot_count,
        }


# --------------------------------------------------------------------------- line timing
def char_bits(parity: str = "N", stopbits: int = 1, bytesize: int = 8) -> int:
    """Bits per character on the line: start + data + parity + stop."""
    return 1 + bytesize + (0 if parity == "N" else 1) + stopbits


def frame_time_s(n_bytes: int, baudrate: int, parity: str = "N", stopbits: int = 1) -> float:
    """Time to transmit a frame of ``n_bytes`` characters. [s]"""
    return n_bytes * char_bits(parity, stopbits) / baudrate


def t35_s(baudrate: int, parity: str = "N", stopbits: int = 1) -> float:
    """Modbus RTU inter-frame silence t3.5. [s]

    3.5 character times, fixed at 1.75 ms above 19200 baud as the Modbus serial-line
    specification recommends (Modbus over Serial Line V1.02, §2.5.1.1).
    """
    if baudrate > 19200:
        return 1.75e-3
    return 3.5 * char_bits(parity, stopbits) / baudrate


def transaction_time_s(
    request_bytes: int, response_bytes: int, baudrate: int, parity: str = "N", stopbits: int = 1
) -> float:
    """Line time of one request/response exchange including both t3.5 silences. [s]"""
    gap = t35_s(baudrate, parity, stopbits)
    return frame_time_s(request_bytes + response_bytes, baudrate, parity, stopbits) + 2.0 * gap


# RTU frame sizes (address + PDU + CRC) of the exchanges the bridge uses.
def fc16_request_bytes(n_regs: int) -> int:
    return 1 + 1 + 2 + 2 + 1 + 2 * n_regs + 2


FC16_RESPONSE_BYTES = 8
FC03_REQUEST_BYTES = 8


def fc03_response_bytes(n_regs: int) -> int:
    return 1 + 1 + 1 + 2 * n_regs + 2
