"""The bridge's error tree.

::

    ActuatorError (IOError)
    ├── PortError            the serial port cannot be opened or used
    ├── ControllerTimeout    no valid reply within the timeout (after retries)
    │   └── GarbledReply     ... but frames came that failed the CRC check
    ├── ControllerRejected   the controller answered with a Modbus exception
    ├── ConfirmationFailed   replies came, but the status never echoed the command id
    └── SafetyRefused        refused before anything went on the wire

Every message names the controller (bus address) and what was expected vs received.
"""

from __future__ import annotations

from firmware_bridge.registers import EXCEPTION_NAMES, RejectCode


class ActuatorError(IOError):
    """Base of the bridge's errors."""


class PortError(ActuatorError):
    """The serial port cannot be opened or used."""


class ControllerTimeout(ActuatorError):
    """No valid reply from a controller within the timeout."""


class GarbledReply(ControllerTimeout):
    """No valid reply, but frames came that failed the CRC check: the line garbles them
    (noise, wrong baud rate or parity, missing termination or biasing)."""


class ControllerRejected(ActuatorError):
    """The controller answered with a Modbus exception response.

    Attributes
    ----------
    address : int
    exception_code : int
        Modbus exception code (2 illegal data address, 3 illegal data value, ...).
    reject_code : RejectCode or None
        The controller's reason register, when it could be read.
    """

    def __init__(
        self,
        address: int,
        exception_code: int,
        what: str = "",
        reject_code: RejectCode | None = None,
    ) -> None:
        self.address = address
        self.exception_code = exception_code
        self.reject_code = reject_code
        name = EXCEPTION_NAMES.get(exception_code, "unknown exception")
        reason = f", reason {reject_code.name}" if reject_code else ""
        super().__init__(
            f"controller {address} rejected {what or 'the request'}: Modbus exception "
            f"{exception_code} ({name}){reason}"
        )


class ConfirmationFailed(ActuatorError):
    """The controller answered but its status never showed the command id."""


class SafetyRefused(ActuatorError, ValueError):
    """A command refused by the bridge's safety checks; nothing was sent."""
