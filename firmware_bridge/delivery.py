"""Delivery: send commands, confirm them by read-back, retry safely, journal everything.

Semantics that make retries harmless:

* only absolute setpoints and whole parameter sets go on the wire, never nudges;
* each command carries a command id; the controller echoes the last applied id in its
  status and ignores a repeat of an id it already applied (same content), so neither
  pymodbus (whose own retries are off anyway) nor the bridge's retries, nor a resume
  after a crash, can apply a command twice;
* a command counts as *confirmed* only when a status read shows its id (and, for a
  move, its setpoints as the axis targets; for a parameter set, the active block read
  back equal to what was sent).

Each command ends ``confirmed``, ``rejected`` (a Modbus exception 1–4 to the command's
write, or the controller's own reject reason in its status), ``unreachable`` (no valid
reply at all) or ``failed`` (replies, but no confirmation: this includes the transient
exceptions 5 "acknowledge", 6 "server device busy", 10 "gateway path unavailable" and 11
"gateway target failed to respond" when they persist, any other code but 1–4, and
exceptions to status / read-back reads, which say nothing about the command) — after at most
``RetryPolicy.max_attempts`` attempts, each bounded by the link's timeout, with
exponential back-off between them. Only ``confirmed``, ``rejected`` and ``superseded``
are final: a re-run of the batch sends the others again. On a resume, a command that a
later command of the batch for the same controller already overrides ends
``superseded`` instead of being re-sent (see :mod:`firmware_bridge.journal`).

A broadcast frame (address 0) reaches every controller on a bus, so the bridge sends one
only for a stow of every controller configured on that bus
(:func:`broadcast_stow_problem`, checked by :meth:`Bridge.run`): each of them is then
journaled, confirmed by read-back and reported.

A journal entry from an earlier run is never a confirmation of the controller's state
now. On a re-run, a command ``confirmed`` before is read back: when the controller still
holds its result (a move's targets, a stow, the active parameter block) the outcome is
``confirmed`` with ``replayed=True`` (nothing sent); when it does not (a controller
replaced or reset, a heliostat moved by someone else) the command is sent again under a
fresh command id; when the controller does not answer it ends ``unreachable``.
"""

from __future__ import annotations

import operator
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from firmware_bridge import registers as R
from firmware_bridge.errors import (
    ActuatorError,
    ConfirmationFailed,
    ControllerRejected,
    ControllerTimeout,
    PortError,
    SafetyRefused,
)
from firmware_bridge.journal import DONE_STATES, FINAL_STATES, Journal, JournalEntry, utc_now
from firmware_bridge.reasons import (
    REASON_UNCONFIRMED,
    failure_label,
    next_step,  # noqa: F401 - re-exported: the outcome's next step
    summarise_failures,
)
from firmware_bridge.transport import ModbusLink

KINDS = ("move", "stow", "params")
#: Modbus exceptions that mean "not now" (5 acknowledge: still processing a long request;
#: 6 server device busy; 10 gateway path unavailable and 11 gateway target failed to
#: respond: a TCP/RTU gateway could not reach the controller this time): retried with
#: back-off, never a final rejection.
TRANSIENT_EXCEPTIONS = frozenset({5, 6, 10, 11})
#: The only exceptions that reject a command (to its write): 1 illegal function, 2 illegal
#: data address, 3 illegal data value, 4 server device failure. Any other code (8, or
#: one this map does not know) is not a verdict on the command: retried, ends failed.
REJECTION_EXCEPTIONS = frozenset({1, 2, 3, 4})
#: Unicast controller addresses (0 is the broadcast; 248-255 are reserved by Modbus).
ADDRESS_MIN, ADDRESS_MAX = 1, 247


def check_address(address) -> int:
    """A unicast Modbus address 1..247 as an int; ValueError naming it otherwise."""
    try:
        a = operator.index(address)
    except TypeError:
        a = None
    if a is None or isinstance(address, bool) or not ADDRESS_MIN <= a <= ADDRESS_MAX:
        why = " (0 is the Modbus broadcast)" if a == 0 else ""
        raise ValueError(
            f"controller address must be an integer {ADDRESS_MIN}..{ADDRESS_MAX}{why}, "
            f"got {address!r}"
        )
    return a


