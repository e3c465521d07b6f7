"""Exception classes shared across the package and the CLI's view of them."""

from __future__ import annotations


class HeliostatError(Exception):
    """Base of the package's own errors."""


class InputError(HeliostatError, ValueError):
    """Bad input data (a file, a row, a value); the message names where."""


class CalibrationError(HeliostatError):
    """A fit that cannot be done or did not converge."""


def is_user_error(exc: BaseException) -> bool:
    """True for errors a user's input causes: shown as one line, exit code 2."""
    from heliostat.config import ConfigError
    from heliostat.kinematics import KinematicsError

    return isinstance(
        exc,
        (HeliostatError, ConfigError, KinematicsError, ValueError, OSError, KeyError),
    )
