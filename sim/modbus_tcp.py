"""Modbus servers on TCP in front of an emulated RS-485 bus (used by :mod:`sim.serve`).

* :class:`RtuTcpServer`: Modbus RTU frames over a TCP stream, what a serial device
  server gives and pyserial's ``socket://`` URL opens (our bridge, any RTU master);
* :class:`ModbusTcpServer`: plain Modbus TCP (MBAP header; ``mbpoll -m tcp``, SCADA
  systems), a gateway in front of the emulated line: the line's faults apply, and a
  request or reply it loses comes back as exception 0x0B;
* :class:`TcpServer`: the threaded listener both build on (one thread per connection).

Every request is handled under the lock the caller passes (the plant's one lock).
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from sim.controllers import EmulatedBus

#: Modbus exception code a gateway returns when the device behind it did not answer.
GATEWAY_NO_RESPONSE = 0x0B

#: How long a partial RTU frame may wait for its rest on a TCP stream. [s]
RTU_TCP_SILENCE_S = 0.05


def parse_host_port(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6; PORT 0 = any free port) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{option}: expected HOST:PORT (e.g. 127.0.0.1:5020), got {text!r}")
    return host, int(port)


class TcpServer:
    """A threaded TCP listener; one thread per connection runs ``_serve_conn``."""

    kind = ""

    def __init__(self, host: str, port: int, lock: threading.RLock) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._srv = socket.socket(family, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._srv.bind((host, port))
        except OSError as exc:
            self._srv.close()
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._srv.listen(8)
        self._srv.settimeout(0.1)
        self.host, self.port = host, self._srv.getsockname()[1]
        self.lock = lock
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(
            target=self._accept, name=f"{self.kind} accept", daemon=True
        )

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.1)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.add(conn)
            t = threading.Thread(target=self._run_conn, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _run_conn(self, conn: socket.socket) -> None:
        try:
            self._serve_conn(conn)
        except OSError:
            pass
        finally:
            self._conns.discard(conn)
            conn.close()

    def _serve_conn(self, conn: socket.socket) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._srv.close()
        for c in list(self._conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=2.0)


class RtuTcpServer(TcpServer):
    """Modbus RTU frames over a TCP stream to an emulated bus (a serial device server).

    Frames are split as a slave on the line would (:meth:`EmulatedBus._frame_end`); a
    partial frame followed by :data:`RTU_TCP_SILENCE_S` of silence is dropped. Faults of
    the bus apply; a late reply is sent ``late_s`` late.
    """

    kind = "rtu-tcp"

    def __init__(self, bus: EmulatedBus, host: str, port: int, lock) -> None:
        super().__init__(host, port, lock)
        self.bus = bus

    def _serve_conn(self, conn: socket.socket) -> None:
        buf = b""
        t_last = time.monotonic()
        while not self._stop.is_set():
            try:
                chunk = conn.recv(4096)
            except TimeoutError:
                if buf and time.monotonic() - t_last > RTU_TCP_SILENCE_S:
                    buf = b""
                continue
            if not chunk:
                return
            t_last = time.monotonic()
            buf += chunk
            while buf:
                with self.lock:
                    used = self.bus._frame_end(buf)
                if not used:
                    if len(buf) > 256:
                        buf = b""
                    break
                frame, buf = buf[:used], buf[used:]
                with self.lock:
                    reply, late = self.bus.handle_frame(frame)
                if reply is None:
                    continue
                if late:
                    time.sleep(late)
                conn.sendall(reply)


class ModbusTcpServer(TcpServer):
    """Plain Modbus TCP (MBAP header) in front of an emulated bus: a gateway.

    Each request is put on the emulated line as an RTU frame (the bus's faults apply)
    and the controller's reply returned with the request's transaction id; when the line
    gives no valid reply the gateway answers exception 0x0B.
    """

    kind = "modbus-tcp"

    def __init__(self, bus: EmulatedBus, host: str, port: int, lock) -> None:
        from pymodbus.framer.rtu import FramerRTU
        from pymodbus.pdu import DecodePDU

        super().__init__(host, port, lock)
        self.bus = bus
        self._rtu_out = FramerRTU(DecodePDU(False))  # builds request frames
        self._rtu_in = FramerRTU(DecodePDU(False))  # reads reply frames

    @staticmethod
    def _recv_exact(conn: socket.socket, n: int, stop: threading.Event) -> bytes | None:
        out = b""
        while len(out) < n:
            if stop.is_set():
                return None
            try:
                chunk = conn.recv(n - len(out))
            except TimeoutError:
                continue
            if not chunk:
                return None
            out += chunk
        return out

    def _serve_conn(self, conn: socket.socket) -> None:
        from pymodbus.framer.rtu import FramerRTU

        while not self._stop.is_set():
            head = self._recv_exact(conn, 7, self._stop)
            if head is None:
                return
            tid, proto, length, unit = struct.unpack(">HHHB", head)
            if proto != 0 or not 2 <= length <= 254:
                return  # not Modbus: drop the connection as a gateway would
            pdu = self._recv_exact(conn, length - 1, self._stop)
            if pdu is None:
                return
            body = bytes([unit]) + pdu
            rtu = body + FramerRTU.compute_CRC(body).to_bytes(2, "big")
            with self.lock:
                reply, late = self.bus.handle_frame(rtu)
            data = None
            if reply is not None:
                used, dev_id, _, data = self._rtu_in.decode(reply)
                if not used or dev_id != unit:
                    data = None
            if late:
                time.sleep(late)
            if not data:
                data = bytes([(pdu[0] | 0x80) & 0xFF, GATEWAY_NO_RESPONSE])
            conn.sendall(struct.pack(">HHHB", tid, 0, len(data) + 1, unit) + data)