def broadcast_stow_problem(
    commands: Sequence[ActuatorCommand],
    bus_members: Mapping[str, int] | None,
    bus_name: str = "",
) -> str | None:
    """Why a broadcast stow of ``commands`` must not be sent, or None when it may.

    A broadcast frame reaches every controller on the bus, so it is allowed only for
    stows, and only when the commands are the stows of every controller configured on the
    bus, each at its configured address: then all of them are journaled, confirmed by
    read-back and reported, and no controller moves unrecorded.

    Parameters
    ----------
    commands : sequence of ActuatorCommand
        The batch to broadcast.
    bus_members : mapping heliostat id -> address, or None
        Every controller configured on the bus (from the field config, e.g.
        ``{h.id: h.address for h in cfg.heliostats.values() if h.bus == name}``). None
        is refused: without it the selection cannot be checked.
    bus_name : str
        The bus's name, for the message.
    """
    if any(c.kind != "stow" for c in commands):
        return "broadcast is only allowed for stow"
    where = f"bus {bus_name!r}" if bus_name else "the bus"
    if bus_members is None:
        return (
            f"a broadcast stow reaches every controller on {where}: name them (bus_members, "
            "from the field config) so that the selection can be checked"
        )
    selected = list(dict.fromkeys(c.heliostat for c in commands))
    if set(selected) != set(bus_members):
        verb = "is" if len(selected) == 1 else "are"
        return (
            f"a broadcast stow reaches every controller on {where} "
            f"({', '.join(bus_members)}), but only {', '.join(selected) or 'none'} {verb} "
            "selected: stow without --broadcast (and not --address 0), or select the whole bus"
        )
    for c in commands:
        if c.address != bus_members[c.heliostat]:
            return (
                f"{c.heliostat}: address {c.address} is not its configured address "
                f"{bus_members[c.heliostat]} on {where}"
            )
    return None


def _group(kind: str) -> str:
    """What a command sets: the pose (move, stow) or the parameter set."""
    return "params" if kind == "params" else "pose"


