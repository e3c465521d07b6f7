"""Why a delivery did not end confirmed, in a few words, and what an operator does next.

:class:`~firmware_bridge.delivery.Outcome` keeps two texts: ``detail``, the full messages
of the transport and the controller, and ``reason``, a short summary of what the failed
attempts met (:func:`failure_label` per attempt, counted by
:func:`summarise_failures`): ``timeout ×3`` (silence), ``CRC errors ×2`` (replies garbled
on the line), ``exception 6 (server device busy) ×3`` (a Modbus exception, with the
standard's name), ``port error``, or a rejection with the controller's reason. The CLI
shows ``reason`` in its table and :func:`next_step` below it.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from firmware_bridge import registers as R
from firmware_bridge.errors import (
    ActuatorError,
    ControllerRejected,
    ControllerTimeout,
    GarbledReply,
    PortError,
)
from firmware_bridge.journal import DONE_STATES

if TYPE_CHECKING:
    from firmware_bridge.delivery import Outcome

#: Words of an outcome's short ``reason`` (the text table's column; ``detail`` keeps the
#: full messages): what each failed attempt met, counted, e.g. "timeout ×3" or
#: "CRC errors ×2, timeout".
REASON_TIMEOUT = "timeout"
REASON_CRC = "CRC errors"
REASON_PORT = "port error"
REASON_UNCONFIRMED = "not confirmed by read-back"


def failure_label(exc: ActuatorError) -> str:
    """One attempt's failure in a few words: ``timeout`` (silence), ``CRC errors``
    (replies garbled on the line), ``exception n (name)`` (a Modbus exception response),
    ``port error``."""
    if isinstance(exc, GarbledReply):
        return REASON_CRC
    if isinstance(exc, ControllerTimeout):
        return REASON_TIMEOUT
    if isinstance(exc, ControllerRejected):
        code = exc.exception_code
        return f"exception {code} ({R.EXCEPTION_NAMES.get(code, 'unknown exception')})"
    if isinstance(exc, PortError):
        return REASON_PORT
    return "error"


def summarise_failures(labels: Counter) -> str:
    """``Counter`` of :func:`failure_label` words as one short text, most frequent first:
    ``"timeout ×3"``, ``"CRC errors ×2, timeout"``."""
    return ", ".join(f"{k} ×{n}" if n > 1 else k for k, n in labels.most_common())


def next_step(outcome: Outcome) -> str:
    """What an operator does about an outcome, in one line ("" when it is done).

    ``unreachable`` and ``failed`` are not final: the same command, run again, resumes
    the batch and sends only them. ``rejected`` is final: a re-run does not re-send it.
    """
    o = outcome
    if o.state in DONE_STATES:
        return ""
    if o.state == "unreachable":
        if REASON_CRC in o.reason:
            return (
                "garbled replies: check baud rate and parity, termination and biasing; then re-run"
            )
        if REASON_PORT in o.reason:
            return "the serial port failed: check the adapter and its cable; then re-run"
        return "no reply: check power, address and wiring; then re-run"
    if o.state == "failed":
        if o.exception_code in (5, 6):
            return "controller busy: re-run later"
        if o.exception_code in (10, 11):
            return "the gateway cannot reach it: check the gateway's serial side; then re-run"
        return "replies but does not confirm: check 'bridge status'; then re-run"
    if o.state == "rejected":
        fix = next((v for k, v in _REJECT_FIXES.items() if k in o.reason), "fix the cause")
        return f"final (a re-run does not re-send it): {fix}, then send a new command"
    return "re-run"


#: What fixes a controller's reject reason (``RejectCode`` names), for :func:`next_step`.
_REJECT_FIXES = {
    R.RejectCode.FAULT_ACTIVE.name: "clear the controller's fault ('bridge status' shows it)",
    R.RejectCode.SETPOINT_OUT_OF_LIMITS.name: (
        "the controller's travel limits are narrower than field.toml's: align them"
    ),
    R.RejectCode.PARAM_OUT_OF_RANGE.name: (
        "the parameter set is outside the controller's bounds or size (drive type?)"
    ),
    R.RejectCode.COMMAND_ID_REUSED.name: (
        "the controller knows this command id with other content (another journal?)"
    ),
}
