"""Modbus RTU over any pyserial port or URL, through pymodbus's sync serial client.

:class:`ModbusLink` is the only place that touches the wire. It turns pymodbus's
outcomes into the bridge's error tree and does *no* retries of its own: pymodbus's
automatic retries are switched off (``retries=0``) so that every retry is a decision of
:mod:`firmware_bridge.delivery`, journaled and made with the command id that makes a
repeated write harmless.

Two changes to the stock client, both in :class:`_RtuClient`:

* receive is event-driven (block for the first byte, then take what is waiting) rather
  than pymodbus's poll-and-sleep loop, which costs about 1.5 ms per reply;
* the master keeps the Modbus RTU inter-frame silence (t3.5) before each request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import serial
from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import DecodePDU

from firmware_bridge.errors import ControllerRejected, ControllerTimeout, GarbledReply, PortError
from firmware_bridge.registers import t35_s

# pymodbus logs every timeout at ERROR through its own logger; the bridge reports
# outcomes itself, so keep pymodbus quiet unless someone configures its logger.
logging.getLogger("pymodbus").addHandler(logging.NullHandler())
logging.getLogger("pymodbus").propagate = False


class _CountingFramer(FramerRTU):
    """pymodbus's RTU framer, counting the frames it drops for a CRC mismatch.

    ``FramerRTU.decode`` drops a frame whose CRC does not match by returning its length
    as used with no data, and pymodbus then reports only "no response"; the count lets
    the link tell a garbled line (noise, wrong baud rate or parity, missing termination)
    from silence.
    """

    def __init__(self) -> None:
        super().__init__(DecodePDU(False))
        self.crc_errors = 0

    def decode(self, data: bytes) -> tuple[int, int, int, bytes]:
        used, dev_id, tid, frame = super().decode(data)
        if used and not frame:
            self.crc_errors += 1
        return used, dev_id, tid, frame


class _RtuClient(ModbusSerialClient):
    """pymodbus's sync serial client with event-driven receive, t3.5 pacing and a count
    of replies dropped for a bad CRC."""

    def __init__(self, port: str, *, inter_frame_s: float, **kwargs) -> None:
        super().__init__(port, retries=0, **kwargs)
        self.framer = self.transaction.framer = _CountingFramer()
        self._inter_frame_s = inter_frame_s
        self._last_io = 0.0

    def send(self, request: bytes, addr: tuple | None = None) -> int:
        wait = self._last_io + self._inter_frame_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # no spinning: on a busy host a spinning thread loses its CPU
        n = super().send(request, addr)
        self._last_io = time.monotonic()
        return n

    def _read(self, size: int) -> bytes:
        """pyserial read, riding out a spurious wake-up.

        On a loaded Linux host a pty can report readable and then return no bytes (the
        kernel moves pty data to the line discipline asynchronously); pyserial reports
        that as a disconnect. Up to the port timeout, wait again instead; a device that
        really went away keeps failing and surfaces as a PortError.
        """
        deadline = time.monotonic() + self.comm_params.timeout_connect
        while True:
            try:
                return self.socket.read(size)
            except serial.SerialException as exc:
                if "returned no data" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(1e-4)

    def recv(self, size: int | None) -> bytes:
        if not self.socket:
            raise ConnectionException(str(self))
        try:
            if size is not None:
                data = self._read(size)
            else:
                data = self._read(1)  # blocks up to the port timeout
                if data:
                    waiting = self.socket.in_waiting
                    if waiting:
                        data += self._read(waiting)
        except OSError as exc:
            self.close()
            raise ConnectionException(f"{self}: {exc}") from None
        if data:
            self._last_io = time.monotonic()
        return data


@dataclass
class LinkCounters:
    """Traffic counters of one link."""

    requests: int = 0
    timeouts: int = 0
    crc_errors: int = 0
    exceptions: int = 0
    bad_replies: int = 0
    by_function: dict[int, int] = field(default_factory=dict)


class ModbusLink:
    """A Modbus RTU master on one serial line (one RS-485 bus).

    Parameters
    ----------
    port : str
        Device path or pyserial URL (``/dev/ttyUSB0``, ``socket://host:port``,
        ``rfc2217://host:port``, a pty path).
    baudrate : int
    parity : {"N", "E", "O"}
    stopbits : int
    timeout_s : float
        Reply timeout per request. [s]
    inter_frame_s : float, optional
        Silence kept before each request. [s] Default: the Modbus t3.5 for the line
        (1.75 ms above 19200 baud). Only an emulator that models the line itself may
        take 0.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = 115200,
        parity: str = "N",
        stopbits: int = 1,
        timeout_s: float = 0.2,
        inter_frame_s: float | None = None,
    ) -> None:
        if not port:
            raise PortError("no serial port given (expected a device path or pyserial URL)")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self.timeout_s = timeout_s
        self.counters = LinkCounters()
        self._client = _RtuClient(
            port,
            inter_frame_s=(
                t35_s(baudrate, parity, stopbits) if inter_frame_s is None else inter_frame_s
            ),
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            timeout=timeout_s,
        )

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> ModbusLink:
        if not self._client.connect():
            reason = "unknown reason"
            try:  # pymodbus logs the cause and returns False; ask pyserial for it
                serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0).close()
            except Exception as exc:  # noqa: BLE001 - any pyserial failure is the reason
                reason = str(exc)
            raise PortError(f"cannot open serial port {self.port!r}: {reason}")
        return self

    def close(self) -> None:
        self._client.close()

    def reopen(self) -> None:
        """Close and open the port again (after a transient port error)."""
        self._client.close()
        self.open()

    def __enter__(self) -> ModbusLink:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def _call(self, what: str, address: int, fn, *args, **kwargs):
        self.counters.requests += 1
        framer = self._client.framer
        crc_before = framer.crc_errors
        try:
            rr = fn(*args, device_id=address, **kwargs)
        except ConnectionException as exc:
            raise PortError(f"serial port {self.port!r} failed: {exc}") from None
        except ModbusException:
            self.counters.timeouts += 1
            garbled = framer.crc_errors - crc_before
            if garbled:
                self.counters.crc_errors += garbled
                raise GarbledReply(
                    f"controller {address} on {self.port}: no valid reply to {what} within "
                    f"{self.timeout_s:g} s, {garbled} frame(s) with a CRC error (noise, wrong "
                    "baud rate or parity, termination or biasing)"
                ) from None
            raise ControllerTimeout(
                f"controller {address} on {self.port}: no reply to {what} "
                f"within {self.timeout_s:g} s"
            ) from None
        if rr is None:
            return None
        if rr.isError():
            self.counters.exceptions += 1
            raise ControllerRejected(address, int(rr.exception_code), what)
        return rr

    def read_registers(self, address: int, start: int, count: int, input_regs: bool = False):
        """Read ``count`` holding (or input) registers from ``start``. Returns a list."""
        fn = (
            self._client.read_input_registers if input_regs else self._client.read_holding_registers
        )
        what = f"read of {count} registers at {start}"
        rr = self._call(what, address, fn, start, count=count)
        regs = list(rr.registers)
        if len(regs) != count:
            self.counters.bad_replies += 1
            raise ControllerTimeout(f"controller {address}: {what} returned {len(regs)} registers")
        return regs

    def write_registers(self, address: int, start: int, values: Sequence[int]) -> None:
        """Write registers with function code 16 and check the echoed range."""
        what = f"write of {len(values)} registers at {start}"
        rr = self._call(what, address, self._client.write_registers, start, list(values))
        if rr.address != start or rr.count != len(values):
            self.counters.bad_replies += 1
            raise ControllerTimeout(
                f"controller {address}: {what} echoed address {rr.address} count {rr.count}"
            )

    def broadcast_write(self, start: int, values: Sequence[int]) -> None:
        """Write registers to address 0 (every controller on the bus; no reply)."""
        self._call(
            f"broadcast write at {start}",
            0,
            self._client.write_registers,
            start,
            list(values),
            no_response_expected=True,
        )
        # Controllers need the frame plus a silence to act on a broadcast.
        time.sleep(2 * t35_s(self.baudrate, self.parity, self.stopbits))