@dataclass(frozen=True, slots=True)
class ActuatorCommand:
    """One command for one controller.

    Attributes
    ----------
    heliostat : str
    address : int
        Modbus address 1..247.
    kind : {"move", "stow", "params"}
    setpoints_steps : tuple of 2 int, optional
        Absolute axis setpoints of a move. [steps]
    params : tuple of float, optional
        Whole error-parameter set in canonical order (``error_names(drive)``), rad / m.
    """

    heliostat: str
    address: int
    kind: str
    setpoints_steps: tuple[int, int] | None = None
    params: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"command kind must be one of {KINDS}, got {self.kind!r}")
        check_address(self.address)
        if self.kind == "move" and self.setpoints_steps is None:
            raise ValueError("a move needs setpoints_steps")
        if self.kind == "params" and self.params is None:
            raise ValueError("a parameter upload needs params")

    def payload(self) -> dict:
        d: dict = {}
        if self.setpoints_steps is not None:
            d["setpoints_steps"] = list(self.setpoints_steps)
        if self.params is not None:
            d["params"] = list(self.params)
        return d

    @classmethod
    def from_entry(cls, e: JournalEntry) -> ActuatorCommand:
        sp = e.payload.get("setpoints_steps")
        pr = e.payload.get("params")
        return cls(
            e.heliostat,
            e.address,
            e.kind,
            tuple(int(v) for v in sp) if sp is not None else None,
            tuple(float(v) for v in pr) if pr is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one command ended."""

    heliostat: str
    address: int
    kind: str
    command_id: int
    state: str  # confirmed | rejected | superseded | unreachable | failed
    attempts: int
    exception_code: int | None = None
    detail: str = ""
    resumed: bool = False
    #: Confirmed in an earlier run and verified now by read-back (nothing sent now).
    replayed: bool = False
    #: Why it is not confirmed, in a few words (:func:`summarise_failures`;
    #: ``detail`` has the full messages).
    reason: str = ""
    #: Settled (rejected, superseded) in an earlier run and reported from the journal:
    #: nothing sent or read for it now.
    carried: bool = False

    def raise_for_state(self) -> Outcome:
        """Return self when done (confirmed, or superseded by a later confirmed command
        for the same controller); else raise the matching :class:`ActuatorError`."""
        if self.state in DONE_STATES:
            return self
        if self.state == "rejected":
            raise ControllerRejected(self.address, self.exception_code or 0, self.detail)
        if self.state == "unreachable":
            raise ControllerTimeout(self.detail or f"controller {self.address} unreachable")
        raise ConfirmationFailed(self.detail or f"controller {self.address}: not confirmed")

    def to_dict(self) -> dict:
        return {
            "heliostat": self.heliostat,
            "address": self.address,
            "kind": self.kind,
            "command_id": self.command_id,
            "state": self.state,
            "attempts": self.attempts,
            "exception_code": self.exception_code,
            "detail": self.detail,
            "resumed": self.resumed,
            "replayed": self.replayed,
            "reason": self.reason,
            "carried": self.carried,
        }


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential back-off.

    Attributes
    ----------
    max_attempts : int
        Attempts per command (each: optional status read, write(s), status read).
    backoff_s, backoff_factor, backoff_max_s : float
        Wait before attempt k (k ≥ 2): ``min(backoff_s · factor^(k−2), backoff_max_s)``.
    breaker_failures : int
        After this many consecutive unreachable commands a controller gets only one
        attempt per command for the rest of the run.
    """

    max_attempts: int = 5
    backoff_s: float = 0.02
    backoff_factor: float = 2.0
    backoff_max_s: float = 0.5
    breaker_failures: int = 2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be ≥ 1, got {self.max_attempts!r}")

    def wait_s(self, attempt: int) -> float:
        if attempt <= 1:
            return 0.0
        return min(self.backoff_s * self.backoff_factor ** (attempt - 2), self.backoff_max_s)


@dataclass
class ControllerHealth:
    """Per-controller health over a bridge's life."""

    address: int
    consecutive_failures: int = 0
    last_seen_utc: str | None = None
    last_outcome: str | None = None
    boot_count: int | None = None
    resets_seen: int = 0
    replies: int = 0
    timeouts: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Bridge:
    """Commands to the controllers of one bus.

    Parameters
    ----------
    link : ModbusLink
        An open link.
    journal : Journal, optional
        Where commands and outcomes are recorded (a throwaway in-memory one if None).
    retry : RetryPolicy
    sleep : callable
        Waits between attempts (injectable for tests).
    """

    link: ModbusLink
    journal: Journal | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    health: dict[int, ControllerHealth] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.journal is None:
            self.journal = Journal(":memory:")

    # ------------------------------------------------------------------ reads
    def _health(self, address: int) -> ControllerHealth:
        if address not in self.health:
            self.health[address] = ControllerHealth(address)
        return self.health[address]

    def _read(self, address: int, start: int, count: int) -> list[int]:
        h = self._health(address)
        try:
            regs = self.link.read_registers(address, start, count)
        except ControllerTimeout:
            h.timeouts += 1
            raise
        h.replies += 1
        h.last_seen_utc = utc_now()
        return regs

    def _write(self, address: int, start: int, values: Sequence[int]) -> None:
        h = self._health(address)
        try:
            self.link.write_registers(address, start, values)
        except ControllerTimeout:
            h.timeouts += 1
            raise
        except ControllerRejected:
            h.replies += 1
            h.last_seen_utc = utc_now()
            raise
        h.replies += 1
        h.last_seen_utc = utc_now()

    def status(self, address: int) -> R.Status:
        """Read and decode a controller's status block."""
        st = R.Status.from_registers(self._read(address, R.STATUS_START, R.STATUS_COUNT))
        h = self._health(address)
        if h.boot_count is not None and st.boot_count != h.boot_count:
            h.resets_seen += 1
        h.boot_count = st.boot_count
        return st

    def identity(self, address: int) -> dict:
        """Read the identity block; raises ActuatorError if it is not our controller."""
        regs = self._read(address, R.IDENTITY_START, R.IDENTITY_COUNT)
        if regs[R.REG_MAGIC] != R.MAGIC:
            raise ActuatorError(
                f"controller {address}: identity register 0 reads {regs[0]:#06x}, expected "
                f"{R.MAGIC:#06x} (not a heliostat controller, or another register map)"
            )
        drive = R.drive_name(regs[R.REG_DRIVE]) or "unknown"
        return {
            "address": address,
            "map_version": regs[R.REG_MAP_VERSION],
            "firmware": f"{regs[R.REG_FW_VERSION] >> 8}.{regs[R.REG_FW_VERSION] & 0xFF}."
            f"{regs[R.REG_FW_PATCH]}",
            "drive": drive,
            "n_params": regs[R.REG_MAX_PARAMS],
            "serial": R.regs_to_u32(regs[R.REG_SERIAL : R.REG_SERIAL + 2]),
        }

    def holds(self, cmd: ActuatorCommand, st: R.Status) -> bool:
        """Whether a controller, read back, holds a command's result, whatever command id
        put it there: a move's setpoints as the axis targets, a stow under way or done,
        or the parameter set as the active block (one more read)."""
        if cmd.kind == "move":
            return st.target_steps == tuple(cmd.setpoints_steps or ())
        if cmd.kind == "stow":
            return bool(st.flags & (R.Flag.STOWING | R.Flag.STOWED))
        sent = R.encode_params(cmd.params or ())
        return self._read(cmd.address, R.REG_PARAM_ACTIVE, len(sent)) == sent

    # ------------------------------------------------------------------ one command
    def _judge(self, cmd: ActuatorCommand, cid: int, st: R.Status) -> tuple[str, str, str] | None:
        """(state, detail, reason) when the status settles the command, else None."""
        if st.last_command_id == cid:
            if cmd.kind == "move" and st.target_steps != tuple(cmd.setpoints_steps or ()):
                return (
                    "failed",
                    f"controller {cmd.address} shows command {cid} but targets "
                    f"{st.target_steps}, expected {cmd.setpoints_steps}",
                    "read-back: other targets",
                )
            if cmd.kind == "params":
                if st.param_set_id != cid:
                    return (
                        "failed",
                        f"controller {cmd.address} shows command {cid} but parameter set "
                        f"{st.param_set_id}",
                        "read-back: other parameter set",
                    )
                sent = R.encode_params(cmd.params or ())
                back = self._read(cmd.address, R.REG_PARAM_ACTIVE, len(sent))
                if back != sent:
                    return (
                        "failed",
                        f"controller {cmd.address}: active parameter block read back differs "
                        "from the one sent",
                        "read-back: parameters differ",
                    )
            if cmd.kind == "stow" and not st.flags & (R.Flag.STOWING | R.Flag.STOWED):
                return (
                    "failed",
                    f"controller {cmd.address} shows command {cid} but is not stowing",
                    "read-back: not stowing",
                )
            return "confirmed", "", ""
        if st.rejected_command_id == cid and st.reject_code != R.RejectCode.NONE:
            return (
                "rejected",
                f"controller {cmd.address} rejected command {cid}: {st.reject_name}",
                f"rejected: {st.reject_name}",
            )
        return None

    def _send(self, cmd: ActuatorCommand, cid: int) -> None:
        if cmd.kind == "params":
            block = R.encode_params(cmd.params or ())
            self._write(cmd.address, R.REG_PARAM_STAGING, block)
            regs = R.encode_command(cid, R.CommandCode.APPLY_PARAMS, arg=R.crc16_regs(block))
        elif cmd.kind == "stow":
            regs = R.encode_command(cid, R.CommandCode.STOW)
        else:
            regs = R.encode_command(cid, R.CommandCode.MOVE, cmd.setpoints_steps)
        self._write(cmd.address, R.COMMAND_START, regs)

    def deliver(
        self,
        cmd: ActuatorCommand,
        cid: int,
        check_first: bool = False,
        on_sent: Callable[[int], None] | None = None,
        max_attempts: int | None = None,
        reissue: Callable[[], int] | None = None,
    ) -> Outcome:
        """Deliver one command with id ``cid`` until it is settled or attempts run out.

        ``check_first`` reads the status before the first write (a resumed command may
        already be applied). ``on_sent(attempt)`` is called before each write goes out.

        ``reissue`` (given for a command resumed from an earlier run) returns a fresh
        command id. With it the command is also settled by the controller's *state*: an
        earlier run may have applied it with its replies lost, after which another
        command moved ``LAST_CMD_ID`` on. After a write the controller acknowledged:

        * status shows the id → confirmed, as always;
        * it holds the result (:meth:`holds`) → confirmed;
        * neither → the controller took the write as a repeat of an id it applied once
          and ignored it (its result since overridden): the command is sent again under
          the id ``reissue()`` gives.
        """
        n_max = max_attempts or self.retry.max_attempts
        attempts, replied, last, last_code = 0, False, "", None
        met: Counter = Counter()  # what each failed attempt met (the outcome's reason)
        by_state = reissue is not None
        for attempt in range(1, n_max + 1):
            wait = self.retry.wait_s(attempt)
            if wait > 0:
                self.sleep(wait)
            attempts = attempt
            writing = False  # a Modbus exception is a rejection only of the command's write
            try:
                if check_first:
                    verdict = self._judge(cmd, cid, self.status(cmd.address))
                    replied = True
                    if verdict:
                        state, detail, reason = verdict
                        return self._finish(cmd, cid, state, attempts, None, detail, reason)
                check_first = True
                if on_sent is not None:
                    on_sent(attempt)
                writing = True
                self._send(cmd, cid)
                writing = False
                replied = True
                st = self.status(cmd.address)
                verdict = self._judge(cmd, cid, st)
                if verdict:
                    state, detail, reason = verdict
                    return self._finish(cmd, cid, state, attempts, None, detail, reason)
                last = f"controller {cmd.address}: status does not show command {cid}"
                last_code = None
                met[REASON_UNCONFIRMED] += 1
                if by_state and reissue is not None:
                    if self.holds(cmd, st):
                        return self._finish(
                            cmd,
                            cid,
                            "confirmed",
                            attempts,
                            None,
                            f"controller {cmd.address} holds the result (its last command is "
                            f"{st.last_command_id}, a later one)",
                        )
                    old, cid = cid, reissue()
                    by_state = False  # a fresh id is applied or rejected, never ignored
                    check_first = False
                    last = (
                        f"controller {cmd.address} ignored command {old} as a repeat and does "
                        f"not hold its result; sent again as command {cid}"
                    )
            except ControllerRejected as exc:
                replied = True
                if not writing or exc.exception_code not in REJECTION_EXCEPTIONS:
                    # Busy / acknowledge / gateway, or a read refused: the command itself
                    # was not rejected. Try again after the back-off; the next attempt starts with
                    # a status read, so a command the controller did apply is not re-sent.
                    last, last_code = str(exc), exc.exception_code
                    met[failure_label(exc)] += 1
                    continue
                why = ""
                try:
                    st = self.status(cmd.address)
                    if st.rejected_command_id == cid and st.reject_code != R.RejectCode.NONE:
                        why = st.reject_name
                except ActuatorError:
                    pass
                return self._finish(
                    cmd,
                    cid,
                    "rejected",
                    attempts,
                    exc.exception_code,
                    f"{exc}, reason {why}" if why else str(exc),
                    f"{failure_label(exc)}: {why}" if why else failure_label(exc),
                )
            except ControllerTimeout as exc:
                last, last_code = str(exc), None
                met[failure_label(exc)] += 1
            except PortError as exc:
                # A transient port fault: reopen and count the attempt as failed. If the
                # port cannot be reopened the batch stops here (the journal resumes it).
                last, last_code = str(exc), None
                met[failure_label(exc)] += 1
                self.link.reopen()
        state = "failed" if replied else "unreachable"
        return self._finish(cmd, cid, state, attempts, last_code, last, summarise_failures(met))

    def _finish(self, cmd, cid, state, attempts, exc_code, detail, reason="") -> Outcome:
        h = self._health(cmd.address)
        h.last_outcome = state
        if state in ("unreachable", "failed"):
            h.consecutive_failures += 1
        else:
            h.consecutive_failures = 0
        return Outcome(
            cmd.heliostat,
            cmd.address,
            cmd.kind,
            cid,
            state,
            attempts,
            exc_code,
            detail,
            reason=reason,
        )

    # ------------------------------------------------------------------ batches
    def run(
        self,
        batch_key: str,
        source: str,
        commands: Sequence[ActuatorCommand],
        broadcast_stow: bool = False,
        progress: Callable[[Outcome, int, int], None] | None = None,
        bus_members: Mapping[str, int] | None = None,
        bus_name: str = "",
    ) -> list[Outcome]:
        """Journal a batch (or find it again) and deliver every command not yet settled.

        With ``broadcast_stow``, one broadcast frame carries one shared command id; each
        controller is then confirmed by read-back and any that missed it gets the same
        command unicast. The batch must be the stows of every controller on the bus,
        ``bus_members`` (heliostat id -> address, from the field config; ``bus_name`` for
        messages): anything else raises :class:`SafetyRefused` with nothing sent
        (:func:`broadcast_stow_problem`).
        """
        if broadcast_stow:
            problem = broadcast_stow_problem(commands, bus_members, bus_name)
            if problem:
                raise SafetyRefused(f"{problem}; nothing sent")
        j = self.journal
        if j is None:  # pragma: no cover - set in __post_init__
            raise RuntimeError("bridge has no journal")
        resuming = j.has_batch(batch_key)
        if resuming:
            entries = j.entries(batch_key)
            if len(entries) != len(commands) or any(
                ActuatorCommand.from_entry(e) != c for e, c in zip(entries, commands, strict=True)
            ):
                raise ActuatorError(
                    f"journal {j.path} holds batch {batch_key[:12]} with other commands; "
                    "refusing to mix them"
                )
        else:
            group = 0 if broadcast_stow else None
            entries = j.create_batch(
                batch_key,
                source,
                [
                    (c.heliostat, self.link.port, c.address, c.kind, c.payload(), group)
                    for c in commands
                ],
            )
        if broadcast_stow:
            pending = [e for e in entries if e.state == "pending"]
            if pending:
                regs = R.encode_command(pending[0].command_id, R.CommandCode.STOW)
                for e in pending:
                    j.mark(e.row_id, "sent", 0)
                self.link.broadcast_write(R.COMMAND_START, regs)
                entries = j.entries(batch_key)
        # Delivery is sequential, so of the commands still ``pending`` only the first can
        # have been on the wire when a previous run died: it (and every command that
        # ended unreachable/failed before) starts with a status read-back.
        first_pending = next((e.seq for e in entries if e.state == "pending"), None)
        # A command not settled yet but followed, for the same controller and group, by
        # one already confirmed is superseded: re-sending it would leave a stale setpoint.
        superseded_by: dict[int, int] = {}
        latest_confirmed: dict[tuple[int, str], int] = {}
        for e in reversed(entries):
            key = (e.address, _group(e.kind))
            if e.state not in FINAL_STATES and key in latest_confirmed:
                superseded_by[e.row_id] = latest_confirmed[key]
            if e.state == "confirmed":
                latest_confirmed[key] = e.command_id
        # A command confirmed in an earlier run and followed, for the same controller and
        # group, by another confirmed one is overridden by it: only the latest confirmed
        # one of a group can be (and is) read back.
        overridden_by: dict[int, int] = {}
        latest: dict[tuple[int, str], int] = {}
        for e in reversed(entries):
            key = (e.address, _group(e.kind))
            if e.state == "confirmed":
                if key in latest:
                    overridden_by[e.row_id] = latest[key]
                else:
                    latest[key] = e.command_id
        outcomes = []
        for i, e in enumerate(entries):
            notes: list[str] = []  # why a command goes out under a new id
            if e.state == "confirmed" and resuming:
                e = self._replay(e, entries[i + 1 :], overridden_by.get(e.row_id))
                if isinstance(e, Outcome):
                    outcomes.append(e)
                    if progress is not None:
                        progress(e, i + 1, len(entries))
                    continue
                notes.append(e.detail)
            cmd = ActuatorCommand.from_entry(e)
            resumed = e.state != "pending" or (e.seq == first_pending and resuming)
            by = superseded_by.get(e.row_id)
            if by is None and resumed and e.state not in FINAL_STATES:
                by = self._applied_later(e, entries[i + 1 :])
            if by is not None:
                what = "parameter set" if e.kind == "params" else "move/stow"
                detail = (
                    f"superseded by command {by}, a later {what} for controller {e.address} "
                    "that is already applied; not re-sent"
                )
                reason = f"superseded by command {by}"
                j.mark(e.row_id, "superseded", e.attempts, None, detail, reason)
                out = Outcome(
                    e.heliostat,
                    e.address,
                    e.kind,
                    e.command_id,
                    "superseded",
                    e.attempts,
                    None,
                    detail,
                    resumed=True,
                    reason=reason,
                )
            elif e.state in FINAL_STATES:
                out = Outcome(
                    e.heliostat,
                    e.address,
                    e.kind,
                    e.command_id,
                    e.state,
                    e.attempts,
                    e.exception_code,
                    e.detail,
                    resumed=True,
                    reason=e.reason,
                    carried=True,
                )
            else:
                h = self._health(e.address)
                limit = 1 if h.consecutive_failures >= self.retry.breaker_failures else None
                prior = e.attempts
                reissue = None
                if resumed:

                    def reissue(row_id=e.row_id, old=e.command_id, notes=notes) -> int:
                        why = f"command {old} was ignored as a repeat; sent under a new id"
                        notes.append(why)
                        return j.reissue(row_id, why).command_id

                out = self.deliver(
                    cmd, e.command_id, check_first=resumed, max_attempts=limit, reissue=reissue
                )
                out = Outcome(
                    **{
                        **out.to_dict(),
                        "attempts": prior + out.attempts,
                        "resumed": resumed,
                        "detail": "; ".join(x for x in (*notes, out.detail) if x),
                    }
                )
                j.mark(
                    e.row_id, out.state, out.attempts, out.exception_code, out.detail, out.reason
                )
            outcomes.append(out)
            if progress is not None:
                progress(out, i + 1, len(entries))
        return outcomes

    def _replay(
        self, e: JournalEntry, later: Sequence[JournalEntry], overridden_by: int | None
    ) -> Outcome | JournalEntry:
        """A command ``confirmed`` in an earlier run: its outcome now, or the journal
        entry reissued under a fresh command id when it must be sent again.

        Overridden by a later confirmed command of the batch → ``superseded`` (that one
        is read back in its turn). Otherwise the controller is read back: holding the
        result → ``confirmed``, ``replayed``; not answering → ``unreachable`` (the
        journal keeps ``confirmed``; the next run reads back again); not holding it →
        superseded if a later unsettled command of the batch is what it holds, else
        reissued.
        """
        j = self.journal
        if j is None:  # pragma: no cover - set in __post_init__
            raise RuntimeError("bridge has no journal")
        cmd = ActuatorCommand.from_entry(e)

        def outcome(state: str, detail: str, replayed: bool = False, reason: str = "") -> Outcome:
            return Outcome(
                e.heliostat,
                e.address,
                e.kind,
                e.command_id,
                state,
                e.attempts,
                None,
                detail,
                resumed=True,
                replayed=replayed,
                reason=reason,
            )

        if overridden_by is not None:
            return outcome(
                "superseded",
                f"confirmed in an earlier run, since overridden by command {overridden_by} "
                f"of this batch for controller {e.address} (read back in its turn)",
                reason=f"overridden by command {overridden_by}",
            )
        st, held, failure = None, False, ""
        met: Counter = Counter()
        for attempt in range(1, self.retry.max_attempts + 1):  # a read-back, retried
            wait = self.retry.wait_s(attempt)
            if wait > 0:
                self.sleep(wait)
            try:
                st = self.status(e.address)
                held = self.holds(cmd, st)
                break
            except ActuatorError as exc:
                st, failure = None, str(exc)
                met[failure_label(exc)] += 1
        if st is None:
            return outcome(
                "unreachable",
                f"confirmed in an earlier run, not verified now (read-back failed: {failure})",
                reason=f"not verified: {summarise_failures(met)}",
            )
        if held:
            return outcome(
                "confirmed", "confirmed in an earlier run; verified now by read-back", True
            )
        by = self._applied_later(e, later)
        if by is not None:
            return outcome(
                "superseded",
                f"confirmed in an earlier run; the controller now holds command {by}, a later "
                "command of this batch",
                reason=f"superseded by command {by}",
            )
        what = {
            "move": f"targets {st.target_steps}, not {cmd.setpoints_steps}",
            "stow": "is not stowing or stowed",
            "params": f"active parameter set {st.param_set_id} differs from the one sent",
        }[e.kind]
        return j.reissue(
            e.row_id,
            f"command {e.command_id}, confirmed in an earlier run, is not held now "
            f"(controller {e.address} {what}): sent again under a new command id",
        )

    def _applied_later(self, e: JournalEntry, later: Sequence[JournalEntry]) -> int | None:
        """Id of a later, unsettled command of the batch for the same controller and group
        that the controller's status shows applied (so ``e`` must not be re-sent), else
        None. One status read; a controller that does not answer gives None (``deliver``
        then decides as before)."""
        group = _group(e.kind)
        cids = {
            x.command_id
            for x in later
            if x.address == e.address and _group(x.kind) == group and x.state not in FINAL_STATES
        }
        if not cids:
            return None
        try:
            st = self.status(e.address)
            shown = st.param_set_id if group == "params" else st.last_command_id
            if shown in cids:
                return shown
            # Applied with its replies lost, then LAST_CMD_ID moved on (another batch's
            # command): the controller's state still shows which one it holds.
            for x in reversed(later):
                if x.command_id in cids and self.holds(ActuatorCommand.from_entry(x), st):
                    return x.command_id
        except ActuatorError:
            return None
        return None
